"""An upstream answering the handshake with neither a 101 nor a refusal is a 502 at once on every connector.

No client gets a 200 or a 302 for its upgrade, so its body need not be read. The relay's ``websockets``
client read it to the connection's end (up to 1 MiB): an answer whose body ran on, unframed or in
chunks, held the handshake until ``connect_timeout`` -- a 504, the backend counted as timing out --
where the splice and the frame relay answered 502 at once. A raw upstream sends each answer and
dribbles its body; a real uvicorn runs the gateway (the gateway's protocol) in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.upstream.refusal import without_body
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory

NEVER = 60.0  # a connect_timeout no test waits for
FRAMINGS = {"to the end": b"", "chunked": b"Transfer-Encoding: chunked\r\n", "long": b"Content-Length: 900000\r\n"}
STATUSES = {
    b"200 OK": "answered the handshake with 200, neither 101 nor a refusal",
    b"302 Found": "answered with a redirect (302), which is not followed",
}


def _dribbling(status: bytes, framing: bytes, done: asyncio.Event) -> Handler:
    """Answers with ``status`` and ``framing``, then a body a little at a time, for 10 s or until the
    gateway closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            chunk = b"3e8\r\n" + b"x" * 1000 + b"\r\n" if b"chunked" in framing else b"x" * 1000
            closed = asyncio.ensure_future(reader.read())  # the gateway's EOF (or a reset)
            with contextlib.suppress(OSError):
                writer.write(b"HTTP/1.1 " + status + b"\r\nLocation: /elsewhere\r\n" + framing + b"\r\n")
                for _ in range(100):
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.wait([closed], timeout=0.1)
                    if closed.done():
                        break
            closed.cancel()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        finally:
            done.set()

    return handle


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("status", list(STATUSES))
async def test_an_answer_no_client_gets_is_a_502_at_once_on_every_connector(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    status: bytes,
    framing: str,
    connector: str,
) -> None:
    """502 within 3 s (the body runs on for 10), one failure of the backend, the same words everywhere."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    done = asyncio.Event()
    port = await hostile(_dribbling(status, FRAMINGS[framing], done))
    gateway, url = gateway_before(port, connector, uvicorn_server, connect_timeout=NEVER)
    async with asyncio.timeout(3):  # the relay: connect_timeout (a 504) before
        assert await upgrade_status(int(url.rsplit(":", 1)[1].split("/", 1)[0]), "/h") == 502
    async with asyncio.timeout(5):  # the gateway dropped the upstream's connection
        await done.wait()
    await gateway.settle()
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1
    lines = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert len(lines) == 1 and STATUSES[status] in lines[0], lines


def test_without_body_keeps_the_head_and_frames_no_body() -> None:
    """The head as sent but its framing, a ``Content-Length: 0``, and nothing of what followed."""
    answer = (b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\nX-B: 2\r\n\r\n"
              b"5\r\nhello\r\n")  # fmt: skip
    assert without_body(answer) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n"
