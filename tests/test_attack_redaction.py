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
from asgi_ws_gateway.redact import REDACTED, redact_free_text, redact_path, redact_text
from asgi_ws_gateway.telemetry import values

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
    assert redact._FRAGMENT_IN_TEXT.sub(redact._redacted_fragment, text) == _OLD_FRAGMENT.sub(
        lambda m: f"{m[1]}#{redact._redacted_parameters(m[2])}", text
    )


@settings(max_examples=500, deadline=None)
@given(_TEXTS)
def test_the_linear_jwt_pattern_redacts_what_the_old_one_did(text: str) -> None:
    assert redact._JWT.sub(redact._redacted_jwt, text) == _OLD_JWT.sub(REDACTED, text)


@settings(max_examples=500, deadline=None)
@given(_NAMES.map("".join), st.sampled_from([": SECRET", "='SECRET'", " = SECRET"]))
def test_a_subscription_key_header_is_redacted_where_the_old_pattern_redacted_it(name: str, value: str) -> None:
    old = re.compile(redact._HEADER_IN_TEXT.pattern.replace("(?<![a-z-])", ""), re.IGNORECASE)
    text = name + value
    assert redact._HEADER_IN_TEXT.sub(redact._redacted_header, text) == old.sub(redact._redacted_header, text)


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
