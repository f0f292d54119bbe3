"""The gateway's protocol takes httptools' parse of an upgrade request only as websockets would read it,
and the connection as uvicorn's HTTP protocol saw it."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets import http11
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK
from websockets.http11 import Request
from websockets.server import ServerProtocol

from asgi_ws_gateway.server import GatewayHTTPProtocol, GatewayWebSocketProtocol, request_head
from asgi_ws_gateway.server.request_head import parsed_request, serialised_request
from support.servers import UvicornServer
from support.tls import make_ca

KEY = (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")
BROWSER = [
    (b"host", b"127.0.0.1:8000"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"), KEY,
    (b"sec-websocket-version", b"13"), (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"), (b"cookie", b"a=1; b=\xe9t\xe9"),
]  # fmt: skip
LIMIT = http11.MAX_LINE_LENGTH


def by_websockets(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Request | None:
    """What websockets' own parser makes of uvicorn's re-serialisation: the request, or None if refused."""
    protocol = ServerProtocol()
    protocol.receive_data(serialised_request(method, target, headers))
    events = protocol.events_received()
    return events[0] if events and isinstance(events[0], Request) else None


def same(a: Request, b: Request) -> bool:
    return (a.method, a.path, a.protocol, list(a.headers.raw_items())) == (
        b.method, b.path, b.protocol, list(b.headers.raw_items()),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET", b"/ws/chat/lobby?access_token=x&room=%20a", BROWSER),
        (b"GET", b"/", [KEY, (b"x-padded", b" \t spaced value\t ")]),  # websockets strips around values
        (b"GET", b"/" + b"a" * (LIMIT - 17), [KEY]),  # a request line one byte under the limit (CRLF included)
        (b"GET", b"/", [KEY, (b"x-long", b"v" * (LIMIT - 11))]),  # a header line one byte under the limit
        (b"GET", b"/", [(b"x-h%d" % i, b"v") for i in range(http11.MAX_NUM_HEADERS - 1)]),
    ],
    ids=["browser", "padded-value", "long-target", "long-header", "many-headers"],
)
def test_a_plain_head_is_taken_as_websockets_reads_it(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """A head websockets parses as it is skips the second parse, and the request is the same."""
    fast, slow = parsed_request(method, target, headers), by_websockets(method, target, headers)
    assert fast is not None and slow is not None
    assert same(fast, slow)


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET", b"/" + b"a" * LIMIT, [KEY]),  # 414 from websockets
        (b"GET", b"/" + b"a" * (LIMIT - 16), [KEY]),  # exactly at the limit: left to websockets
        (b"GET", b"/", [KEY, (b"x-long", b"v" * LIMIT)]),  # 431
        (b"GET", b"/", [(b"x-h%d" % i, b"v") for i in range(http11.MAX_NUM_HEADERS + 1)]),  # 431
        (b"GET", b"/", [(b"x-h%d" % i, b"v") for i in range(http11.MAX_NUM_HEADERS)]),  # at the limit
        (b"GET", b"/", [KEY, (b"x-bad", b"a\x00b")]),  # a control character in a value
        (b"GET", b"/", [KEY, (b"x-bad", b"a\r\nx-injected: 1")]),  # a line break in a value
        (b"GET", b"/", [KEY, (b"bad name", b"v")]),
        (b"GET", b"/", [KEY, (b"x:colon", b"v")]),
        (b"GET", b"/", [KEY, (b"content-length", b"5")]),
        (b"GET", b"/", [KEY, (b"content-length", b"0")]),  # websockets accepts it: its call, not ours
        (b"GET", b"/", [KEY, (b"transfer-encoding", b"chunked")]),
        (b"GET", b"/a b", [KEY]),
        (b"GET", "/caf\u00e9".encode(), [KEY]),
        (b"GET", b"", [KEY]),
        (b"G T", b"/", [KEY]),
    ],
    ids=[
        "target-too-long", "target-at-limit", "header-too-long", "too-many-headers", "headers-at-limit",
        "nul-in-value", "crlf-in-value", "space-in-name", "colon-in-name", "body", "content-length-0",
        "chunked", "space-in-target", "non-ascii-target", "empty-target", "space-in-method",
    ],
)  # fmt: skip
def test_anything_else_is_left_to_websockets(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A head websockets might refuse or read otherwise takes its parser (its 414/431/400 and lines)."""
    assert parsed_request(method, target, headers) is None


_NAME_BYTES = st.sampled_from([b"x", b"-", b"A", b"9", b"~", b" ", b":", b"\n", b"\x00", b"\xe9", b"("])
_VALUE_BYTES = st.sampled_from([b"v", b" ", b"\t", b"\n", b"\r", b"\x00", b"\x7f", b"\xe9", b'"', b":"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.lists(_NAME_BYTES, max_size=6).map(b"".join), st.sampled_from([b"content-length", b"host"])),
            st.lists(_VALUE_BYTES, max_size=8).map(b"".join),
        ),
        max_size=6,
    )
)
def test_the_fast_parse_is_websockets_parse_or_none(headers: list[tuple[bytes, bytes]]) -> None:
    """Whatever the headers, the fast path either declines or makes the very request websockets makes."""
    fast = parsed_request(b"GET", b"/", headers)
    if fast is not None:
        slow = by_websockets(b"GET", b"/", headers)
        assert slow is not None and same(fast, slow)


def test_a_name_seen_before_is_judged_as_the_first_time() -> None:
    """The names found plain are remembered: the second handshake's head is read as the first's, and a
    framing header or a bad name is refused whatever was seen before."""
    for _ in range(2):
        fast = parsed_request(b"GET", b"/", BROWSER)
        slow = by_websockets(b"GET", b"/", BROWSER)
        assert fast is not None and slow is not None and same(fast, slow)
        for bad in [(b"content-length", b"5"), (b"Transfer-Encoding", b"chunked"), (b"bad name", b"v")]:
            assert parsed_request(b"GET", b"/", [*BROWSER, bad]) is None


def test_the_remembered_names_are_bounded() -> None:
    """A client's made-up names do not grow the store without bound."""
    for i in range(3):
        names = [(b"x-%d-%d" % (i, n), b"v") for n in range(100)]
        assert parsed_request(b"GET", b"/", names) is not None
    assert parsed_request(b"GET", b"/", [(b"x-" + b"n" * 100, b"v")]) is not None
    assert len(request_head._PLAIN_NAMES) <= request_head._PLAIN_NAMES_LIMIT
    assert b"x-" + b"n" * 100 not in request_head._PLAIN_NAMES  # long names are checked every time


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_the_app_sees_the_connection_as_uvicorn_would_show_it(tls: bool, tmp_path: Path) -> None:
    """Under the gateway's protocols the scope has the client, server, scheme, path and headers of the socket."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            seen.append(scope)
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})

    ca = make_ca(tmp_path)
    options: dict[str, Any] = {"ssl_certfile": str(ca.cert_file), "ssl_keyfile": str(ca.key_file)} if tls else {}
    with UvicornServer(app, ws=GatewayWebSocketProtocol, http=GatewayHTTPProtocol, **options) as server:  # type: ignore[arg-type]
        context = ssl.create_default_context(cafile=str(ca.ca_file)) if tls else None
        async with connect(server.url("/ws/a%20b?x=1", "wss" if tls else "ws"), ssl=context,
                           additional_headers={"X-Padded": "  v  "}) as ws:  # fmt: skip
            local = ws.local_address
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
    (scope,) = seen
    assert scope["scheme"] == ("wss" if tls else "ws")
    assert scope["client"] == (local[0], local[1])
    assert scope["server"] == ("127.0.0.1", server.port)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/ws/a b", b"/ws/a%20b", b"x=1")
    assert (b"x-padded", b"v") in scope["headers"]
