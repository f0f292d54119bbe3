"""A client's text meets redaction: every pattern reads it in linear time, and redacts what it did.

Redaction runs on the event loop for every handshake (the path, the User-Agent, the Host) and for
every log line. A pattern that rescans the rest of the text from each of many starting points costs
the square of the text's length: ``"# " + "=/" * 4000`` took 150-200 ms in ``redact_text``, a
non-ASCII line with a long run of letters and ``subscription-key`` at its end 1 s for 8 KB.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway import redact
from asgi_ws_gateway.config import fields as config_fields
from asgi_ws_gateway.redact import (
    REDACTED,
    patterns,
    printable,
    printable_json,
    redact_free_text,
    redact_path,
    redact_text,
)
from asgi_ws_gateway.redact import text as text_redaction
from asgi_ws_gateway.telemetry import access, values

# Each of these took minutes (quadratic: 150 ms to 1 s at 8 KB, times 2,500 at 400 KB); linear, each
# takes some milliseconds. The timeout guards against a hang; nothing here measures speed.
SIZE = 400_000
QUADRATIC_BEFORE = {
    "fragment-after-slashes": "# " + "=/" * (SIZE // 2),
    "fragment-quoted-slashes": "#@ " + "'/" * (SIZE // 2),
    "jwt-first-segments": "eyJ" * (SIZE // 3),
    "jwt-after-two-segments": "eyJaa.eyJbb." + "eyJ" * (SIZE // 3),
    "subscription-key-after-letters": "a" * SIZE + " subscription-key",
    "letters-in-non-ascii-text": "é" + "a" * SIZE,
    "path-of-letters-ending-in-subscription-key": "/ws/" + "a" * SIZE + "subscription-key",
    "handshake-path": unquote("/ws/x%23%20" + "%27%2F" * (SIZE // 2)),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", QUADRATIC_BEFORE.values(), ids=QUADRATIC_BEFORE.keys())
def test_redaction_reads_a_crafted_text_in_linear_time(text: str) -> None:
    """Each text made a pattern restart at every few characters and read to the end again."""
    for function in (redact_text, redact_free_text, redact_path):
        once = function(text)
        assert function(once) == once  # and a second pass finds nothing left


# The patterns as they were (quadratic): the linear ones must redact exactly what these did.
_OLD_FRAGMENT = re.compile(r"((?:^|(?<=[\s\"'(\[=]))(?:[A-Za-z][A-Za-z0-9+.-]*:)?/[^ \r\n#?]*)#([^ \r\n]*)")
_OLD_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_OLD_SUBSCRIPTION_KEY = re.compile(r"[a-z-]*subscription-key", re.IGNORECASE)

# Texts built of the pieces these patterns turn on.
_PIECES = st.sampled_from(["/", "#", "?", "=", "'", '"', " ", "\n", "a", "x:", "ws:", "eyJ", "eyJab", ".", "b", "-"])
_TEXTS = st.lists(_PIECES, max_size=30).map("".join)
_NAME_PIECES = ["a", "-", "subscription-key", "Sub", "x", " ", ":", "=", "é", "\u017f"]  # long s: folds to s
_NAMES = st.lists(st.sampled_from(_NAME_PIECES), max_size=12)


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_the_linear_fragment_pattern_redacts_what_the_old_one_did(text: str) -> None:
    assert patterns._FRAGMENT_IN_TEXT.sub(patterns._redacted_fragment, text) == _OLD_FRAGMENT.sub(
        lambda m: f"{m[1]}#{patterns._redacted_parameters(m[2])}", text
    )


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_the_linear_jwt_pattern_redacts_what_the_old_one_did(text: str) -> None:
    assert patterns._JWT.sub(patterns._redacted_jwt, text) == _OLD_JWT.sub(REDACTED, text)


@settings(max_examples=500, deadline=None)
@given(_NAMES.map("".join), st.sampled_from([": SECRET", "='SECRET'", " = SECRET"]))
def test_a_subscription_key_header_is_redacted_where_the_old_pattern_redacted_it(name: str, value: str) -> None:
    old = re.compile(text_redaction._HEADER_IN_TEXT.pattern.replace("(?<![a-z-])", ""), re.IGNORECASE)
    text = name + value
    assert text_redaction._HEADER_IN_TEXT.sub(patterns._redacted_header, text) == old.sub(
        patterns._redacted_header, text
    )


_OLD_TRAILING_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?\Z")


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_a_jwt_cut_at_the_scanned_prefix_is_redacted_as_the_old_pattern_did(text: str) -> None:
    assert values._without_trailing_jwt(text) == _OLD_TRAILING_JWT.sub(REDACTED, text)


@pytest.mark.timeout(60)
def test_a_value_whose_scanned_prefix_ends_in_jwt_pieces_is_read_once() -> None:
    """``"eyJ" * 340 + "..."`` at the end of the 1,024 characters read took 12 ms per value (User-Agent,
    Host, subject: each handshake); 10,000 values took two minutes, some milliseconds now."""
    value = "eyJ" * 340 + "..." + "x" * 2000
    for _ in range(10_000):
        assert values.client_text(value).startswith("eyJeyJ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('close token="s3cret"', 'close token="REDACTED"'),
        ("close token='s3cret'", "close token='REDACTED'"),
        ('{"token": "s3cret"}', '{"token":"REDACTED"}'),
        ('{"token": "s3 \\"cr\\" et", "room": "a"}', '{"token":"REDACTED", "room": "a"}'),  # escapes, spaces
        ("token: s3cret", "token:REDACTED"),
        ('"api_key":"s3cret"', '"api_key":"REDACTED"'),
        ("auth: Bearer abc", "auth:REDACTED REDACTED"),  # the scheme before the pair: abc stayed
        ("credentials: Basic QWxhZGRpbjpvcGVu", "credentials:REDACTED REDACTED"),
        ("token=Bearer abc", "token=REDACTED REDACTED"),
        ('password="no closing quote', 'password="REDACTED'),
        ("x token=(abc def) y", "x token=REDACTED y"),
        ('Bearer "abc def"', 'Bearer "REDACTED"'),
        ("Bearer 'abc'", "Bearer 'REDACTED'"),
        ('curl Basic "dXNlcjpwYXNzd29yZA=="', "curl Basic REDACTED"),
        ('user="a token=s3cret"', 'user="a token=REDACTED"'),  # a pair inside another's value
        ("user: token=s3cret", "user: token=REDACTED"),
        ('{"msg": "bye token=\\"s3cret\\""}', '{"msg": "bye token=REDACTED"}'),
        ('{"auth": {"token": "s3cret"}}', '{"auth": {"token":"REDACTED"}}'),
        ("Authorization: Bearer s3cret", "Authorization: REDACTED"),  # redact_text's, kept as it wrote it
    ],
)
def test_a_quoted_or_colon_separated_credential_in_free_text_is_redacted(text: str, expected: str) -> None:
    """A close reason, User-Agent or subject quoting its value (JSON, a repr) kept it in clear."""
    assert redact_free_text(text) == expected
    assert redact_free_text(expected) == expected


@pytest.mark.parametrize(
    "text",
    ["user=alice", 'user="alice"', "user: alice", "basic plan exceeded; token expired", "room: lobby",
     "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0", "https://example.com/a",
     # an unquoted name's ':' needs a space after it: host:port and name:verb are no credentials
     "upstream ws://signaling:8443/ws unreachable", "/ws/rooms/design:42", "/v1/projects/p/secrets:list",
     "auth.example.com:8443", "tokens:5"],
)  # fmt: skip
def test_other_pairs_and_plain_words_stay(text: str) -> None:
    assert redact_free_text(text) == text


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    ["token" * 80_000 + " =", 'token="' * 60_000, 'Bearer "' * 50_000, "token=(" * 60_000, "x: " * 130_000,
     "token=" + "\\" * SIZE, '"' + "a" * SIZE + ":"],
)  # fmt: skip
def test_free_text_with_quotes_and_colons_is_read_in_linear_time(text: str) -> None:
    """A hang guard: 400 KB each, some milliseconds."""
    once = redact_free_text(text)
    assert redact_free_text(once) == once


@pytest.mark.parametrize(
    "text",
    ["TOKEN: s3cret", "\u212aey=s3cret", "pa\u017f\u017f: s3cret", "caf\u00e9 api_key: s3cret", "x-Session='s3cret'"],
)  # Kelvin sign and long s fold to k and s
def test_the_quick_credential_word_check_never_skips_what_the_pattern_redacts(text: str) -> None:
    assert patterns._NAMED_VALUE.sub(patterns._redacted_named_value, text) == redact_free_text(text)
    assert "s3cret" not in redact_free_text(text)


@pytest.mark.parametrize("mark", ["\u061c", "\u200e", "\u200f"])
def test_a_bidi_mark_in_a_log_line_is_escaped_as_the_other_controls_are(mark: str) -> None:
    """config refused U+061C, U+200E and U+200F in a display name; printable wrote them raw."""
    escaped = f"\\u{ord(mark):04x}"
    fields = {"client": "10.0.0.1:5", "path": f"/ws/a{mark}b", "api": "chat", "status": 403, "outcome": "denied",
              "reason": "origin", "duration": 0.1, "trace_id": None, "span_id": None}  # fmt: skip
    message, args = access._text_line(fields)
    assert f"/ws/a{escaped}b" in message % args and mark not in message % args
    assert printable(mark, quote=False) == escaped
    assert printable_json(f'{{"path": "{mark}"}}') == f'{{"path": "{escaped}"}}'


def test_the_control_characters_have_one_home() -> None:
    """config's display-name check, printable and printable_json read the same set."""
    refused = {chr(c) for c in range(0x3000) if config_fields._CONTROL.match(chr(c))}
    escaped = {chr(c) for c in range(0x3000) if printable(chr(c)) != chr(c)}
    assert escaped - refused == {"\\", '"'}
    assert refused == {chr(c) for c in range(0x3000) if re.fullmatch(f"[{redact.CONTROL_CHARACTERS}]", chr(c))}
    assert {chr(c) for c in range(0x3000) if printable_json(chr(c)) != chr(c)} == refused - {chr(c) for c in range(32)}
