"""Audit: when the gateway ends a TCP connection whose peer is still sending, the peer gets the end it
was sent (the close frame, the HTTP refusal) and a FIN, not a reset.

Linux answers a ``close()`` with unread bytes in the receive buffer, or bytes arriving after it, with a
RST, and drops what it had not sent yet: a client still sending (the rest of a large message, data
after its close frame) read ECONNRESET instead of EOF, and one that had not read what was queued to
it lost that and the close frame with it (1006). The gateway now closes as nginx does ("lingering
close"): a FIN after what it queued, what the peer still sends read and dropped, the socket closed
when the peer closes (or a few seconds and a bounded number of bytes later).

Real ``asgi-ws-gateway run`` (uvloop, the gateway's own protocols), raw upstreams and raw clients,
on every path: the splice, the frame relay (message policies), the relay, a refusal at the handshake
(403, 429), and the gateway's own close (``max_lifetime``), towards the client and the upstream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame
from support.together import AtOnce

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux's reset-on-close is what is audited"),
]

LIFETIME = 0.5  # seconds: the gateway's own close (max_lifetime) on the APIs that test it
TAIL = 200 * 1024  # what a peer sends after its close frame
PUSHED = 1024 * 1024  # what the upstream sends a client that reads nothing before its close
MODES: dict[str, dict[str, Any]] = {
    "splice": {"passthrough": True},
    "frame relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 1 << 20}}]}},
    "relay": {"passthrough": False},
}


# -- raw upstreams ------------------------------------------------------------------------------------


class Upstream:
    """A raw upstream: answers the handshake (after ``push`` bytes of messages, if any), answers a close
    frame with its code (then ``tail`` bytes of messages, if any) and closes; records how the gateway
    ended its TCP connection: ``eof`` or the error."""

    def __init__(self, *, push: int = 0, tail: int = 0) -> None:
        self.push, self.tail = push, tail
        self.ends: list[str] = []
        self.ended = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pushed = b"".join(ws_frame(0x2, b"p" * 65536, mask=False) for _ in range(self.push // 65536))
        await accept_upstream(reader, writer, then=pushed)
        try:
            while True:
                opcode, payload = await next_frame(reader)
                if opcode == 0x8:
                    tail = (ws_frame(0x2, b"t" * 16384, mask=False) for _ in range(self.tail // 16384))
                    writer.write(
                        ws_frame(0x8, payload[:2], mask=False) + b"".join(tail)
                    )  # one write: they come together
                    if not self.tail:
                        break
                    await writer.drain()
                    while await reader.read(65536):  # up to the gateway's FIN, or a reset
                        pass
                    self.ends.append("eof")
                    break
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.ends.append(type(exc).__name__)
        if self.ends:
            self.ended.set()
        writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[GatewayProcess, dict[str, Upstream]]]:
    upstreams = {"echo": Upstream(), "push": Upstream(push=PUSHED), "chatty": Upstream(tail=TAIL)}
    for upstream in upstreams.values():
        upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    apis = []
    for mode, fields in MODES.items():
        slug = mode.replace(" ", "-")
        apis += [
            api_entry(upstreams["echo"].url, name=f"{slug}-echo", path=f"/{slug}/echo", **fields),
            api_entry(upstreams["push"].url, name=f"{slug}-push", path=f"/{slug}/push", **fields),
            api_entry(
                upstreams["echo"].url, name=f"{slug}-life", path=f"/{slug}/life", max_lifetime=LIFETIME, **fields
            ),
            api_entry(
                upstreams["chatty"].url, name=f"{slug}-chatty", path=f"/{slug}/chatty", max_lifetime=LIFETIME, **fields
            ),
        ]
    apis += [
        api_entry(
            upstreams["echo"].url,
            name="refused",
            path="/refused",
            policies=[{"check-header": {"header": "X-Absent", "failed_status": 403}}],
        ),
        api_entry(
            upstreams["echo"].url,
            name="limited",
            path="/limited",
            policies=[{"rate-limit-by-key": {"key": "{client.network}", "limit": 1, "window": 3600}}],
        ),
    ]
    directory = tmp_path_factory.mktemp("lingering")
    config = write_config(directory, {"apis": apis})
    try:
        async with GatewayProcess(
            [str(config)], cwd=directory, workers=1, log=directory / "gateway.log", log_level="info"
        ) as process:
            yield process, upstreams
        log = (directory / "gateway.log").read_text()
        assert "Traceback" not in log and "ERROR" not in log, log[-4000:]
    finally:
        for upstream in upstreams.values():
            assert upstream.server is not None
            upstream.server.close()


# -- a raw client -------------------------------------------------------------------------------------


@dataclass
class Received:
    data: bytes
    end: str  # "eof", or the error that ended the reads (ConnectionResetError: the gateway's RST)


def _frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The server's (unmasked) frames in ``data``, and what follows the last whole one."""
    frames, at = [], 0
    while len(data) - at >= 2:
        length, head = data[at + 1] & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(data) - at < 2 + size:
                break
            length, head = int.from_bytes(data[at + 2 : at + 2 + size], "big"), 2 + size
        if len(data) - at < head + length:
            break
        frames.append((data[at] & 0x0F, data[at + head : at + head + length]))
        at += head + length
    return frames, data[at:]


def _tail(size: int, *, close: bool = True, burst: bool = False) -> list[bytes]:
    """A close frame (1000) and ``size`` bytes of binary messages after it: 16 KiB writes, or one
    (``burst``: the close frame and what follows arrive together, the gateway reads part of it)."""
    chunks = [ws_frame(0x8, struct.pack("!H", 1000))] if close else []
    chunks += [ws_frame(0x2, b"x" * (16384 - 8)) for _ in range(size // 16384)]
    return [b"".join(chunks)] if burst else chunks


def _client(
    port: int,
    path: str,
    *,
    sent: list[bytes],
    pause: float = 0.0,
    gap: float = 0.0,
    read_while_sending: bool = False,
    accepted: bool = True,
) -> Received:
    """Open ``path`` (``accepted``: read the 101 first; else ``sent`` goes in one write with the request),
    wait ``pause`` seconds, send ``sent`` (``gap`` seconds between writes) without reading (or
    ``read_while_sending``), then read to the end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = handshake(path)
    data = b""
    if accepted:
        sock.sendall(request)
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        time.sleep(pause)
    chunks = sent if accepted else [request + b"".join(sent)]  # the request, and frames right behind it

    def send() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(gap)
        except OSError:
            pass  # the gateway closed: what it sent is read below

    sender = threading.Thread(target=send)
    sender.start()
    if not read_while_sending:
        sender.join(15)
    end = "timeout"
    try:
        while block := sock.recv(65536):
            data += block
        end = "eof"
    except OSError as exc:
        end = type(exc).__name__
    finally:
        sender.join(15)
        sock.close()
    return Received(data, end)


def _close_code(received: Received) -> int | None:
    frames, rest = _frames(received.data)
    assert rest == b"", f"{len(rest)} bytes of an unfinished frame"
    assert frames and frames[-1][0] == 0x8, [opcode for opcode, _ in frames[-3:]]
    return struct.unpack("!H", frames[-1][1][:2])[0] if frames[-1][1] else None


Gateway = tuple[GatewayProcess, dict[str, Upstream]]


@pytest.fixture(scope="module")
def at_once() -> AtOnce:
    """The cases of a test that share nothing but the gateway, run together (:mod:`support.together`)."""
    return AtOnce()


async def _run(gateway: Gateway, path: str, **options: Any) -> Received:
    return await asyncio.to_thread(_client, gateway[0].port, path, **options)


async def _several(attempt: Callable[[], Awaitable[None]], times: int = 3) -> None:
    """A race the kernel may win by chance is run a few times."""
    for _ in range(times):
        await attempt()


# -- towards the client -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_sending_after_its_close_frame_reads_the_answer_then_eof(gateway: Gateway, mode: str) -> None:
    """Close, then 200 KB more (read only after all of it is sent): the close answer, then EOF."""

    async def attempt() -> None:
        received = await _run(gateway, f"/{mode.replace(' ', '-')}/echo", sent=_tail(TAIL, burst=True))
        assert _close_code(received) == 1000
        assert received.end == "eof"

    await _several(attempt)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_sending_1mb_slowly_after_its_close_frame_gets_eof(gateway: Gateway, mode: str) -> None:
    """Close, then 1 MB in 16 KiB writes 5 ms apart, reading meanwhile: the answer, then EOF (a FIN,
    sent at once; the gateway stops reading at its bound, after the FIN). (Before, the FIN came too,
    the reset only at the next bytes: a Linux client read EOF; its sender got EPIPE.)"""
    received = await _run(
        gateway, f"/{mode.replace(' ', '-')}/echo", sent=_tail(1 << 20), gap=0.005, read_while_sending=True
    )
    assert _close_code(received) == 1000
    assert received.end == "eof"


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_read_nothing_gets_all_that_was_queued_and_the_close_frame(
    gateway: Gateway, mode: str
) -> None:
    """The upstream sent 1 MB the client had not read; the client closes and sends 200 KB more (16 KiB
    every 20 ms), then reads: what was sent to it (all of the 1 MB where the upstream answers its close;
    what the relay had written before its own answer), the close answer, then EOF. A reset dropped what
    the gateway's kernel still held, the close frame with it."""
    received = await _run(gateway, f"/{mode.replace(' ', '-')}/push", pause=0.3, sent=_tail(TAIL), gap=0.02)
    assert _close_code(received) == 1000  # whole frames, the close frame last
    frames, _ = _frames(received.data)
    if mode != "relay":  # (the relay answers the close itself: what it had not written yet is not sent)
        assert sum(len(payload) for opcode, payload in frames if opcode == 0x2) == PUSHED
    assert received.end == "eof"


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_answering_the_gateways_close_then_sending_gets_eof(
    gateway: Gateway, at_once: AtOnce, mode: str
) -> None:
    """The gateway closes (max_lifetime: 1001); the client, which was not reading, answers and sends
    200 KB more: it reads the gateway's 1001, then EOF."""

    async def attempts(each: str) -> None:
        async def attempt() -> None:
            received = await _run(
                gateway, f"/{each.replace(' ', '-')}/life", pause=2 * LIFETIME, sent=_tail(TAIL, burst=True)
            )
            assert _close_code(received) == 1001
            assert received.end == "eof"

        await _several(attempt)

    await at_once.result("answering", mode, attempts, MODES)


def _refusal(received: Received) -> int:
    head, _, body = received.data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    assert len(body) == length, (head, body)
    return int(head.split(b" ", 2)[1])


async def test_a_refused_client_still_sending_reads_the_whole_403_then_eof(gateway: Gateway) -> None:
    """A client that sends 200 KB of frames right behind its request (no wait for the 101) is refused
    403: it reads the whole response, then EOF."""
    received = await _run(gateway, "/refused", sent=_tail(TAIL, close=False), accepted=False)
    assert _refusal(received) == 403
    assert received.end == "eof"


async def test_a_rate_limited_client_still_sending_reads_the_whole_429_then_eof(gateway: Gateway) -> None:
    await _run(gateway, "/limited", sent=[ws_frame(0x8, struct.pack("!H", 1000))])  # the one admitted
    received = await _run(gateway, "/limited", sent=_tail(TAIL, close=False), accepted=False)
    assert _refusal(received) == 429
    assert received.end == "eof"


# -- towards the upstream ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["splice", "frame relay", "relay"])
async def test_an_upstream_sending_after_its_close_answer_gets_eof(gateway: Gateway, mode: str) -> None:
    """The gateway closes (max_lifetime); the upstream answers and sends 200 KB more: it reads the
    gateway's FIN, not a reset. (The relay's upstream leg, the ``websockets`` client, waits for the
    upstream's TCP close, reading meanwhile: it never reset one; kept here as a guard.)"""
    chatty = gateway[1]["chatty"]
    chatty.ends.clear()
    chatty.ended.clear()
    received = await _run(gateway, f"/{mode.replace(' ', '-')}/chatty", pause=2 * LIFETIME, sent=_tail(0))
    assert _close_code(received) == 1001
    async with asyncio.timeout(10):
        await chatty.ended.wait()
    assert chatty.ends == ["eof"]


def _held_open(port: int, path: str) -> tuple[Received, str]:
    """Close, read the answer to EOF, keep the socket open and send a byte every 0.1 s: how the reads
    ended, and how the sends did once the gateway closed its socket (15 s at most)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        sock.sendall(handshake(path))
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        data = data.partition(b"\r\n\r\n")[2]
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        while block := sock.recv(65536):
            data += block
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"\0")
            except OSError as exc:
                return Received(data, "eof"), type(exc).__name__
            time.sleep(0.1)
        return Received(data, "eof"), "still open"
    finally:
        sock.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_never_closes_is_closed_at_the_bound(gateway: Gateway, at_once: AtOnce, mode: str) -> None:
    """The linger is bounded: a client that keeps its end open and trickles bytes is closed all the same."""
    received, sends = await at_once.result(
        "held open",
        mode,
        lambda each: asyncio.to_thread(_held_open, gateway[0].port, f"/{each.replace(' ', '-')}/echo"),
        MODES,
    )
    assert _close_code(received) == 1000
    assert sends in ("BrokenPipeError", "ConnectionResetError")


# -- a shutdown while connections linger ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_shutdown_while_a_closed_connection_lingers_ends_cleanly(tmp_path: Path, mode: str) -> None:
    """A client's close answered, its TCP connection left open (no FIN): the gateway lingers on it. A
    SIGTERM then found the connection still the server's, not yet closed from the gateway's side, and
    sent it a 1012: websockets' InvalidState (the connection was closing), out of uvicorn's shutdown."""
    upstream = Upstream()
    upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    # close_timeout: the shutdown's bound on the relay's wait for the client's TCP close (the default, 5 s,
    # only longer to wait out; the SIGTERM comes as the close is answered either way).
    api = api_entry(upstream.url, name="echo", path="/echo", close_timeout=1.0, **MODES[mode])
    config = write_config(tmp_path, {"apis": [api]})
    log = tmp_path / "gateway.log"
    try:
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log, log_level="info") as process:

            def close_and_hold() -> socket.socket:
                sock = socket.create_connection(("127.0.0.1", process.port), timeout=15)
                sock.sendall(handshake("/echo"))
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(65536)
                data = data.partition(b"\r\n\r\n")[2]
                sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
                while not _frames(data)[0]:  # the close answer; the socket is kept open after it
                    data += sock.recv(65536)
                assert _frames(data)[0][-1][0] == 0x8
                return sock

            held = await asyncio.to_thread(close_and_hold)
            try:
                code = process.stop()
            finally:
                held.close()
        assert code == 0, log.read_text()[-4000:]
        output = log.read_text()
        assert "Traceback" not in output and "ERROR" not in output, output[-4000:]
    finally:
        upstream.server.close()
