"""Client text on one line: control, line-breaking and bidi characters escaped for a log line, a
terminal or a JSON document (:func:`printable`, :func:`printable_json`, :data:`CONTROL_CHARACTERS`)."""

from __future__ import annotations

import re

# Control and line-breaking characters a client can put in a path (%0d%0a), a token's subject or
# a management request's name: in a text line they would forge log lines or hide text (bidi
# overrides and the invisible direction marks U+061C, U+200E, U+200F), so they are written as
# escapes; so is the double quote, which would close a quoted field (%22) and let fields be forged
# after it, and the backslash, so an escape cannot be forged.
_C0 = r"\x00-\x1f"
_OTHER_CONTROLS = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
CONTROL_CHARACTERS = _C0 + _OTHER_CONTROLS
"""The one set of control, line-breaking and bidi characters, as a regular expression class's body
(``re.compile(f"[{CONTROL_CHARACTERS}]")``): what :func:`printable` escapes and free text a person
reads (a display name) refuses."""
_UNPRINTABLE = re.compile(f'[{CONTROL_CHARACTERS}\\\\"]')
_UNPRINTABLE_BARE = re.compile(f"[{CONTROL_CHARACTERS}\\\\]")


def printable(text: str, *, quote: bool = True) -> str:
    """``text`` on one line: control, line-breaking and bidi characters, ``\\`` and ``"`` as escapes.

    The one escaping for client-supplied text written to a log line or a terminal (the access log,
    the management API's log lines, ``asgi-ws-gateway connect``).

    Args:
        text: what to show.
        quote: also escape ``"`` (default), for text written inside a quoted field; False leaves it,
            for text shown bare (a JSON message that ``asgi-ws-gateway connect`` prints).

    >>> printable('x\\nCRITICAL: "forged"')
    'x\\\\nCRITICAL: \\\\x22forged\\\\x22'
    """
    if text.isprintable() and "\\" not in text and not (quote and '"' in text):  # what the pattern finds, fast
        return text
    return (_UNPRINTABLE if quote else _UNPRINTABLE_BARE).sub(_escape, text)


# What json.dumps(ensure_ascii=False) leaves raw of those: C0 controls it escapes itself, not DEL and
# C1 (U+0085, which splitlines() and many readers end a line at), U+2028/U+2029 or bidi controls
# and marks.
_UNPRINTABLE_IN_JSON = re.compile(f"[{_OTHER_CONTROLS}]")


def printable_json(document: str) -> str:
    """A JSON ``document`` on one line under any reader: the characters :func:`printable` escapes and
    ``json.dumps(..., ensure_ascii=False)`` leaves raw, written as ``\\uXXXX`` (the same value to
    ``json.loads``; they can only stand inside its strings).

    >>> printable_json('{"path":"/a\\u2028b"}')
    '{"path":"/a\\\\u2028b"}'
    """
    return _UNPRINTABLE_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", document)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    return "\\x22" if char == '"' else char.encode("unicode_escape").decode("ascii")  # as nginx writes a quote


__all__ = ["CONTROL_CHARACTERS", "printable", "printable_json"]
