"""End to end: a side that sends its close frame and then half-closes (a FIN) still gets the answer.

RFC 6455 §7.1.1 lets an endpoint shut down its sending side once its close frame is out, and the
close frame answering it must still reach it. On the splice (and the frame relay) the gateway took the
client's FIN behind its close frame for a client gone: its transport was closed at once, and the
upstream's answer, coming a moment later, had nowhere to go: the client read EOF and no close frame
(1006), where the relay gave it the upstream's close. The mirror, an upstream that sends its close frame
and its FIN, never got the client's answer the same way. Now the gateway writes the answer to such a side
and then closes its TCP connection, under both of uvicorn's event loops. (The relay answers each side
from a WebSocket stack of its own, and is not part of this.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import raw_client_of
from support.servers import UvicornFactory

BOUND = 10.0  # the test's wait: far under close_timeout, so the gateway's own answer at its end cannot pass
NEVER = 60.0
SETTLE = 0.2  # lets the gateway read the FIN before the answer comes (orders events; nothing is timed)
Loop = Literal["uvloop", "asyncio"]
SPLICED = ["splice", "frame relay"]  # the connectors that copy the client's and the upstream's frames


def _gateway(port: int, connector: str, loop: Loop, uvicorn_server: UvicornFactory) -> tuple[ProbedGateway, str]:
    """A gateway whose API ``/h`` reaches the raw upstream at ``port`` through ``connector``, on ``loop``."""
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", close_timeout=NEVER, ping_interval=None,
                      **CONNECTORS[connector])  # fmt: skip
    gateway = ProbedGateway({"apis": [entry]})
    return gateway, uvicorn_server(gateway, ws=PASSTHROUGH, loop=loop).url("/h")


async def _read_close(reader: asyncio.StreamReader) -> tuple[int, str]:
    """The next frame, which must be a close frame under 126 bytes (unmasked if it was masked)."""
    head = await reader.readexactly(2)
    assert head[0] == 0x88, head
    key = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
    body = bytes(b ^ key[i % 4] for i, b in enumerate(await reader.readexactly(head[1] & 0x7F)))
    return int.from_bytes(body[:2], "big"), body[2:].decode()


def _answering_after_a_while(answered: asyncio.Event) -> Handler:
    """Accepts; answers the client's close frame a moment after it, its code echoed and a reason of its own."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            code, _ = await _read_close(reader)
            await asyncio.sleep(SETTLE)
            writer.write(ws_frame(8, code.to_bytes(2, "big") + b"upstream's answer", mask=False))
            await writer.drain()
            answered.set()
        writer.close()

    return handle


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("connector", SPLICED)
async def test_a_client_that_half_closes_after_its_close_frame_gets_the_upstreams_answer(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, loop: Loop
) -> None:
    """Close 4001 and a FIN from the client: the upstream's close frame (4001 echoed) reaches it, then EOF."""
    answered = asyncio.Event()
    port = await hostile(_answering_after_a_while(answered))
    gateway, url = _gateway(port, connector, loop, uvicorn_server)
    reader, writer = await raw_client_of(url)
    writer.write(ws_frame(8, (4001).to_bytes(2, "big") + b"bye"))
    await writer.drain()
    writer.write_eof()  # shutdown(SHUT_WR): it sends nothing more, and still reads
    async with asyncio.timeout(BOUND):
        assert await _read_close(reader) == (4001, "upstream's answer")
        assert await reader.read() == b""  # then the gateway's TCP close, nothing else
    assert answered.is_set()
    writer.close()
    await gateway.settle()


def _closing_then_fin(got: list[object], done: asyncio.Event) -> Handler:
    """Accepts, sends close 4000 "bye" and its FIN at once; records the answer it reads, then its EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=ws_frame(8, (4000).to_bytes(2, "big") + b"bye", mask=False))
        writer.write_eof()
        try:
            got.append(await _read_close(reader))
            got.append(await reader.read())
        except (OSError, asyncio.IncompleteReadError) as exc:
            got.append(exc)
        writer.close()
        done.set()

    return handle


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("connector", SPLICED)
async def test_an_upstream_that_half_closes_after_its_close_frame_gets_the_clients_answer(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, loop: Loop
) -> None:
    """Close 4000 and a FIN from the upstream: the client's answer (4000 echoed) reaches it, then EOF."""
    got: list[object] = []
    done = asyncio.Event()
    port = await hostile(_closing_then_fin(got, done))
    gateway, url = _gateway(port, connector, loop, uvicorn_server)
    reader, writer = await raw_client_of(url)
    async with asyncio.timeout(BOUND):
        assert await _read_close(reader) == (4000, "bye")
        await asyncio.sleep(SETTLE)
        writer.write(ws_frame(8, (4000).to_bytes(2, "big") + b"client's answer"))
        await writer.drain()
        assert await reader.read() == b""  # the gateway closes the client once it answered
        await done.wait()
    assert got == [(4000, "client's answer"), b""]
    writer.close()
    await gateway.settle()
