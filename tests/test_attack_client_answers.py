"""A client as the attacker in the closing handshake: it answers the upstream's close with a bad frame.

A raw upstream accepts, sends its close frame and keeps its TCP connection open; the client reads
that close and answers it with a frame the protocol forbids instead of its own close. The server
(the gateway, towards the client) ends the client's TCP connection after the closing handshake
(RFC 6455 §7.1.1): a bad answer ends it too, at once, not ``close_timeout`` later. Each connector is
exercised, the relay under each of uvicorn's WebSocket implementations as well as the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.servers import WS_IMPLS, UvicornFactory, WSImpl

NEVER = 60.0  # a close_timeout no test waits for
PROMPT = 5.0  # below uvicorn's own 10 s close timer: the EOF must not wait for a timer
UPSTREAM_CLOSE = ws_frame(8, b"\x03\xe8bye", mask=False)
LIMIT = 1000  # the API's max_message_size

CONNECTORS: dict[str, tuple[WSImpl, dict[str, Any]]] = {
    "splice": (PASSTHROUGH, {}),
    "frame relay": (PASSTHROUGH, {"message_policies": {"outbound": [{"limit-message-size": {"max": 65536}}]}}),
    "relay": (PASSTHROUGH, {"passthrough": False}),
    **{f"relay under {impl}": (impl, {}) for impl in WS_IMPLS},
}

BAD_ANSWERS = {
    "unmasked close": ws_frame(8, b"\x03\xe8", mask=False),
    "reserved opcode": ws_frame(3, b""),
    "one-byte close payload": ws_frame(8, b"\x03"),
    "a message over the limit": ws_frame(2, b"x" * (LIMIT + 1)),
}


async def _closes_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw upstream that closes right after its 101, and ends its TCP connection once answered."""
    await accept_upstream(reader, writer, then=UPSTREAM_CLOSE)
    with contextlib.suppress(OSError):
        await reader.read(64)  # the gateway's answer (its close frame): the closing handshake is over
    writer.close()


async def _read_frames_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Every byte the server sends until it ends the connection (a reset ends it too)."""
    received = bytearray()
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("answer", list(BAD_ANSWERS))
async def test_a_bad_answer_to_the_upstreams_close_ends_the_client_at_once(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    request: pytest.FixtureRequest,
    connector: str,
    answer: str,
) -> None:
    """The client, sent the upstream's close, answers with a bad frame: its TCP connection ends at once
    (the gateway's protocol kept it for uvicorn's 10 s close timer), and the gateway holds nothing.
    A message over the limit as the answer kept the splice's and the frame relay's client to the close
    wait's timer (2 close_timeout), its close answer read out and dropped."""
    if answer == "a message over the limit" and connector.startswith("relay under"):
        request.applymarker(pytest.mark.xfail(strict=True, reason="uvicorn's own protocol keeps its close timer"))
    ws, api = CONNECTORS[connector]
    entry = api_entry(
        f"ws://127.0.0.1:{await hostile(_closes_at_once)}/",
        name="h",
        path="/h",
        close_timeout=NEVER,
        max_message_size=LIMIT,
        **api,
    )
    gateway = ProbedGateway({"apis": [entry]})
    server = uvicorn_server(gateway, ws=ws)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(handshake("/h"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        async with asyncio.timeout(PROMPT):
            close = await reader.readexactly(len(UPSTREAM_CLOSE))
        assert close == UPSTREAM_CLOSE  # the upstream's close reached the client
        writer.write(BAD_ANSWERS[answer])
        async with asyncio.timeout(PROMPT):
            rest = await _read_frames_to_eof(reader)
    finally:
        writer.close()
    assert rest[:1] in (b"", b"\x88"), rest  # at most a close frame (the client had one already)
    await gateway.settle()
