"""What a client's bytes make of the upstream request head, on both writers: held, all of them.

Values a client sends (a path parameter, a query value, a header, a cookie) rendered by ``rewrite-uri``
(path and query), ``set-header`` and ``set-query-parameter``, with CR/LF and NUL raw and percent-encoded,
DEL and other controls, Latin-1 and UTF-8 bytes, invalid UTF-8, and dot segments (``..``, ``%2e%2e%2f``):
each handshake is relayed with the value encoded (or its controls taken out of a header), or refused 400
before any backend is contacted, never a 500; the upstream never sees a header the client wrote into a
value, a line break in one, or a path outside the rewritten one. Through the relay (the ``websockets``
client writes the head) and the splice (the gateway's own writer).
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.rawhttp import handshake, status_of
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

POLICIES = [
    {"rewrite-uri": {"template": "/headers/{path.room}/{header.x-seg|d}?r={query.r|}", "copy_unmatched_params": True}},
    {"set-header": {"header": "X-User", "value": "{query.u|}{header.x-h|}{cookie.c|}"}},
    {"set-query-parameter": {"parameter": "tenant", "value": "{header.x-q|}"}},
]
CASES: list[tuple[str, str, bytes]] = [
    ("path-crlf", "/ws/r/a%0d%0aX-Evil:%201", b""),
    ("path-nul", "/ws/r/a%00b", b""),
    ("path-dot-dot", "/ws/r/%2e%2e", b""),
    ("path-slash", "/ws/r/a%2fb", b""),
    ("path-utf8", "/ws/r/%e2%82%ac", b""),
    ("path-not-utf8", "/ws/r/%ff%fe", b""),
    ("path-raw-latin1", "/ws/r/\xe9", b""),
    ("query-crlf", "/ws/r/a?u=a%0d%0aX-Evil:%201&r=x%0d%0ay", b""),
    ("query-nul", "/ws/r/a?u=a%00b&r=%00", b""),
    ("query-del-c1", "/ws/r/a?u=a%7f%c2%85b", b""),
    ("query-not-latin1", "/ws/r/a?u=%e2%82%ac", b""),
    ("query-not-utf8", "/ws/r/a?u=%ff&r=%ff", b""),
    ("query-raw-controls", "/ws/r/a?r=\x01\x7f", b""),
    ("header-controls", "/ws/r/a", b"X-H: a\x01b\x7fc\r\n"),
    ("header-dot-dot", "/ws/r/a", b"X-Seg: ../../admin\r\n"),
    ("header-encoded-dot-dot", "/ws/r/a", b"X-Seg: %2e%2e%2fadmin\r\n"),
    ("header-latin1", "/ws/r/a", b"X-H: caf\xe9\r\nX-Q: \xe9\x80\r\n"),
    ("header-c1", "/ws/r/a", b"X-H: a\x85X-Evil: 1\r\n"),
    ("header-utf8", "/ws/r/a", "X-H: \u20ac\r\nX-Seg: \u20ac\r\n".encode()),
    ("header-nul", "/ws/r/a", b"X-Q: a\x00b\r\n"),
    ("cookie-encoded-crlf", "/ws/r/a", b"Cookie: c=a%0d%0aX-Evil: 1\r\n"),
    ("cookie-raw-control", "/ws/r/a", b"Cookie: c=a\x0bb\r\n"),
]


_CLIENTS = frozenset({"x-h", "x-q", "x-seg", "cookie"})
"""The headers the client sent, which go upstream as it sent them."""


async def _answer_status(port: int, target: str, extra: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/", extra).replace(b"GET / ", b"GET " + target.encode("latin-1") + b" ", 1))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    return status_of(head)


@pytest.mark.parametrize(("target", "extra"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_a_clients_value_is_encoded_or_refused_never_injected(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, target: str, extra: bytes
) -> None:
    api = {"name": "r", "path": "/ws/r/{room}", "upstreams": [upstream_server.url("/headers")], "policies": POLICIES}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    before = len(upstream_server.handshakes)
    status = await _answer_status(server.port, target, extra)
    seen = upstream_server.handshakes[before:]
    assert status in (101, 400)
    if status == 400:
        assert seen == []  # refused before any backend
        return
    (record,) = seen
    assert "x-evil" not in record.headers
    values = [value for values in record.headers.values() for value in values]
    assert not any(c in value for value in values for c in "\r\n\x00"), record.headers
    # What the gateway wrote has no other control either; the client's own headers go as sent (obs-text:
    # 0x85 is a byte of UTF-8 too, "\u00c5" is C3 85), for an upstream that reads lines as HTTP does.
    written = [value for name in record.headers if name not in _CLIENTS for value in record.headers[name]]
    assert not any(c in value for value in written for c in "\x01\x0b\x7f\x85"), record.headers
    path = record.path.partition("?")[0]
    assert path.startswith("/headers/") and path.count("/") == 3, record.path
    assert ".." not in unquote(path).split("/"), record.path  # no dot segment, however encoded
    assert all(c.isprintable() and c != " " for c in record.path), record.path  # the request line is one line
