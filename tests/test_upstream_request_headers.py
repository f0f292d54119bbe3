"""Which of a client's headers cross to the upstream: the same answer for a name seen before (pure logic)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway._types import Scope
from asgi_ws_gateway.upstream import headers
from asgi_ws_gateway.upstream.headers import (
    HOP_BY_HOP,
    forwarding_headers,
    replaced_forwarding_header,
    upstream_headers,
)

_NAMES = st.sampled_from([
    b"host", b"Host", b"user-agent", b"User-Agent", b"x-forwarded-for", b"X-Forwarded-Host", b"forwarded",
    b"x-real-ip", b"connection", b"Sec-WebSocket-Key", b"authorization", b"x-custom", b"", b"caf\xe9",
    b"proxy-authorization", b"expect", b"true-client-ip", b"Remote-User", b"x-ssl-client-cert", b"X-Forwarded-User",
    b"remote-addr", b"x-" + b"n" * 100,
])  # fmt: skip


def _as_before(scope: Scope, trust_forwarded: bool) -> list[tuple[str, str]]:
    """upstream_headers as it read each name afresh."""
    kept = []
    for name_b, value_b in scope["headers"]:
        name = name_b.decode("latin-1").lower()
        if name not in HOP_BY_HOP and not replaced_forwarding_header(name, trust_forwarded=trust_forwarded):
            kept.append((name, value_b.decode("latin-1")))
    return [*kept, *forwarding_headers(scope, trust_forwarded=trust_forwarded), ("via", "1.1 asgi-ws-gateway")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.binary(max_size=4)), max_size=8), st.booleans())
def test_a_remembered_name_crosses_as_it_did_the_first_time(headers: list[tuple[bytes, bytes]], trust: bool) -> None:
    scope: Scope = {"type": "websocket", "headers": headers, "client": ("10.0.0.1", 5), "scheme": "ws"}
    for _ in range(2):
        assert upstream_headers(scope, trust_forwarded=trust) == _as_before(scope, trust)


def test_the_remembered_names_are_bounded() -> None:
    for n in range(600):
        upstream_headers({"headers": [(b"x-%d" % n, b"v")]}, trust_forwarded=False)
    upstream_headers({"headers": [(b"x-" + b"n" * 100, b"v")]}, trust_forwarded=False)
    known = headers._CROSSING[False]
    assert len(known) <= headers._CROSSING_LIMIT and b"x-" + b"n" * 100 not in known
