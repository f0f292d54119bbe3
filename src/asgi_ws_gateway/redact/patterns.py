"""Where a credential sits in text, and what each find is written as: the patterns :mod:`.text` runs (a
query or fragment, a header and a header dump's line, a URL's userinfo, a JWT, an authorization scheme,
a named value), their replacements, and :func:`redact_query`, the rule for a query's values."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .credential_names import CREDENTIAL_WORDS, REDACTED, is_credential_header

# A query string inside free text: from "?" to the end of the request target, which only a space or
# a line break ends (a request line's separators). Every other byte belongs to the query, quotes and
# angle brackets too: a value such as O'Brien must not end the match and leave later values in clear.
_QUERY_IN_TEXT = re.compile(r"\?([^ \r\n]*)")
# A fragment after a path or URL (``/cb#access_token=...``, as h11 passes a raw target on), likewise.
# Linear: a path is taken whole, possessively, fragment or not (group 2 is None without one: the path
# stays as it is), so the scan goes on after it. Required, the "#" made every later "/" of a path
# without one (``=/=/=/...``) a new start that read to its end again: 150 ms for 8 KB.
_FRAGMENT_IN_TEXT = re.compile(r"(?:^|(?<=[\s\"'(\[=]))((?:[A-Za-z][A-Za-z0-9+.-]*+:)?/[^ \r\n#?]*+)(?:#([^ \r\n]*+))?")
# A JWT/JWS (three base64url segments, the first a JSON object's encoding) anywhere in text. Linear as
# the fragment's: the first segment is taken whole whether the other two follow (group 1) or not.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}+(\.[A-Za-z0-9_-]{2,}+\.[A-Za-z0-9_-]*+)?")
# A JWT whose header (or payload) is JSON with a blank after its "{" (``{ "alg": ...}``, pretty-printed
# ``{\n  "alg"``): valid, and read by validate-jwt, but its first segment starts ``eyA``, ``ewo``, ``ew0``
# or ``ewk``, not ``eyJ``; _JWT then saw only ``<payload>.<signature>`` and left the token, signature
# and all, in clear. Each segment must start as a JSON object's encoding does; the first only where a
# run of base64url characters starts (each run read once: linear).
_JWT_SEGMENT_START = r"(?:eyJ|eyA|ew[o0k])"
_SPACED_JWT = re.compile(
    rf"(?<![A-Za-z0-9_-]){_JWT_SEGMENT_START}[A-Za-z0-9_-]++\.{_JWT_SEGMENT_START}[A-Za-z0-9_-]{{2,}}+\.[A-Za-z0-9_-]*+"
)
# A URL's userinfo anywhere in text, also percent-encoded as servers log a request target
# (``http%3A//user%3Apassword%40host``): the password, or a user name alone (it may be a token).
# The userinfo runs to the authority's last "@" (as URL parsers read it): an "@", a quote or a
# percent-escape inside the user name or password is part of it, not its end.
_USERINFO = re.compile(r"(?<=//)((?:[^\s/?#:%]|%(?!3[Aa]))*)(:|%3[Aa])[^\s/?#]*(@|%40)")
_USER_ONLY = re.compile(r"(?<=//)[^\s/?#]+(?=@|%40)")


def _header_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """``authorization: Bearer x``, ``('cookie', 'a=b')``, ``b'x-api-key', b'k'`` inside text."""
    alternatives = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    return re.compile(
        # A "*subscription-key" name starts where its run of name characters does: from every letter of
        # a long run (``aaaa...``) the scan went to the run's end and back, 1 s for 8 KB.
        rf"(?P<name>{alternatives}|(?<![a-z-])[a-z-]*subscription-key)"
        # After a quoted name (a repr or JSON: ``('cookie', "a'b")``, ``"authorization": "..."``) a
        # quoted value runs to its closing quote, escapes skipped. Otherwise (a header dump) the
        # value runs to the end of the line, quotes and all (``Cookie: pref="dark"; session=...``),
        # except a value the query pass redacted already (``?cookie=REDACTED HTTP/1.1" 200``).
        r"(?:(?P<sep>['\"]\s*[:=]\s*b?|['\"]?,\s*b?)(?P<quote>['\"])(?:\\.|(?!(?P=quote))[^\\\r\n])*"
        rf"|(?P<bare>['\"]?\s*[:=]\s*)(?:{REDACTED}(?=[\s&\"']|$)|[^\r\n]*))",
        re.IGNORECASE,
    )


def _fewest(words: Iterable[str]) -> tuple[str, ...]:
    """``words`` without those that hold another of them (``set-cookie`` holds ``cookie``): text holds
    one of ``words`` exactly when it holds one of these, and each costs a search of the text."""
    unique = set(words)
    return tuple(sorted(word for word in unique if not any(other != word and other in word for other in unique)))


def redact_query(query: str | bytes) -> str:
    """``query`` with every parameter's value replaced by ``REDACTED``; names and order kept.

    A bare item without ``=`` may itself be the key, so it is redacted whole; empty items go.

    >>> redact_query("access_token=eyJ...&room=1&flag")
    'access_token=REDACTED&room=REDACTED&REDACTED'
    """
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    parts = []
    for part in text.split("&"):
        name, eq, _ = part.partition("=")
        if part:
            parts.append(f"{name}={REDACTED}" if eq else REDACTED)
    return "&".join(parts)


# A header line of a dump: websockets' (and uvicorn's through it) "< name: value" and "> name: value"
# at debug, or a line of an HTTP header block (ended by CRLF) in an exception's text. Read by
# is_credential_header, not by a list of names: a dump shows every header the peer chose to send.
_HEADER_DUMP = re.compile(
    r"^(?P<head>(?P<dir>[<>] )?(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]++):[ \t]*+)(?P<value>[^\r\n]*+)(?P<cr>\r?+)$",
    re.MULTILINE,
)


def _redacted_dump_header(match: re.Match[str]) -> str:
    dumped = match["dir"] is not None or match["cr"]
    if not dumped or match["value"] == REDACTED:
        return match[0]
    if is_credential_header(match["name"]):
        return f"{match['head']}{REDACTED}{match['cr']}"
    # Another header's value is free text its sender chose (``User-Agent: app/1 token=...``, an
    # ``X-Debug: Bearer ...``): redacted as the access log redacts a User-Agent, not written in clear.
    return f"{match['head']}{_free_text_credentials(match['value'])}{match['cr']}"


def _free_text_credentials(text: str) -> str:
    """``text`` with an authorization scheme's credential and each value named as a credential redacted."""
    lower = text.lower()
    if "bearer" in lower or "basic" in lower or not text.isascii():
        text = _SCHEME_CREDENTIAL.sub(_redacted_scheme_credential, text)
    if ("=" in text or ":" in text) and any(word in lower for word in CREDENTIAL_WORDS):
        text = _NAMED_VALUE.sub(_redacted_named_value, text)
    return text


# websockets' refusal of a header it could not parse, in a traceback's last line and its debug log:
# "invalid Sec-WebSocket-Protocol header: expected comma at 21 in access_token.<token>;x". The value
# follows the error's words; a credential header's is redacted (the dump line of the same header was,
# this line was not: a token subprotocol the JWT pattern does not know stayed in clear).
_INVALID_HEADER = re.compile(
    r"(?P<head>\b(?:invalid|empty) (?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]++) header: (?:(?:[a-z]++ )+?at \d++ in )?)"
    r"(?P<value>[^\r\n]*+)"
)


def _redacted_invalid_header(match: re.Match[str]) -> str:
    if not match["value"] or match["value"] == REDACTED or not is_credential_header(match["name"]):
        return match[0]
    return f"{match['head']}{REDACTED}"


def _redacted_query(match: re.Match[str]) -> str:
    return "?" + _redacted_parameters(match[1])


def _redacted_fragment(match: re.Match[str]) -> str:
    return match[0] if match[2] is None else f"{match[1]}#{_redacted_parameters(match[2])}"


def _redacted_jwt(match: re.Match[str]) -> str:
    return match[0] if match[1] is None else REDACTED


def _redacted_parameters(text: str) -> str:
    """A query's or fragment's text (to the end of its target) with every value redacted."""
    # Redacted already, closing a quoted field (``"WebSocket /ws?a=REDACTED" [accepted]``, its
    # argument redacted first): the quote is the field's, not a value's. Nothing else is kept.
    done = text.rstrip("\"'")
    if done != text and done and redact_query(done) == done:
        return text
    return redact_query(text)


def _redacted_header(match: re.Match[str]) -> str:
    if match["quote"]:
        return f"{match['name']}{match['sep']}{match['quote']}{REDACTED}"
    return f"{match['name']}{match['bare']}{REDACTED}"


# In a client's free text (a User-Agent, a close reason, a subject), outside any query: an
# authorization scheme's credential ("Bearer abc", 'Bearer "abc"') and a value named as a credential
# ("token=abc", 'token="a b"', '{"token": "abc"}', "token: abc"). Not "user=": a subject such as
# "user=alice" is what it names, not a secret. A quoted value runs to its closing quote (escapes
# skipped; to the end of the line without one): it may hold spaces.
_QUOTED = r"(?P<quote>[\"'])(?P<quoted>(?:\\.|(?!(?P=quote))[^\\\r\n])*+)(?P=quote)?+"
_SCHEME_CREDENTIAL = re.compile(
    rf"\b(?:(?P<scheme>Bearer)\s+(?:{_QUOTED}|(?!REDACTED\b)[^\s,;\"'()]+)"
    r"|(?P<basic>Basic)\s+(?P<basic_quote>[\"']?+)[A-Za-z0-9+/]{8,}={0,2}(?P=basic_quote))",
    re.IGNORECASE,
)  # "Basic" with base64 only: "basic plan" stays
# Each name=value (or name: value) pair whose name is a credential's, found once per run of name
# characters (its first credential word, atomic, then the run's rest: linear in the text); the
# name may close a quote (JSON's "token": "..."). A bare value's backslash escapes are its own
# ('token=\\"a\\"' inside a quoted value); it may be in parentheses; an object or a list is not
# one ('{"auth": {"token": ...}}': the inner pair is). Other pairs are not taken: a value after
# "user=" or "user: " is read for pairs too.
# Nor is an exception's type before its message, as a traceback writes it ("redis.exceptions.
# AuthenticationError: invalid username-password pair": "invalid" was redacted): the message is read
# for pairs as any text. KeyError's message is the key looked up, which may be a credential: it stays a pair.
_EXCEPTION_TYPE = r"(?:\w++\.)*+(?!KeyError:)[A-Z]\w*(?:Error|Exception|Warning):[ \t]"
_NAMED_VALUE = re.compile(
    rf"(?<![\w.-])(?!{_EXCEPTION_TYPE})(?P<name>(?>[\w.-]*?(?i:{'|'.join(CREDENTIAL_WORDS)}))[\w.-]*+)"
    r"(?P<close>[\"']?+)\s*+(?P<sep>=|(?<=[\"']):|:(?=[ \t]))\s*+"  # "name": or name: value, not host:port
    rf"(?:{_QUOTED}|(?P<bare>\([^\r\n()]*+\)?+|(?![{{\[])(?:\\.|[^\s&;,\"'()\\])++))"
)


def _redacted_scheme_credential(match: re.Match[str]) -> str:
    if match["quote"] is None:
        return f"{match['scheme'] or match['basic']} {REDACTED}"
    closed = match.end("quoted") < match.end()
    return f"{match['scheme']} {match['quote']}{REDACTED}{match['quote'] if closed else ''}"


def _redacted_named_value(match: re.Match[str]) -> str:
    if REDACTED in (match["bare"], match["quoted"]):
        return match[0]  # redact_text's already ("Authorization: REDACTED")
    if match["close"] and match.string[match.start("name") - 1 : match.start("name")] != match["close"]:
        return match[0]  # a quoted text ending in a credential's word ("a redirect to '/keys': ..."), no name
    start = f"{match['name']}{match['close']}{match['sep']}"
    if match["quote"] is None:
        return f"{start}{REDACTED}"
    closed = match.end("quoted") < match.end()
    return f"{start}{match['quote']}{REDACTED}{match['quote'] if closed else ''}"


__all__ = ["redact_query"]
