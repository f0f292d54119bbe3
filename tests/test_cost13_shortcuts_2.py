"""Issue 13's shortcuts on a handshake's path, second round, each held to the general path it stands in for:
a plain upgrade request accepted without websockets' general parsers (``server.plain_accept``), its 101's
``Date`` formatted once per second. Each test of "the shortcut is taken" watches which Python functions run
(``sys.setprofile``), as ``test_cost13_shortcuts.py`` does."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from asgi_ws_gateway.server import plain_accept as plain_module
from asgi_ws_gateway.server import server_protocol
from asgi_ws_gateway.server.plain_accept import http_date, plain_accept
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from support.calls import python_calls

PLAIN = [
    ("Host", "127.0.0.1:8000"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
    ("User-Agent", "Python/3.11 websockets/17.4"),
]  # fmt: skip
NOW = 1_764_940_800.25  # a fixed instant for both ways: their Date values are compared as they are


@contextmanager
def clock_at(now: float) -> Iterator[None]:
    """``time.time()`` answers ``now`` (formatdate and the shortcut read it the same way)."""
    real = time.time
    time.time = lambda: now
    try:
        yield
    finally:
        time.time = real


def uvicorns_protocol(setup: str = "uvicorn") -> _ServerProtocol:
    """The client leg's websockets protocol as uvicorn builds it (then made the gateway's), or set up otherwise."""
    options: dict[str, Any] = {
        "extensions": [ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12,
                                                      compress_settings={"memLevel": 5})],
        "max_size": 16 * 1024 * 1024,
        "logger": logging.getLogger("uvicorn.error"),
    }  # fmt: skip
    if setup == "origins":
        options["origins"] = ["https://a.example", None]
    elif setup == "subprotocols":
        options["subprotocols"] = ["chat"]
    elif setup == "select":
        options["select_subprotocol"] = lambda conn, offered: None
    elif setup == "bare":
        options["extensions"] = None
    conn = ServerProtocol(**options)
    conn.__class__ = _ServerProtocol
    assert isinstance(conn, _ServerProtocol)
    return conn


def outcome(conn: _ServerProtocol, request: Request, *, shortcut: bool) -> tuple[Any, ...]:
    """What ``conn.accept(request)`` answers and leaves on ``conn``, with the shortcut or without it."""
    conn.origin, conn.extensions, conn.subprotocol = "before", [], "before"  # type: ignore[assignment]
    names = vars(server_protocol)  # the name the protocol's accept calls
    taken = names["plain_accept"]
    if not shortcut:
        names["plain_accept"] = lambda conn, request: None
    try:
        with clock_at(NOW):
            response = conn.accept(request)
    finally:
        names["plain_accept"] = taken
    exc = conn.handshake_exc
    return (
        response.status_code, response.reason_phrase, response.body, response.headers._list, response.headers._dict,
        conn.accept_called, getattr(conn, "origin", "unset"), repr(getattr(conn, "extensions", "unset")),
        getattr(conn, "subprotocol", "unset"), type(exc), str(exc), type(request._exception),
    )  # fmt: skip


_VALUES = {
    "Connection": ["Upgrade", "upgrade", "UPGRADE", "keep-alive, Upgrade", "close", "Upgrade ", "Up grade", ""],
    "Upgrade": ["websocket", "WebSocket", "websocket, h2c", "h2c", "WEBSOC\u212aET", "websocket/13", " websocket"],
    "Sec-WebSocket-Key": [
        "dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZR==",
        "dGhlIHNhbXBsZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZQ==\n",
        "dGhlIHNhbXBsZSBub25jZ Q=",
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "////////////////////////",
        "dGhl\u00e9HNhbXBsZSBub25jZQ==",
    ],
    "Sec-WebSocket-Version": ["13", "8", "13, 8", " 13", ""],
    "Origin": ["https://a.example", "https://b.example", "null", ""],
    "Sec-WebSocket-Extensions": ["permessage-deflate", "permessage-deflate; client_max_window_bits", "", "x"],
    "Sec-WebSocket-Protocol": ["chat", "chat, superchat", "", ",,", "ch@t", "a b"],
    "Host": ["127.0.0.1:8000"],
}
_HEADER = st.sampled_from(sorted(_VALUES)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(_VALUES[name]))
)
_HEADERS = st.lists(_HEADER, max_size=9)
_CASED = st.sampled_from([str, str.lower, str.upper])


def request_of(headers: list[tuple[str, str]], method: str = "GET", protocol: str = "HTTP/1.1") -> Request:
    table = Headers()
    for name, value in headers:
        table.set_insecure(name, value)  # as the parsers set them: unchecked
    return Request("/ws/echo?x=1", table, method, protocol)


def _kept_dropped_or_changed(name: str, value: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    """One of the plain request's headers: mostly as it is; else left out, another value, or twice."""
    other = st.sampled_from(_VALUES.get(name, [value]))
    changed: st.SearchStrategy[list[tuple[str, str]]] = st.one_of(
        st.just([]),
        other.map(lambda changed: [(name, changed)]),
        other.map(lambda changed: [(name, value), (name, changed)]),
    )
    return st.integers(0, 9).flatmap(lambda roll: st.just([(name, value)]) if roll < 8 else changed)


_NEAR_PLAIN = st.tuples(
    *(_kept_dropped_or_changed(name, value) for name, value in PLAIN), st.lists(_HEADER, max_size=2)
).flatmap(lambda parts: st.permutations([header for part in parts for header in part]))


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(_HEADERS, _NEAR_PLAIN, _NEAR_PLAIN),
    _CASED,
    st.sampled_from(["GET", "GET", "GET", "POST"]),
    st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
    st.sampled_from(["uvicorn", "uvicorn", "uvicorn", "bare", "origins", "subprotocols", "select"]),
)
@example(PLAIN, str, "GET", "HTTP/1.1", "uvicorn")
def test_an_upgrade_request_is_accepted_as_websockets_accepts_it(
    headers: list[tuple[str, str]], cased: Any, method: str, protocol: str, setup: str
) -> None:
    """Whatever the request (each header missing, repeated, malformed, in any case; another method or
    protocol) and however the protocol is set up: the same response, headers and all, the same refusal,
    and the same state left on the protocol as websockets' own ``accept`` (and the gateway's version header)."""
    headers = [(cased(name), value) for name, value in headers]
    shortcut = outcome(uvicorns_protocol(setup), request_of(headers, method, protocol), shortcut=True)
    general = outcome(uvicorns_protocol(setup), request_of(headers, method, protocol), shortcut=False)
    assert shortcut == general


def _one_change_from_plain() -> Iterator[list[tuple[str, str]]]:
    """The plain request with one header left out, or one of its values (or any other header) changed or added."""
    for index in range(len(PLAIN)):
        yield PLAIN[:index] + PLAIN[index + 1 :]
    for name, values in _VALUES.items():
        for value in values:
            kept = [(n, v) for n, v in PLAIN if n != name]
            yield [*kept, (name, value)]
            yield [*PLAIN, (name, value)]


@pytest.mark.parametrize("setup", ["uvicorn", "bare"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_change_to_the_plain_request_is_answered_as_websockets_answers_it(method: str, setup: str) -> None:
    """Every request one change away from the plain one (as above, exhaustively): the same answer."""
    for headers in _one_change_from_plain():
        for protocol in ("HTTP/1.1", "HTTP/1.0"):
            shortcut = outcome(uvicorns_protocol(setup), request_of(headers, method, protocol), shortcut=True)
            general = outcome(uvicorns_protocol(setup), request_of(headers, method, protocol), shortcut=False)
            assert shortcut == general, headers


def test_the_plain_request_takes_no_general_parser() -> None:
    """The bench's request (and a browser's without an extension offer): no ``process_request``, no
    ``Headers.__setitem__``, no ``formatdate`` once this second's Date is formatted."""
    for _ in range(3):  # again if the clock crossed a second in between (the new second's Date is formatted)
        uvicorns_protocol().accept(request_of(PLAIN))
        with python_calls() as calls:
            response = uvicorns_protocol().accept(request_of(PLAIN))
        if "formatdate" not in calls:
            break
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert not {"process_request", "__setitem__", "parse_connection", "formatdate"} & set(calls)


def test_an_offer_takes_the_general_way() -> None:
    """An extension offer (a browser's) is negotiated by websockets, as before."""
    conn = uvicorns_protocol()
    with python_calls() as calls:
        response = conn.accept(request_of([*PLAIN, ("Sec-WebSocket-Extensions", "permessage-deflate")]))
    assert "process_request" in calls
    assert response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


def test_another_protocol_class_takes_the_general_way() -> None:
    """A class whose request checks are not websockets' (a subclass's own ``process_request``) is not shortcut."""

    class Checked(_ServerProtocol):
        def process_request(self, request: Request) -> tuple[str, str | None, str | None]:
            raise ValueError("refused here")

    conn = uvicorns_protocol()
    conn.__class__ = Checked
    assert plain_accept(conn, request_of(PLAIN)) is None
    assert conn.accept(request_of(PLAIN)).status_code == 500


def test_the_shortcuts_response_is_websockets_type() -> None:
    response = plain_accept(uvicorns_protocol(), request_of(PLAIN))
    assert isinstance(response, Response) and isinstance(response.headers, Headers)
    assert response.headers.serialize().startswith(b"Date: ")
    assert response.headers.serialize().endswith(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


# -- the Date, once per second --


_INSTANTS = st.one_of(
    st.floats(0, 4e9),
    st.integers(0, 4_000_000_000).flatmap(
        lambda s: st.sampled_from([s + 0.0, s + 0.5, s + 0.998, s + 0.999, s + 0.9995, s + 0.9999995, s + 1 - 1e-7])
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_INSTANTS, min_size=1, max_size=4))
def test_a_date_is_formatted_as_formatdate_formats_it(instants: list[float]) -> None:
    """Any instant (whole seconds, near the end of a second, where the microseconds round up), asked for
    once or again: the text ``formatdate`` gives for it."""
    for now in [*instants, *instants]:
        assert http_date(now) == formatdate(now, usegmt=True)


def test_a_date_is_formatted_once_per_second() -> None:
    expected = http_date(NOW)
    with python_calls() as calls:
        again = http_date(NOW + 0.5)
    assert again == expected == formatdate(NOW + 0.5, usegmt=True)
    assert "formatdate" not in calls
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", http_date(time.time()))


@pytest.fixture(autouse=True)
def _fresh_date() -> Iterator[None]:
    """The remembered Date as it was: a test's instants do not change another's path."""
    kept = plain_module._date
    yield
    plain_module._date = kept
