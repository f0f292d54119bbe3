"""Faults mixed on one ``asgi-ws-gateway run``: healthy clients lose nothing while others misbehave.

The attack tests take one fault at a time. Here bad tokens, oversize messages, malformed frames, ping
floods, clients that vanish mid-message or mid-head, an upstream that dies under some connections and a
management kick all happen while healthy clients echo numbered text, binary, large and fragmented
messages, on an API with handshake and message policies (the frame relay) and on one without message
policies (the splice), with Redis as the store. Every count is fixed; nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.management import ManagementClient
from support.clients import connect, expect_close
from support.configs import api_entry, write_config
from support.jwts import JwksServer, signing_key, token
from support.management import TOKEN
from support.processes import cli_env, ready_server
from support.redis import redis_available, unique_prefix
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")

KEY = signing_key("RS256")
HEALTHY = 6
MESSAGES = 24


def _config(stable: UpstreamServer, fragile: UpstreamServer, jwks: str, prefix: str) -> dict[str, Any]:
    jwt = {"jwks_url": jwks, "algorithms": ["RS256"], "issuer": "https://issuer.test", "audience": "chat"}
    policies = [
        {"validate-jwt": jwt},
        {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 1000, "window": 60}},
        {"limit-concurrency": {"key": "{jwt.sub}", "max": 4, "lease_ttl": 60}},
    ]
    inbound = [
        {"limit-message-size": {"max": 262144}},
        {"rate-limit-messages": {"messages": 1000, "window": 1}},
        {"validate-message": {"schema": {"type": "object", "required": ["n"]}, "binary": "pass"}},
    ]
    messages = {"inbound": inbound}
    apis = [
        api_entry(stable, name="framed", path="/ws/framed", policies=policies, message_policies=messages),
        api_entry(stable, name="splice", path="/ws/splice", policies=policies),
        api_entry(fragile, name="fragile", path="/ws/fragile", policies=policies, message_policies=messages),
    ]
    for api in apis:
        api["max_message_size"] = 1048576
    return {"apis": apis, "store": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": prefix}}


def _message(seq: int) -> str | bytes:
    kind = seq % 4
    if kind == 0:
        return json.dumps({"n": seq})
    if kind == 1:
        return json.dumps({"n": seq, "pad": "y" * 70_000})
    return bytes([seq % 256]) * 100 + os.urandom(70_000 if kind == 2 else 50_000)


async def _healthy(url: str, sub: str) -> tuple[int, int]:
    """Echo MESSAGES numbered messages (every fourth fragmented); (echoes intact and in order, close code)."""
    intact = 0
    async with await connect(url, additional_headers={"Authorization": f"Bearer {token(KEY, sub=sub)}"}) as ws:
        for seq in range(MESSAGES):
            message = _message(seq)
            if seq % 4 == 3:
                assert isinstance(message, bytes)
                await ws.send([message[i : i + 9000] for i in range(0, len(message), 9000)])
            else:
                await ws.send(message)
            intact += await ws.recv() == message
        await ws.close()
    assert ws.close_code is not None
    return intact, ws.close_code


def _head(port: int, path: str, bearer: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {bearer}\r\n\r\n").encode()  # fmt: skip


def _frame(opcode: int, payload: bytes, *, mask: bool = True, first: int = 0x80) -> bytes:
    size = len(payload)
    length = bytes([size]) if size < 126 else (bytes([126]) + struct.pack(">H", size) if size < 65536
                                                else bytes([127]) + struct.pack(">Q", size))  # fmt: skip
    if not mask:
        return bytes([first | opcode, length[0]]) + length[1:] + payload
    return bytes([first | opcode, 0x80 | length[0]]) + length[1:] + b"\0\0\0\0" + payload  # a zero mask


async def _raw(port: int, path: str, bearer: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head(port, path, bearer))
    answer = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, int(answer.split()[1])


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    """The code of the first close frame read (None: the connection ended without one)."""
    try:
        while True:
            head = await reader.readexactly(2)
            size = head[1] & 0x7F
            if size >= 126:
                size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8))
            payload = await reader.readexactly(size)
            if head[0] & 0x0F == 8:
                return int.from_bytes(payload[:2])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _refused(port: int, path: str, bearer: str) -> int:
    _, writer, status = await _raw(port, path, bearer)
    writer.close()
    return status


async def _broken(port: int, path: str, data: bytes) -> int | None:
    """Send ``data`` on an accepted connection; the close code it gets."""
    reader, writer, status = await _raw(port, path, token(KEY, sub=os.urandom(4).hex()))
    assert status == 101
    writer.write(data)
    code = await _close_code(reader)
    writer.close()
    return code


async def _vanished(port: int, path: str, head_only: bool) -> None:
    """A client reset mid-message (or mid-head: no handshake at all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = _head(port, path, token(KEY, sub=os.urandom(4).hex()))
    if head_only:
        writer.write(head[:40])
    else:
        writer.write(head)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_frame(2, os.urandom(100_000))[:30_000])
    await writer.drain()
    _reset(writer)


async def _hostile(port: int) -> dict[str, list[int | None]]:
    paths = ("/ws/framed", "/ws/splice")
    bad = [token(KEY, sub="x", ttl=-100), token(KEY, sub="x", aud="other"), "not-a-jwt"]
    pings = b"".join(_frame(9, os.urandom(125)) for _ in range(500)) + _frame(8, struct.pack(">H", 1000))
    oversize = _frame(1, json.dumps({"n": 1, "pad": "q" * 1_100_000}).encode())
    malformed = [_frame(1, b'{"n": 1}', mask=False), _frame(3, b"x"), _frame(9, b"p" * 200), _frame(0, b"x"),
                 _frame(1, b'{"n":', first=0) + _frame(1, b"1}")]  # fmt: skip
    runs: dict[str, Any] = {
        "bad_token": asyncio.gather(*(_refused(port, p, b) for p in paths for b in bad)),
        "oversize": asyncio.gather(*(_broken(port, p, oversize) for p in paths)),
        "malformed": asyncio.gather(*(_broken(port, p, m) for p in paths for m in malformed)),
        "ping_flood": asyncio.gather(*(_broken(port, p, pings) for p in paths)),
        "vanished": asyncio.gather(*(_vanished(port, p, head) for p in paths for head in (False, True))),
    }
    return dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))


async def _kick(management: ManagementClient, victim: ClientConnection) -> tuple[int, str]:
    (listed,) = [c for c in await management.list_connections("framed") if c["subject"] == "victim"]
    await management.kick(listed["id"], 4321, "kicked")
    return await expect_close(victim)


async def test_faults_mixed_with_healthy_clients_lose_them_nothing(tmp_path: Path) -> None:
    """Healthy echoes arrive whole and in order, each fault gets its own code, and nothing is left over."""
    prefix = unique_prefix()
    with JwksServer(KEY) as jwks, UpstreamServer() as stable, UpstreamServer() as fragile:
        path = write_config(tmp_path, _config(stable, fragile, jwks.url, prefix))

        def command(port: int) -> list[str]:
            return ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port), "--management", "/_gateway",
                    "--log-level", "info"]  # fmt: skip

        def auth(sub: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token(KEY, sub=sub)}"}

        with ready_server(command, env=cli_env()) as server:
            base = f"ws://127.0.0.1:{server.port}"
            admin = ManagementClient(f"http://127.0.0.1:{server.port}/_gateway", token=TOKEN)
            async with Redis() as redis, admin as management:
                cut = [await connect(f"{base}/ws/fragile", additional_headers=auth(f"cut{i}")) for i in range(3)]
                victim = await connect(f"{base}/ws/framed", additional_headers=auth("victim"))
                for ws in (*cut, victim):  # each is relayed end to end before the faults
                    await ws.send('{"n": 0}')
                    assert await ws.recv() == '{"n": 0}'
                held = [key async for key in redis.scan_iter(f"{prefix}:conc:*")]
                healthy = asyncio.gather(*(_healthy(f"{base}/ws/{('framed', 'splice')[i % 2]}", f"user{i}")
                                           for i in range(HEALTHY)))  # fmt: skip
                hostile = asyncio.ensure_future(_hostile(server.port))
                fragile.kill_connections()
                cut_codes = await asyncio.gather(*(expect_close(ws) for ws in cut))
                kicked = await _kick(management, victim)
                outcomes, seen = await hostile, await healthy
                async with asyncio.timeout(10):  # the vanished clients' connections end as their resets are read
                    while (await management.connection_listing()).total:  # noqa: ASYNC110 - no event to await
                        await asyncio.sleep(0.05)
                leases = [key async for key in redis.scan_iter(f"{prefix}:conc:*")]
            assert server.stop() == 0
            output = server.output()

    assert seen == [(MESSAGES, 1000)] * HEALTHY
    assert cut_codes == [(1011, "upstream connection failed")] * 3
    assert kicked == (4321, "kicked")
    assert outcomes["bad_token"] == [401] * 6
    assert outcomes["oversize"] == [1009] * 2
    assert outcomes["malformed"] == [1002] * 10
    assert outcomes["ping_flood"] == [1000] * 2
    assert len(held) == 4  # the cut connections' and the victim's: the check below is not vacuous
    assert leases == []
    assert "Traceback" not in output
    assert "ERROR" not in output
    # One access line per connection: 4 + 6 healthy, 2 oversize, 10 malformed, 2 ping floods, 2 vanished.
    assert output.count('" 101 ') == 4 + HEALTHY + 2 + 10 + 2 + 2
    assert output.count('" 401 ') == 6
