"""Redaction runs to the end of what it redacts: no byte a client chooses ends a query, fragment,
userinfo or header value early and leaves what follows it in clear."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import log_redaction
from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.redact import REDACTED, redact_text
from asgi_ws_gateway.telemetry.access import AccessLog

# Every byte a request target may carry (0x21-0x7e), non-ASCII text, and percent-escapes of anything.
_TARGET_CHARS = st.one_of(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    st.characters(min_codepoint=0x80, codec="utf-8"),
    st.builds(lambda b: f"%{b:02X}", st.integers(0, 255)),
)
_VALUE = st.lists(_TARGET_CHARS, min_size=1, max_size=12).map("".join).filter(lambda v: "&" not in v)


def _filtered(msg: str, *args: object, name: str = "uvicorn.error") -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    assert RedactingFilter().filter(record)
    return record.getMessage()


def _lines(target: str) -> dict[str, str]:
    """The lines a target reaches under ``run`` and plain uvicorn: access, [accepted], websockets' dump."""
    return {
        "access": _filtered('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", target, "1.1", 404, name="uvicorn.access"),
        "accepted": _filtered('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", target),
        "websockets": _filtered("> GET %s HTTP/1.1", target, name="websockets.client"),
        "text": redact_text(f"GET {target} HTTP/1.1"),
    }


@pytest.mark.parametrize("byte", range(0x21, 0x7F))
def test_no_byte_in_a_query_value_ends_its_redaction(byte: int) -> None:
    """The attack's probe: ``?x=A<byte>&apikey=SECRET`` for every visible byte; the key never shows."""
    for kind, line in _lines(f"/nope?x=A{chr(byte)}&apikey=SECRET{byte:02X}Z").items():
        assert f"SECRET{byte:02X}Z" not in line, (kind, line)


@given(first=_VALUE, second=_VALUE)
def test_every_query_value_is_redacted_whatever_it_holds(first: str, second: str) -> None:
    """Any two values (quotes, brackets, non-ASCII, escapes): the query shows names and REDACTED only."""
    lines = _lines(f"/ws/echo?user={first}&password={second}")
    expected = "/ws/echo?user=REDACTED&password=REDACTED"
    assert lines["access"] == f'127.0.0.1:1 - "GET {expected} HTTP/1.1" 404'
    assert lines["accepted"] == f'127.0.0.1:1 - "WebSocket {expected}" [accepted]'  # its quote kept
    assert lines["websockets"] == f"> GET {expected} HTTP/1.1"
    assert lines["text"] == f"GET {expected} HTTP/1.1"


def test_redaction_is_idempotent_on_a_quoted_field() -> None:
    """A line redacted twice (a record through two filters) keeps the quote after its query."""
    for line in ('127.0.0.1:1 - "WebSocket /ws?a=REDACTED&REDACTED" [accepted]', '1 - "WebSocket /a#REDACTED" 101'):
        assert redact_text(line) == line


@given(value=st.text(st.characters(exclude_characters="\r\n?#", codec="utf-8"), min_size=1))
def test_a_header_dump_value_is_redacted_whole(value: str) -> None:
    """``Name: value`` runs to the end of the line; a repr's quoted value to its closing quote.

    (A ``?`` or ``#`` in the value starts a query or fragment, redacted to the next space: not here.)
    """
    line = redact_text(f"< Cookie: {value}")
    assert line.startswith("< Cookie:") and line.endswith(REDACTED) and not line[9:-8].strip()  # separator only
    quote = repr(value)[0]
    assert redact_text(str([("authorization", value), ("host", "h")])) == (
        f"[('authorization', {quote}{REDACTED}{quote}), ('host', 'h')]"
    )
    quote = repr(value.encode())[1]
    assert redact_text(str([(b"x-api-key", value.encode())])) == f"[(b'x-api-key', b{quote}{REDACTED}{quote})]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('< Cookie: pref="dark"; session=SECRET', "< Cookie: REDACTED"),
        ('< x-api-key: "k" SECRET', "< x-api-key: REDACTED"),
        ('{"authorization": "Bearer \\"SECRET", "a": 1}', '{"authorization": "REDACTED", "a": 1}'),
        ("[(b'cookie', b\"a'SECRET\")]", "[(b'cookie', b\"REDACTED\")]"),
        ("{'authorization': \"Bearer O'SECRET\"}", "{'authorization': \"REDACTED\"}"),
        ("ws://u:p'SECRET@h/x", "ws://u:REDACTED@h/x"),
        ('ws://u:p"SECRET@h/x', "ws://u:REDACTED@h/x"),
        ("ws://us%65r:SECRET@h/x", "ws://us%65r:REDACTED@h/x"),
        ("ws://a@b:SECRET@h/x", "ws://a@b:REDACTED@h/x"),
        ("GET http%3A//u%3Ap%40SECRET%40h/x", "GET http%3A//u%3AREDACTED%40h/x"),
        ("ws://SECRET'x@h/x", "ws://REDACTED@h/x"),
        ("GET /cb#access_token=SEC'RET&x=1 HTTP/1.1", "GET /cb#access_token=REDACTED&x=REDACTED HTTP/1.1"),
        ("GET /cb?a=1#b='SECRET HTTP/1.1", "GET /cb?a=REDACTED HTTP/1.1"),
    ],
)
def test_a_quote_or_escape_ends_no_other_redaction(text: str, expected: str) -> None:
    """Header values, URL userinfo and fragments: the same class of early stop, closed."""
    assert redact_text(text) == expected


def test_ordinary_text_keeps_its_words() -> None:
    """A question mark in prose redacts nothing after a space; a query parameter named like a header
    keeps the rest of its line."""
    assert redact_text("is it valid? yes") == "is it valid? yes"
    line = '127.0.0.1:1 - "GET /ws?subscription-key=k&cookie=c HTTP/1.1" 401'
    assert redact_text(line) == '127.0.0.1:1 - "GET /ws?subscription-key=REDACTED&cookie=REDACTED HTTP/1.1" 401'


def test_a_json_access_line_is_redacted_field_by_field(caplog: pytest.LogCaptureFixture) -> None:
    """A ``?`` in a path (``%3F``) or a close reason redacts that field's values, not the fields after
    it: the line stays JSON (a filter reading it as one text would redact to the next space)."""
    log_redaction.install()
    reason = "see /cb?access_token=SECRET#k=v"
    fields = {"client": "10.0.0.1:5", "path": "/ws/a?x=1", "api": "chat", "status": 101, "closed_by": "client",
              "close_code": 4000, "close_reason": reason, "backend": "ws://up/x"}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="asgi_ws_gateway.access"):
        AccessLog("json").write(fields, None)
    (line,) = [r.getMessage() for r in caplog.records]
    record = json.loads(line)
    assert (record["path"], record["close_reason"]) == ("/ws/a?x=REDACTED", "see /cb?access_token=REDACTED")
    assert record["backend"] == "ws://up/x" and "SECRET" not in line
