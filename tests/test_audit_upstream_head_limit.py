"""The heads the gateway sends an upstream and reads back follow ``handshake_limits``, 64 KiB at least.

Both caps were a fixed 64 KiB: an operator who raised ``max_header_bytes`` had the clients it now
admitted refused with 431 for the head the gateway would forward, and an upstream's answer setting
their large cookies was a 502 counted against the backend. ``upstream.head_limits.head_limit`` is
the one figure both now use; the relay's connector reads an answer's head up to it, against a raw
upstream here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.errors import HandshakeDenied, UpstreamUnreachable
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.checks import MAX_UPSTREAM_HEAD, check_upstream_request
from asgi_ws_gateway.upstream.head_limits import DEFAULT_HEAD, POLICY_ROOM, head_limit
from asgi_ws_gateway.upstream.interim import UnreadableHead
from asgi_ws_gateway.upstream.response_head import MAX_HEAD, AnswerHead
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnector
from support.configs import build_config
from support.rawhttp import ws_frame
from support.rawws import next_frame

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_COOKIES = b"".join(b"Set-Cookie: c%02d=%s\r\n" % (i, b"v" * 7900) for i in range(12))  # ~95 KB, 12 lines
RAISED = head_limit(128 * 1024, 8 * 1024)


def test_the_defaults_keep_64_kib_each_way() -> None:
    """32 KiB of headers and 8 KiB of target (the defaults) leave the 64 KiB both caps had."""
    assert head_limit(32 * 1024, 8 * 1024) == DEFAULT_HEAD == MAX_HEAD == MAX_UPSTREAM_HEAD == 64 * 1024


@given(st.integers(1024, 1024 * 1024), st.integers(256, 1024 * 1024))
def test_the_limit_covers_what_the_client_may_send(headers: int, target: int) -> None:
    """Never below 64 KiB, and never below what a client the limits admit sends, with the policies' room."""
    limit = head_limit(headers, target)
    assert limit >= DEFAULT_HEAD and limit >= headers + target + POLICY_ROOM


def _answer(extra: bytes) -> bytes:
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra + b"\r\n"


def _read(raw: bytes, max_head: int, step: int) -> bool | str:
    head, buffer = AnswerHead(max_head), bytearray()
    try:
        done = False
        for i in range(0, len(raw), step):
            buffer += raw[i : i + step]
            done = head.feed(buffer)
    except UnreadableHead as exc:
        return str(exc)
    return done


@pytest.mark.parametrize("step", [1, 4096, 1 << 20])
def test_a_raised_limit_reads_a_larger_head_by_the_same_line_rules(step: int) -> None:
    """95 KB of cookies in 12 lines: past the default, within a raised limit, whatever the reads; the
    raised limit still ends a head at its own size."""
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + _answer(_COOKIES)
    assert _read(raw, MAX_HEAD, step) == "sent more than 65536 bytes of response head"
    assert _read(raw, RAISED, step) is True
    assert _read(raw + b"x", len(raw) - 1, step) == f"sent more than {len(raw) - 1} bytes of response head"


def test_the_upstream_request_head_may_be_as_large_as_the_limit() -> None:
    """A forwarded head of 100 KB: 431 under the default, sent under a raised limit, 431 past it."""
    headers = [(f"x-big-{i}", "v" * 8000) for i in range(12)]
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request("ws://up/", headers, in_process=False)
    assert caught.value.status == 431 and "at most 65536 are sent" in caught.value.detail
    check_upstream_request("ws://up/", headers, in_process=False, max_head=RAISED)
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request("ws://up/", headers * 2, in_process=False, max_head=RAISED)
    assert caught.value.status == 431 and f"at most {RAISED} are sent" in caught.value.detail


@pytest.fixture
async def cookie_upstream() -> AsyncIterator[int]:
    """A raw upstream whose valid 101 sets ~95 KB of cookies, then waits for the gateway's close and answers
    it (unanswered, the gateway's close waited out its close_timeout, 5 s)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            writer.write(_answer(b"Sec-WebSocket-Accept: " + accept + b"\r\n" + _COOKIES))
            await writer.drain()
            while (await next_frame(reader))[0] != 0x8:
                pass
            writer.write(ws_frame(0x8, b"\x03\xe8", mask=False))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_the_relays_connector_reads_the_answer_up_to_its_limit(cookie_upstream: int) -> None:
    """The relay's connector: a 502 naming the cap by default; given the raised limit, open, every
    cookie on to the client."""
    url = f"ws://127.0.0.1:{cookie_upstream}/"
    api = load_config(build_config(url, name="h", path="/h", api={"passthrough": False})).apis[0]
    request = UpstreamRequest(url=url, headers=[], subprotocols=[], scope={})
    with pytest.raises(UpstreamUnreachable) as caught:
        await WebSocketsConnector(api, api.upstreams[0]).connect(request)
    assert caught.value.status == 502 and "more than 65536 bytes of response head" in caught.value.detail
    connection = await WebSocketsConnector(api, api.upstreams[0], max_head=RAISED).connect(request)
    try:
        cookies = [value for name, value in connection.response_headers if name == b"set-cookie"]
        assert len(cookies) == 12 and all(len(cookie) == 7904 for cookie in cookies)
    finally:
        await connection.close(1000, "")
