"""The relay's signals under one real ``asgi-ws-gateway run``: an API with message policies and
``telemetry.message_events`` on is carried by the relay (``relay/pumps.py``), not the frame relay. Each way a
connection ends there, and what its message policies did, as a real OTLP receiver got the metric points
(docs/telemetry.md, "Metrics"): one count per connection, by side and code, on its API; message policy
actions by policy, action, direction and a bounded reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.clients import connect, expect_close
from support.signals import SignalsRun, signals_run
from support.upstream import UpstreamServer

POLICY_MODULE = '''
from asgi_ws_gateway.errors import CloseConnection, DropMessage


async def drop_by_text(message):
    """Drops every message, its reason the message itself (the client's words); "quit" closes with them."""
    text = message.data if isinstance(message.data, str) else "binary"
    if text.startswith("quit"):
        raise CloseConnection(4000, text, "bye")
    raise DropMessage(text, "dropped")
'''


@dataclass
class Run(SignalsRun):
    seen: dict[str, Any] = field(default_factory=dict)


def _frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _raw(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def _bad_frame(port: int, path: str, data: bytes) -> int:
    """Send a bad frame, answer the close frame that comes back; its code."""
    reader, writer = await _raw(port, path)
    writer.write(data)
    async with asyncio.timeout(5):
        b0, b1 = await reader.readexactly(2)
        payload = await reader.readexactly(b1 & 0x7F)
    assert b0 & 0x0F == 0x8, payload
    writer.write(_frame(0x8, payload[:2]))
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()
    await writer.wait_closed()
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


async def _clients(port: int, upstream: UpstreamServer, seen: dict[str, Any]) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with await connect(f"{base}/relay/echo/0") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    for code in (1011, 4321):
        async with await connect(f"{base}/relay/close/{code}") as ws:
            await ws.send("x")
            seen[f"upstream {code}"] = (await expect_close(ws))[0]
    async with await connect(f"{base}/relay/echo/0") as ws:
        await ws.send("y" * 3000)
        seen["oversize"] = (await expect_close(ws))[0]
    seen["bad opcode"] = await _bad_frame(port, "/relay/echo/0", _frame(0x3, b"x"))
    seen["bad utf-8"] = await _bad_frame(port, "/relay/echo/0", _frame(0x1, b"\xff\xfe"))
    async with await connect(f"{base}/relayidle/echo/0") as ws:
        seen["idle"] = (await expect_close(ws))[0]
    async with await connect(f"{base}/relay/echo/0") as ws:
        await ws.send("a")
        await ws.recv()
        upstream.kill_connections()
        seen["upstream vanished"] = (await expect_close(ws))[0]
    reader, writer = await _raw(port, "/relay/echo/0")
    writer.write(_frame(0x1, b"hi"))
    await reader.readexactly(4)
    writer.transport.abort()  # the client vanishes
    async with await connect(f"{base}/relay/echo/0") as ws:
        await ws.send("z" * 200)  # inbound limit 100, drop
        seen["drop"] = json.loads(await ws.recv())["error"]
        await ws.send("q" * 60)  # its echo is over the outbound limit of 50
        seen["outbound close"] = (await expect_close(ws))[0]
    async with await connect(f"{base}/custom/echo/0") as ws:
        for text in ("Alice's secret", *(f"r{i}" for i in range(70))):
            await ws.send(text)
            await ws.recv()
        await ws.send("quit Alice's secret")
        seen["custom close"] = (await expect_close(ws))[0]


async def _drain(port: int, stop: Any, seen: dict[str, Any]) -> None:
    async with await connect(f"ws://127.0.0.1:{port}/relay/echo/0") as ws:
        stopping = asyncio.ensure_future(asyncio.to_thread(stop))
        seen["drain"] = (await expect_close(ws))[0]
        seen["exit"] = await stopping


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("relay_signals")
    (tmp / "signals_relay_policy.py").write_text(POLICY_MODULE)
    result = Run()
    with UpstreamServer() as upstream:
        u = f"ws://127.0.0.1:{upstream.port}/{{a}}/{{b}}"
        limits = {"inbound": [{"limit-message-size": {"max": 100, "action": "drop"}}],
                  "outbound": [{"limit-message-size": {"max": 50}}]}  # fmt: skip
        custom = {"inbound": [{"transform-message": {"call": "signals_relay_policy:drop_by_text"}}]}
        config = {
            "telemetry": {"message_events": 1.0},
            "apis": [
                {"name": "relay", "path": "/relay/{a}/{b}", "upstreams": [u], "max_message_size": 1024,
                 "message_policies": limits},
                {"name": "relayidle", "path": "/relayidle/{a}/{b}", "upstreams": [u], "idle_timeout": 0.3,
                 "message_policies": limits},
                {"name": "custom", "path": "/custom/{a}/{b}", "upstreams": [u], "message_policies": custom},
            ],
        }  # fmt: skip
        with signals_run(tmp, config, result) as server:
            asyncio.run(_clients(server.port, upstream, result.seen))
            asyncio.run(_drain(server.port, server.stop, result.seen))
    yield result


def test_the_clients_saw_the_documented_codes(run: Run) -> None:
    assert run.seen == {
        "upstream 1011": 1011, "upstream 4321": 4321, "oversize": 1009, "bad opcode": 1002, "bad utf-8": 1007,
        "idle": 1001, "upstream vanished": 1011, "drop": "message_too_big", "outbound close": 1001,
        "custom close": 4000, "drain": 1012, "exit": 0,
    }, run.output  # fmt: skip
    assert "Traceback" not in run.output, run.output


def test_each_connection_end_counted_once_by_side_and_code(run: Run) -> None:
    """Behind the server's relay a bad frame is the client's close (docs/telemetry.md: "as the client's 1002")."""
    closes = sorted((s["ws_gateway.api.name"], s["ws_gateway.close.side"], str(s["ws_gateway.close.code"]), s["_value"])
                    for s in run.latest("ws_gateway.connection.closes") if s["_value"])  # fmt: skip
    assert closes == sorted([
        ("relay", "client", "1000", 1), ("relay", "upstream", "1011", 1), ("relay", "upstream", "4xxx", 1),
        ("relay", "gateway", "1009", 1), ("relay", "client", "1002", 1), ("relay", "client", "1007", 1),
        ("relayidle", "gateway", "1001", 1), ("relay", "upstream", "1006", 1), ("relay", "client", "1006", 1),
        ("relay", "gateway", "1001", 1), ("custom", "gateway", "4xxx", 1), ("relay", "gateway", "1012", 1),
    ])  # fmt: skip
    accepted = {s["ws_gateway.api.name"]: s["_value"] for s in run.latest("ws_gateway.handshakes")
                if s["ws_gateway.handshake.outcome"] == "accepted"}  # fmt: skip
    assert accepted == {"relay": 10, "relayidle": 1, "custom": 1}


def test_policy_actions_by_direction_and_reason(run: Run) -> None:
    relay = sorted((s["ws_gateway.policy.action"], s["ws_gateway.message.direction"], s["ws_gateway.policy.reason"],
                    s["_value"]) for s in run.latest("ws_gateway.policy.actions")
                   if s["ws_gateway.api.name"] == "relay")  # fmt: skip
    assert relay == [("close", "upstream_to_client", "message_too_big", 1),
                     ("drop", "client_to_upstream", "message_too_big", 1)]  # fmt: skip


def test_a_reason_a_client_chose_adds_no_series(run: Run) -> None:
    """71 drops and a close, each with the client's words as the reason: the reasons that read as codes
    (64 at most per policy) and ``_OTHER``; every action counted."""
    custom = [s for s in run.latest("ws_gateway.policy.actions") if s["ws_gateway.api.name"] == "custom"]
    reasons = {s["ws_gateway.policy.reason"] for s in custom}
    assert sum(s["_value"] for s in custom) == 72
    assert sum(s["_value"] for s in custom if s["ws_gateway.policy.action"] == "close") == 1
    assert len(reasons) <= 65 and "_OTHER" in reasons
    assert all(re.fullmatch(r"[a-z][a-z0-9_.-]*|_OTHER", reason) for reason in reasons), reasons
    assert not [p for p in run.points if "Alice" in repr(p.attributes)]
