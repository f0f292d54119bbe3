"""Issue 13's shortcuts on a handshake's path, each held to the general path it stands in for: ``Host``
values split once, an upstream's whole answer head checked in one match, the splice's 101 headers set in
one pass, a log record's plain arguments looked at in C, list headers too short to be crowded not counted.
Each test of "the shortcut is taken" watches which Python functions run (``sys.setprofile``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers

from asgi_ws_gateway import log_redaction
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake import host_header
from asgi_ws_gateway.handshake.header_limits import check_lists
from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.passthrough import raw_upstream
from asgi_ws_gateway.passthrough.raw_upstream import _switched
from asgi_ws_gateway.server.passthrough_handover import add_headers, without_replaced
from asgi_ws_gateway.upstream.header_lists import LISTS, crowded_list
from asgi_ws_gateway.upstream.interim import UnreadableHead
from asgi_ws_gateway.upstream.response_head import MAX_HEADER_LINES, MAX_LINE, AnswerHead
from support.calls import python_calls

BROWSER = [
    (b"host", b"127.0.0.1:8000"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"),
    (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"), (b"Cookie", b"a=1"),
]  # fmt: skip


# -- Host --


_HOST_PARTS = st.sampled_from([
    "127.0.0.1", "1.2.3.4", "01.2.3.4", "127.1", "0x7f.0.0.1", "example.com", "Ex_1.", "a..b", "[::1]",
    "[::ffff:1.2.3.4]", "[fe80::1%eth0]", "[1.2.3.4]", "", ":", ":8000", ":0", ":080", ":65536", ",", " ", "%2e",
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_HOST_PARTS, max_size=3).map("".join))
def test_a_host_is_split_as_the_first_time(value: str) -> None:
    """A value split before (remembered) is split as it was worked out, and a refused one is refused each time."""
    expected = host_header._split_host(value)
    assert host_header.split_host(value) == expected
    assert host_header.split_host(value) == expected  # from the store, if it is kept there
    if expected is None:
        assert value not in host_header._SPLIT


def test_a_repeated_host_is_not_parsed_again() -> None:
    """``127.0.0.1:8000``, every handshake's: ``ipaddress`` reads it once."""
    host_header.check_host(BROWSER)
    with python_calls() as calls:
        host_header.check_host(BROWSER)
    assert not any(name.startswith("_parse") or name == "_name_or_ipv4" for name in calls)


def test_the_split_hosts_are_bounded() -> None:
    """A client's made-up hosts do not grow the store without bound; a longer one than any host is not kept."""
    for n in range(host_header._SPLIT_LIMIT * 2):
        assert host_header.split_host(f"h{n}.test:1") == (f"h{n}.test", 1)
    assert len(host_header._SPLIT) <= host_header._SPLIT_LIMIT
    long = "a" * 63 + ("." + "a" * 63) * 4
    assert host_header.split_host(long) == (long, None)
    assert long not in host_header._SPLIT


# -- the upstream's answer head --


def outcome(feeds: list[bytes], *, whole: bool) -> tuple[Any, ...]:
    """What an AnswerHead makes of the bytes fed so: its fields, or the error it raised."""
    head, buffer = AnswerHead(), bytearray()
    if not whole:
        head._whole = lambda *_: False  # type: ignore[method-assign]
    try:
        done = False
        for chunk in feeds:
            buffer += chunk
            done = head.feed(buffer)
    except UnreadableHead as exc:
        return (type(exc), str(exc))
    return (done, head.end, head.status, head._reason, head._line_end, head._lines, bytes(buffer))


_HEAD_LINES = st.sampled_from([
    b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.0 101 x", b"HTTP/1.1 200 OK", b"HTTP/1.1 0101 x", b"HTTP/1.1 101",
    b"HTTP/1.1 100 Continue\r\n", b"Upgrade: websocket", b"Connection: Upgrade", b"X-Tab:\ta\tb", b"X-Hi: \xe9",
    b"Bad Name: v", b"X-Nul: a\x00", b"X-Bare: a\rb", b"X-LF: a\nb", b": empty", b"X-Long: " + b"v" * (MAX_LINE - 20),
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_HEAD_LINES, min_size=1, max_size=6),
    st.integers(0, MAX_HEADER_LINES + 1),
    st.binary(max_size=4),
    st.integers(1, 64),
)
def test_a_whole_head_is_read_as_line_by_line(lines: list[bytes], padding: int, after: bytes, step: int) -> None:
    """Whatever the head (interim responses, bad lines, too many lines, a line near the limit) and however
    it arrives, the answer is read as the line-by-line check reads it: the same fields, or the same error."""
    data = b"\r\n".join([*lines, *[b"X-P: %d" % n for n in range(padding)]]) + b"\r\n\r\n" + after
    assert outcome([data], whole=True) == outcome([data], whole=False)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    assert outcome(chunks, whole=True) == outcome(chunks, whole=False)


def test_a_plain_answer_is_checked_in_one_match() -> None:
    """A 101 that arrives whole is not read line by line."""
    head = AnswerHead()
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with python_calls() as calls:
        assert head.feed(bytearray(data))
    assert "_line" not in calls
    assert (head.status, head._lines, head.as_http11(data)) == (101, 2, data)


# -- the 101 the splice's handover sends --


def accepted_headers(extensions: bool) -> Headers:
    """The headers of websockets' 101, as ``ServerProtocol.accept`` sets them."""
    headers = Headers()
    headers["Date"] = "Sat, 05 Dec 2026 13:00:00 GMT"
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    headers["Sec-WebSocket-Accept"] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    if extensions:
        headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
    return headers


def handed_over_before(headers: Headers, added: list[Any]) -> None:
    """The handover's headers as set before the shortcut: deleted and set one at a time."""
    del headers["Date"]
    if "Sec-WebSocket-Extensions" in headers:
        del headers["Sec-WebSocket-Extensions"]
    for name, value in added:
        headers[name.decode("latin-1")] = value.decode("latin-1")


_ADDED_NAMES = st.sampled_from([b"date", b"server", b"Date", b"x-a", b"Set-Cookie", b"x\nb", b"\xc0", "str"])
_ADDED_VALUES = st.sampled_from([b"v", b"a b", b"\tv", b"\xe9", b"", b"a\nb", b"a\rb", b"\x00", b"\x7f", "str"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_ADDED_NAMES, _ADDED_VALUES), max_size=5), st.booleans())
def test_the_handover_headers_are_those_set_one_by_one(added: list[Any], extensions: bool) -> None:
    """The 101's headers, Date and the extensions taken out and the server's and the application's added in
    one pass, are those deleted and set one at a time: the same list, the same table, or the same error."""
    fast, slow = accepted_headers(extensions), accepted_headers(extensions)

    def handed_over(headers: Headers, added: list[Any]) -> None:
        without_replaced(headers)
        add_headers(headers, added)

    errors: list[type[Exception] | None] = []
    changes: list[tuple[Callable[[Headers, list[Any]], None], Headers]] = [
        (handed_over, fast),
        (handed_over_before, slow),
    ]
    for change, headers in changes:
        try:
            change(headers, added)
        except Exception as exc:  # compared: the same type either way
            errors.append(type(exc))
        else:
            errors.append(None)
    assert errors[0] == errors[1]
    if errors[0] is None:
        assert (fast._list, fast._dict) == (slow._list, slow._dict)


def test_without_a_date_the_handover_fails_as_before() -> None:
    """websockets always sets Date; were it missing, the KeyError of ``del headers["Date"]`` stays."""
    headers = accepted_headers(False)
    del headers["Date"]
    with pytest.raises(KeyError):
        without_replaced(headers)


def test_the_handover_headers_take_no_call_per_header() -> None:
    """The server's Date and Server and the upstream's headers go in without ``Headers.__setitem__``."""
    headers = accepted_headers(True)
    with python_calls() as calls:
        without_replaced(headers)
        add_headers(headers, [(b"date", b"Sat, 05 Dec 2026 13:00:01 GMT"), (b"server", b"uvicorn"), (b"x-a", b"1")])
    assert "__setitem__" not in calls and "__delitem__" not in calls
    assert [name for name, _ in headers.raw_items()] == [
        "Upgrade", "Connection", "Sec-WebSocket-Accept", "date", "server", "x-a",
    ]  # fmt: skip


# -- the upstream's 101 --


def switched_before(answer: dict[str, list[str]], expected: str) -> bool:
    """The 101's check as it was written before, with its two comprehensions."""
    connection = {token.strip().lower() for value in answer.get("connection", ()) for token in value.split(",")}
    return not (
        [value.lower() for value in answer.get("upgrade", ())] != ["websocket"]
        or "upgrade" not in connection
        or answer.get("sec-websocket-accept") != [expected]
    )


_TOKENS = st.sampled_from(["Upgrade", "upgrade", " UPGRADE ", "keep-alive", "", " ", "\t", "upgrade2", "websocket"])
_LINES = st.lists(st.lists(_TOKENS, max_size=3).map(",".join), max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "connection": _LINES,
            "upgrade": st.lists(st.sampled_from(["websocket", "WebSocket", "h2c", " websocket", ""]), max_size=2),
            "sec-websocket-accept": st.lists(st.sampled_from(["k", "K", "k "]), max_size=2),
        },
    )
)
def test_the_101_is_judged_as_before(answer: dict[str, list[str]]) -> None:
    """Any Connection lines (tokens in any case, blanks, empty elements), Upgrade and Accept values: the
    101 passes exactly when it passed before."""
    assert _switched(answer, "k") == switched_before(answer, "k")


_OFFER_PARTS = st.sampled_from([
    "permessage-deflate", "permessage-deflate; client_max_window_bits", "x-webkit-deflate-frame", ",", ", ",
    '; a="1,2"', "; server_max_window_bits=10", ";", "=",
])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_OFFER_PARTS, max_size=4).map("".join), max_size=3))
def test_an_offer_read_before_is_read_as_the_first_time(lines: list[str]) -> None:
    """A client's offer is forwarded as it was worked out, whether read before (remembered) or not."""
    scope = {"headers": [(b"sec-websocket-extensions", line.encode()) for line in lines]}
    expected = raw_upstream._deflate_offer(", ".join(lines)) if lines else None
    assert raw_upstream.deflate_offer(scope) == expected
    assert raw_upstream.deflate_offer(scope) == expected


def test_a_repeated_offer_is_not_read_again() -> None:
    """A browser's offer, the second time: no Python step per element."""
    scope = {"headers": [(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")]}
    raw_upstream.deflate_offer(scope)
    with python_calls() as calls:
        assert raw_upstream.deflate_offer(scope) == "permessage-deflate; client_max_window_bits"
    assert "<genexpr>" not in calls


# -- a log record's arguments --


class Refused(Exception):
    pass


class Text(str):
    pass


_ARGS = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.integers(),
        st.floats(allow_nan=False),
        st.none(),
        st.booleans(),
        st.binary(max_size=4),
        st.sampled_from([Refused("token=abc"), ValueError("Bearer abc"), Text("token=abc"), ("x", 1)]),
    ),
    max_size=6,
)


def filtered(record_args: tuple[object, ...], filter_: Callable[[logging.LogRecord], object]) -> tuple[object, ...]:
    record = logging.LogRecord("asgi_ws_gateway.access", logging.INFO, __file__, 1,
                               " ".join(["%s"] * len(record_args)), record_args, None)  # fmt: skip
    filter_(record)
    return (record.msg, record.args, record.getMessage())


@settings(max_examples=300, deadline=None)
@given(_ARGS.map(tuple))
def test_a_record_is_redacted_as_when_each_argument_was_looked_at(args: tuple[object, ...]) -> None:
    """A record's plain arguments, looked at in C, are redacted as when each was checked for an exception."""
    general = RedactingFilter()
    plain = log_redaction._PLAIN_ARGS
    try:
        log_redaction._PLAIN_ARGS = frozenset()  # every record the general way
        expected = filtered(args, general.filter)
    finally:
        log_redaction._PLAIN_ARGS = plain
    assert filtered(args, RedactingFilter().filter) == expected


def test_an_exception_among_the_arguments_is_redacted_as_free_text() -> None:
    """``token=abc`` in an exception's message is a credential, whatever else the line has."""
    message = filtered(("a", 1, None, Refused("token=abc")), RedactingFilter().filter)[2]
    assert isinstance(message, str) and "abc" not in message


def test_plain_arguments_are_not_looked_at_one_by_one() -> None:
    """An access line's dozen plain arguments take no Python step per argument."""
    record = logging.LogRecord("asgi_ws_gateway.access", logging.INFO, __file__, 1, "%s %s %s %d %s %.1f",
                               ("1.2.3.4", "GET", "/ws", 101, None, 1.5), None)  # fmt: skip
    with python_calls() as calls:
        RedactingFilter().filter(record)
    assert "<genexpr>" not in calls


# -- list headers' items --


_LIST_LINE = st.tuples(
    st.sampled_from([b"connection", b"upgrade", b"sec-websocket-protocol", b"sec-websocket-extensions", b"host"]),
    st.lists(st.sampled_from([b",", b";", b"a", b" ", b"\xe9", b'"']), max_size=40).map(b"".join),
)


def _crowded_as_counted(scope: dict[str, Any]) -> bool:
    """The general path: every list header's items counted (``crowded_list``)."""
    lines: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        if name.decode() in LISTS:
            lines.setdefault(name.decode(), []).append(value.decode("latin-1"))
    if "sec-websocket-protocol" not in lines and "subprotocols" in scope:
        lines["sec-websocket-protocol"] = scope["subprotocols"]
    return crowded_list(lambda lowered: lines.get(lowered, ())) is not None


@settings(max_examples=300)
@given(
    st.lists(_LIST_LINE, max_size=6), st.none() | st.lists(st.sampled_from(["a", "a,b", ",", "x;y", ""]), max_size=40)
)
def test_list_headers_left_uncounted_hold_no_more_items_than_counted(
    headers: list[tuple[bytes, bytes]], subprotocols: list[str] | None
) -> None:
    """check_lists counts no item when the list headers' characters and lines together are within
    MAX_ITEMS (none can hold more items than that): it refuses exactly what counting every item refuses."""
    scope: dict[str, Any] = {"headers": headers}
    if subprotocols is not None:
        scope["subprotocols"] = subprotocols
    try:
        check_lists(scope)
    except HandshakeDenied:
        refused = True
    else:
        refused = False
    assert refused == _crowded_as_counted(scope)


def test_a_handshake_s_list_headers_are_not_counted() -> None:
    """``Connection: Upgrade`` and ``Upgrade: websocket``: no item counted (no call to crowded_list)."""
    with python_calls() as calls:
        check_lists({"headers": BROWSER, "subprotocols": []})
    assert "crowded_list" not in calls


@pytest.fixture(autouse=True)
def _fresh_stores() -> Iterator[None]:
    """The module stores as they were: a test's values do not change another's path."""
    hosts, offers = dict(host_header._SPLIT), dict(raw_upstream._OFFERS)
    yield
    raw_upstream._OFFERS.clear()
    raw_upstream._OFFERS.update(offers)
    host_header._SPLIT.clear()
    host_header._SPLIT.update(hosts)
