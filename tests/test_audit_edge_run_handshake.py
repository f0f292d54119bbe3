"""The promises of docs/security.md's limits table at the handshake, held by a real `asgi-ws-gateway run`.

One server process for the module (a scripted upstream, a raw upstream that answers as each path says,
the splice, the frame relay and the relay in front of them). Each attack is one raw connection: its
exact status and body, one access line naming its client and no traceback, the process's open
descriptors back to what they were, and a connection held open beside it still echoing. The variants
are those the other tests do not send: the limits reached exactly and one past them by many headers,
a name repeated or trickled in; the upstream's 101 cut after each of its parts, closed or reset;
the client leaving after each chunk of its head and while the upstream connect runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.server.http import GatewayHTTPProtocol
from support.clients import connect
from support.gateway import PASSTHROUGH, ProbedGateway
from support.processes import ServerProcess, ready_server
from support.rawhttp import handshake, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")

CONNECTORS: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 65536}}]}},
    "relay": {"passthrough": False},
}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SECRET = "edge-audit-s3cr3t-never-logged"
BEARER = b"Authorization: Bearer " + SECRET.encode() + b"\r\n"
"""Sent with every attack: no line the server writes may hold it."""
_FIXED = 123  # what handshake()'s five headers count toward max_header_bytes (name + value + 4 each)


class _ScriptedUpstream:
    """A raw upstream on its own thread: the request path says how it answers the handshake.

    ``/cut-N``: the first N bytes of a right 101, then a close; ``/reset-N``: then a reset;
    ``/stall``: reads the request and never answers.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="scripted-upstream", daemon=True)
        self._writers: list[asyncio.StreamWriter] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        for writer in self._writers:
            writer.transport.abort()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            kind, _, count = head.split(b" ", 2)[1].strip(b"/").decode().partition("-")
            if kind == "stall":
                await reader.read()  # until the gateway leaves
                return
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
            writer.write(answer[: int(count)])
            await writer.drain()
            if kind == "reset":
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
        writer.close()

    def __enter__(self) -> _ScriptedUpstream:
        self._thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """``asgi-ws-gateway run`` (one process) in front of both upstreams; yields it and its port."""
    tmp = tmp_path_factory.mktemp("edge")
    with UpstreamServer() as echo, _ScriptedUpstream() as scripted:
        apis: list[dict[str, Any]] = []
        for name, settings in CONNECTORS.items():
            apis.append({"name": f"{name}-echo", "path": f"/{name}/echo", "upstreams": [echo.url("/echo")], **settings})
            apis.append({"name": f"{name}-raw", "path": f"/{name}/raw/{{mode}}", "connect_timeout": 30,
                         "upstreams": [f"ws://127.0.0.1:{scripted.port}/{{mode}}"], **settings})  # fmt: skip
        limited = {"rate-limit-by-key": {"key": "{cookie.sid|x}:{query.room|x}", "limit": 100000, "window": 60}}
        apis.append({"name": "keyed", "path": "/keyed", "upstreams": [echo.url("/echo")], "policies": [limited]})
        config = tmp / "gateway.json"
        config.write_text(json.dumps({"apis": apis}))
        server = ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port),
                                            "--log-level", "info"], cwd=tmp)  # fmt: skip
        with server:
            yield server, server.port


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.asynccontextmanager
async def _watched(server: ServerProcess, port: int) -> AsyncIterator[None]:
    """A connection held open beside the attack must still echo after it; the process's open
    descriptors must come back to what they were; its output must hold no traceback."""
    async with await connect(f"ws://127.0.0.1:{port}/splice/echo") as healthy:
        await healthy.send("before")
        assert await healthy.recv() == "before"
        before, written = _fds(server.process.pid), _mark(server)
        yield
        deadline = time.monotonic() + 10
        # Closes are asynchronous; fewer is fine (a refusal of the test before may linger, then close).
        while _fds(server.process.pid) > before and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
        assert _fds(server.process.pid) <= before, "a descriptor leaked"
        await healthy.send("beside")
        assert await healthy.recv() == "beside"
    written_since = _since(server, written)
    assert "Traceback" not in written_since and SECRET not in written_since


async def _answer(port: int, data: bytes, *, trickle: int = 0) -> tuple[bytes, int]:
    """Send ``data`` (``trickle``: that many bytes a write) and read the answer to the server's EOF
    (a 101 to its head); the answer and the client's port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client_port = writer.get_extra_info("sockname")[1]
    step = trickle or len(data)
    with contextlib.suppress(OSError):
        for at in range(0, len(data), step):
            writer.write(data[at : at + step])
            await writer.drain()
    got = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                got += chunk
                if got.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in got:
                    break
    writer.close()
    return got, client_port


def _mark(server: ServerProcess) -> tuple[int, int]:
    """Where the server's stdout and stderr end now."""
    return len(server.stdout()), len(server.stderr())


def _since(server: ServerProcess, mark: tuple[int, int]) -> str:
    """What the server wrote after ``mark``, on either stream."""
    return server.stdout()[mark[0] :] + server.stderr()[mark[1] :]


async def _line_of(server: ServerProcess, client_port: int, since: tuple[int, int]) -> list[str]:
    """The server's lines after ``since`` naming the client at ``client_port`` (a port an earlier
    connection had may come again); waits for the first, 5 s at most."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in _since(server, since).splitlines() if f"127.0.0.1:{client_port} -" in line]
        if lines or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.02)


def _headers_taking(total: int, count: int, *, name: bytes = b"", bearer: bool = True) -> bytes:
    """``count`` headers that bring the request's headers to exactly ``total`` bytes as
    ``handshake_limits.max_header_bytes`` counts them (each ``X-P<nn>``, or all ``name``), with
    :data:`BEARER` (``bearer``) and :func:`handshake`'s own."""
    left = total - _FIXED - (len(BEARER) if bearer else 0)  # (its ": " and CRLF are the 4 bytes)
    each = left // count
    lines = []
    for i in range(count):
        size = each if i < count - 1 else left - each * (count - 1)
        header = name or b"x-p%02d" % i
        lines.append(header + b": " + b"a" * (size - len(header) - 4) + b"\r\n")
    return b"".join(lines)


HEAD_CASES = {
    # name: (extra headers, status, the body's words or the access line's)
    "32 KiB of headers exactly, in 60": (_headers_taking(32768, 60), 101, ""),
    "one byte past, in 60": (_headers_taking(32769, 60), 431, "headers_too_large"),
    "one byte past, one name repeated 90 times": (_headers_taking(32769, 90, name=b"x-same"), 431, "headers_too_large"),
    "100 headers, one name repeated": (b"X-R: v\r\n" * 94, 101, ""),
    "101 headers, one name repeated": (b"X-R: v\r\n" * 95, 431, "headers_too_large"),
    "an obs-fold line": (b"X-A: v\r\n  folded\r\n", 400, "invalid HTTP request"),
    "5 gateway hops in five lines": (b"VIA: 1.1 asgi-ws-gateway\r\n" * 5, 508, "loop_detected"),
    "4 gateway hops": (b"Via: 1.1 asgi-ws-gateway, 1.1 asgi-ws-gateway\r\n" * 2, 101, ""),
}


@pytest.mark.parametrize("connector", sorted(CONNECTORS))
@pytest.mark.parametrize("case", sorted(HEAD_CASES))
async def test_a_head_at_and_past_the_limits(served: tuple[ServerProcess, int], connector: str, case: str) -> None:
    """The exact status, one line naming the client, nothing leaked, the healthy connection untouched."""
    server, port = served
    extra, status, words = HEAD_CASES[case]
    async with _watched(server, port):
        since = _mark(server)
        answer, client_port = await _answer(port, handshake(f"/{connector}/echo", BEARER + extra))
        lines = await _line_of(server, client_port, since)
    assert status_of(answer) == status, answer[:300]
    assert len(lines) == 1, lines
    if status == 101:
        assert " 101 " in lines[0], lines
    elif words != "invalid HTTP request":
        assert words in lines[0], lines
        assert b"application/problem+json" in answer and b'"status": %d' % status in answer, answer[-300:]
    else:
        assert words in lines[0], lines


@pytest.mark.parametrize("total", [32768, 32769])
async def test_a_head_trickled_in_counts_the_same(served: tuple[ServerProcess, int], total: int) -> None:
    """Seven bytes a write: the limit is the same as for the head sent at once."""
    server, port = served
    async with _watched(server, port):
        answer, _ = await _answer(port, handshake("/splice/echo", _headers_taking(total, 50, bearer=False)), trickle=7)
    assert status_of(answer) == (101 if total == 32768 else 431)


_COOKIES = b"".join(b"Cookie: " + b"; ".join(b"c%d=1" % (i * 90 + j) for j in range(90)) + b"\r\n" for i in range(2))
"""180 cookies in two header lines."""


@pytest.mark.parametrize(
    ("target", "extra", "status"),
    [
        ("/keyed?" + "&".join(["room=1"] * 999), b"", 101),
        ("/keyed?" + "&".join(["room=1"] * 1000), b"", 414),
        ("/keyed?room=1", _COOKIES, 101),
        ("/keyed?room=1", _COOKIES + b"Cookie: one=more\r\n", 431),
    ],
    ids=["1000-parameters", "1001-parameters", "180-cookies-in-2-lines", "181-cookies-in-3-lines"],
)
async def test_what_a_policy_reads_is_counted_whatever_the_spelling(
    served: tuple[ServerProcess, int], target: str, extra: bytes, status: int
) -> None:
    """Query parameters and cookies a limit's key reads: at the bound admitted, one past it refused."""
    server, port = served
    async with _watched(server, port):
        since = _mark(server)
        answer, client_port = await _answer(port, handshake(target + f"&access_token={SECRET}", extra))
        lines = await _line_of(server, client_port, since)
    assert status_of(answer) == status, answer[:300]
    assert len(lines) == 1 and f" {status} " in lines[0], lines


_ANSWER_PARTS = {"nothing": 0, "in the status line": 12, "after the status line": 34, "in a header": 60,
                 "all but the blank line": 127}  # fmt: skip


@pytest.mark.parametrize("connector", sorted(CONNECTORS))
@pytest.mark.parametrize("how", ["cut", "reset"])
@pytest.mark.parametrize("part", sorted(_ANSWER_PARTS))
async def test_an_upstream_gone_within_its_101_is_a_502_at_once(
    served: tuple[ServerProcess, int], connector: str, how: str, part: str
) -> None:
    """Closed or reset after any part of its answer's head: 502, not a wait for connect_timeout (30 s)."""
    server, port = served
    async with _watched(server, port):
        since = _mark(server)
        answer, client_port = await _answer(port, handshake(f"/{connector}/raw/{how}-{_ANSWER_PARTS[part]}"))
        lines = await _line_of(server, client_port, since)
    assert status_of(answer) == 502, answer[:300]
    assert b"the service behind this API is not available" in answer
    assert len(lines) == 1 and "upstream_unreachable" in lines[0], lines


_HEAD = handshake("/splice/raw/stall")


@pytest.mark.parametrize("how", ["fin", "reset"])
@pytest.mark.parametrize("cut", [1, 16, 60, len(_HEAD) - 2, len(_HEAD)], ids=lambda cut: f"after-{cut}-bytes")
async def test_a_client_leaving_at_any_point_of_its_handshake_leaves_nothing(
    served: tuple[ServerProcess, int], how: str, cut: int
) -> None:
    """Within its head, or with the head sent and the upstream connect running (a backend that never
    answers): nothing leaked, and for a handshake begun, its access line says it was abandoned."""
    server, port = served
    async with _watched(server, port):
        since = _mark(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(_HEAD[:cut])
        await writer.drain()
        await asyncio.sleep(0.2)  # the head is read, and a whole one handed to the gateway
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.write_eof()
            with contextlib.suppress(OSError):
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
            writer.close()
        lines = await _line_of(server, client_port, since) if cut == len(_HEAD) else []
    if cut == len(_HEAD):
        assert len(lines) == 1 and "abandoned (client went away)" in lines[0], lines


@pytest.mark.parametrize("connector", sorted(CONNECTORS))
async def test_no_task_outlives_a_failed_or_abandoned_handshake(connector: str) -> None:
    """In process (real uvicorn, the gateway's protocols): the server loop's tasks after an upstream reset
    within its 101 and a client reset during the connect are the tasks before them."""
    entry = {"name": "raw", "path": "/raw/{mode}", "connect_timeout": 30, **CONNECTORS[connector]}
    with _ScriptedUpstream() as scripted:
        entry["upstreams"] = [f"ws://127.0.0.1:{scripted.port}/{{mode}}"]
        gateway = ProbedGateway({"apis": [entry]})
        with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
            answer, _ = await _answer(server.port, handshake("/raw/reset-60"))  # the loop is known from here
            assert status_of(answer) == 502

            async def names() -> list[str]:
                return sorted(getattr(task.get_coro(), "__qualname__", "?") for task in asyncio.all_tasks())

            before = await gateway.on_server(names)
            answer, _ = await _answer(server.port, handshake("/raw/cut-34"))
            assert status_of(answer) == 502
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(handshake("/raw/stall"))
            await writer.drain()
            await asyncio.sleep(0.2)  # the upstream connect is under way
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            await gateway.settle()
            deadline = time.monotonic() + 5
            while (after := await gateway.on_server(names)) != before and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # (another loop's tasks)
    assert after == before
