"""Redaction: the one place that decides what a credential looks like before text reaches a log.

A client can send a credential in any position: a query parameter (``?access_token=``,
``?subscription-key=``), a header (``Authorization``, ``Cookie``, a subscription-key header, a
configured token header) or ``Sec-WebSocket-Protocol``. The gateway never writes a query string's
values, a sensitive header's value or anything shaped like a JWT to a log line: every query value
becomes ``REDACTED`` (names are kept, they help debugging), so do sensitive header values.

What is redacted is decided here; :mod:`.log_redaction` applies it to ``logging``'s records (its
filter and the record factory that :func:`~asgi_ws_gateway.log_redaction.install` puts in place), and
spans, access lines, the management API and error messages call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, unquote_plus, urlunsplit

from .bounded import remember, split_url

REDACTED = "REDACTED"

#: Headers whose values are credentials, whatever the configuration (lower case).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-protocol",
        "ocp-apim-subscription-key", "subscription-key", "x-api-key", "api-key", "x-auth-token",
    }
)  # fmt: skip

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
# A URL's userinfo anywhere in text, also percent-encoded as servers log a request target
# (``http%3A//user%3Apassword%40host``): the password, or a user name alone (it may be a token).
# The userinfo runs to the authority's last "@" (as URL parsers read it): an "@", a quote or a
# percent-escape inside the user name or password is part of it, not its end.
_USERINFO = re.compile(r"(?<=//)((?:[^\s/?#:%]|%(?!3[Aa]))*)(:|%3[Aa])[^\s/?#]*(@|%40)")
_USER_ONLY = re.compile(r"(?<=//)[^\s/?#]+(?=@|%40)")
_extra_headers: set[str] = set()


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


_HEADER_IN_TEXT = _header_pattern(SENSITIVE_HEADERS)
# What every match of _HEADER_IN_TEXT contains, lower case: ASCII text without any of these cannot
# match, and the check costs ~1 µs where the pattern's scan costs ~30 µs on an access line.
_HEADER_NAMES: tuple[str, ...] = _fewest((*SENSITIVE_HEADERS, "subscription-key"))


def add_sensitive_headers(names: Iterable[str]) -> None:
    """Also redact these headers' values (a configuration's token and subscription-key headers)."""
    global _HEADER_IN_TEXT, _HEADER_NAMES
    new = {name.lower() for name in names} - SENSITIVE_HEADERS - _extra_headers
    if new:
        _extra_headers.update(new)
        _HEADER_IN_TEXT = _header_pattern(SENSITIVE_HEADERS | _extra_headers)
        _HEADER_NAMES = _fewest((*SENSITIVE_HEADERS, *_extra_headers, "subscription-key"))


def credential_headers(document: object) -> set[str]:
    """The header names a configuration (as plain data) reads credentials from: ``token: [{header: ...}]``."""
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "token" and isinstance(value, list):
                found.update(s["header"] for s in value if isinstance(s, dict) and isinstance(s.get("header"), str))
            else:
                found |= credential_headers(value)
    elif isinstance(document, list):
        for item in document:
            found |= credential_headers(item)
    return found


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


def redact_url(url: str) -> str:
    """``url`` without userinfo or fragment, each query value replaced by ``REDACTED``, and a
    credential in its path redacted as in a client's path (a path parameter carries the client's
    text upstream, percent-encoded: it is decoded to be read, and written again only if redacted).

    >>> redact_url("wss://u:p@example.com:8443/ws/room?token=abc&key")
    'wss://example.com:8443/ws/room?token=REDACTED&REDACTED'
    >>> redact_url("ws://chat:9000/rooms/token%3Dabc")
    'ws://chat:9000/rooms/token=REDACTED'
    """
    parts = split_url(url)
    query = redact_query(parts.query) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], redact_encoded_path(parts.path), query, ""))


def redact_encoded_path(path: str) -> str:
    """A percent-encoded path (an upstream URL's, uvicorn's logged request target) with a credential
    in it redacted as :func:`redact_path` reads a client's path: decoded first, so ``token%3Dabc`` and
    ``Bearer%20abc`` are seen; written again (encoded) only when something was redacted.

    >>> redact_encoded_path("/ws/token%3Dabc")
    '/ws/token=REDACTED'
    """
    decoded = unquote(path) if "%" in path else path
    redacted = redact_path(decoded)
    return path if redacted == decoded else quote(redacted, safe="/:@!$&'()*+,;=~")


# A URL as a whole string: a scheme and "//" (leading white space is tolerated, as parsers do).
_URL_START = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")
CREDENTIAL_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "sig", "cred", "session", "cookie")
"""Words that make a name a credential's, in any case, anywhere in it: a header (``X-Signature``), a
parameter (``api_key``), a name in free text (``token=``); the one list for logs and the management API."""
_CREDENTIAL_NAME = re.compile("|".join(CREDENTIAL_WORDS), re.IGNORECASE)
# A query or fragment parameter whose value is a credential, by (decoded) name: redis-py's
# ?password= and ?username=, access_token, subscription-key, api_key, client_secret, a SAS sig...
_CREDENTIAL_PARAMETER = re.compile("|".join((*CREDENTIAL_WORDS, "user")), re.IGNORECASE)
# Schemes whose parser takes the userinfo up to the last "@" of the whole URL (parse_redis_url).
_LAST_AT_SCHEMES = frozenset({"redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"})


def redact_url_credentials(url: str) -> str:
    """``url`` with its user name, password and credential parameters' values replaced by ``REDACTED``.

    For showing a configured URL: host, port, path and other parameters stay as written. The
    userinfo is found as clients parse it, up to the last raw ``@`` of the authority (so a raw or
    percent-encoded ``@``, a quote or a space inside a password is part of it); a query or fragment
    parameter is a credential when its decoded name says so (``password``, ``username``,
    ``access_token``, ``subscription-key``...). Text that is not a ``scheme://`` URL but holds one
    with userinfo goes through :func:`redact_text`; other text is returned as is.

    >>> redact_url_credentials("redis://:p@ss@h:6379/0?password=x&db=1")
    'redis://:REDACTED@h:6379/0?password=REDACTED&db=1'
    """
    start = _URL_START.match(url)
    if start is None:
        if url.startswith("/") and not url.startswith("//"):  # a path and query: rewrite-uri's template
            return _redact_query_and_fragment(url, 0)
        return redact_text(url) if "//" in url and "@" in url else url
    head, rest = url[: start.end()], url[start.end() :]
    boundary = re.search(r"[/?#]", rest)
    authority_end = boundary.start() if boundary else len(rest)
    at = rest.rfind("@") if start[1].lower() in _LAST_AT_SCHEMES else rest.rfind("@", 0, authority_end)
    if at > authority_end and ("?" in rest[:at] or "#" in rest[:at]):
        # An '@' in what other readers take for the query or fragment: for a Sentinel client the text
        # after it is the host, for everyone else part of a parameter ("?password=@secret" showed
        # "@secret"). Neither reading may show it: nothing after the scheme is.
        return head + REDACTED
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        userinfo = (REDACTED if user else "") + (f":{REDACTED}" if colon else "")
        rest = userinfo + rest[at:]
        boundary = re.search(r"[/?#]", rest[len(userinfo) :])
        authority_end = len(userinfo) + boundary.start() if boundary else len(rest)
    return head + _redact_query_and_fragment(rest, authority_end)


def _redact_query_and_fragment(rest: str, start: int) -> str:
    """``rest`` with the credential parameters of its query and fragment (found from ``start``) redacted."""
    hash_at = rest.find("#", start)
    query_at = rest.find("?", start, hash_at if hash_at >= 0 else len(rest))
    tail = hash_at if hash_at >= 0 else len(rest)
    if query_at >= 0:
        rest = f"{rest[: query_at + 1]}{_redact_credential_parameters(rest[query_at + 1 : tail])}{rest[tail:]}"
        hash_at = rest.find("#", query_at)
    if hash_at >= 0:
        rest = rest[: hash_at + 1] + _redact_credential_parameters(rest[hash_at + 1 :])
    return rest


def is_credential_name(name: str) -> bool:
    """Whether a header or setting so named holds a credential (one of ``CREDENTIAL_WORDS`` in it)."""
    return _CREDENTIAL_NAME.search(name) is not None


CREDENTIAL_VALUES = frozenset(
    {"value", "values", "pattern", "equals", "not_equals", "in", "one_of", "matches", "contains"}
)
"""The settings that hold or test the value of what :func:`credential_setting` names: a ``set-header``'s
``value``, a ``check-header``'s ``values`` and ``pattern``, a condition's operands (``in`` is ``one_of``
by its alias)."""


def credential_setting(settings: Mapping[str, Any]) -> str | None:
    """The header, query parameter, context value or JWT claim a policy's ``settings`` (or a condition)
    name as a credential, if any: their :data:`CREDENTIAL_VALUES` are then secrets (``set-header`` of
    ``X-Internal-Auth``, ``check-header`` of ``X-Api-Key``, ``set-query-parameter`` of ``api_key``,
    ``{ref: header.x-api-key, in: [...]}``, ``{claim: api_key, equals: ...}``), which no output may show."""
    header = settings.get("header")
    if isinstance(header, str) and (header.lower() in SENSITIVE_HEADERS or is_credential_name(header)):
        return header
    parameter = settings.get("parameter")
    if isinstance(parameter, str) and is_credential_parameter(parameter):
        return parameter
    ref = settings.get("ref")
    if isinstance(ref, str) and _credential_reference(ref):
        return ref
    claim = settings.get("claim")
    if isinstance(claim, str) and is_credential_name(claim):
        return claim
    return None


def _credential_reference(ref: str) -> bool:
    """Whether a condition's ``ref`` reads a credential: ``header.x-api-key``, ``query.api_key``,
    ``cookie.session``, ``jwt.session_id``, ``path.token``."""
    namespace, dot, key = ref.strip().partition(".")
    if not dot:
        return False
    if namespace == "header":
        return key.lower() in SENSITIVE_HEADERS or is_credential_name(key)
    if namespace == "query":
        return is_credential_parameter(key)
    return is_credential_name(key)


def redact_values(text: str, values: object) -> str:
    """``text`` (an error message) without what it quotes of the strings in ``values`` (secrets, or
    JSON-like data holding them): each part that is wholly of one (quoted, or after ``: ``, as RE2's
    ``missing ): (abc`` quotes a pattern's rest), and each run of 4 characters or more that one
    holds, read as ``REDACTED``.

    >>> redact_values("bad escape: \\k<s3cret-key", {"pattern": "ab|\\k<s3cret-key"})
    'bad escape: REDACTED'
    """
    secrets = [value for value in _strings(values) if value]
    if not secrets:
        return text

    def secret(part: str) -> bool:
        return any(part in value for value in secrets)

    text = _QUOTED_PART.sub(lambda m: m[0] if not secret(m[2]) else f"{m[1]}{REDACTED}{m[1]}", text)
    text = _LAST_PART.sub(lambda m: m[0] if not secret(m[1]) else REDACTED, text)
    out, start, i = [], 0, 0
    while i <= len(text) - _SHORTEST_QUOTE:
        end = i + _SHORTEST_QUOTE
        if not secret(text[i:end]):
            i += 1
            continue
        while end < len(text) and secret(text[i : end + 1]):
            end += 1
        out += [text[start:i], REDACTED]
        start = i = end
    return "".join([*out, text[start:]])


def _strings(value: object) -> list[str]:
    """Every string in ``value`` (JSON-like), keys aside."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    return [text for item in value for text in _strings(item)] if isinstance(value, list | tuple) else []


_SHORTEST_QUOTE = 4  # shorter runs are words any message and any secret may share (")", "an")
_QUOTED_PART = re.compile(r"(['\"])((?:(?!\1).)+)\1")
_LAST_PART = re.compile(r"(?<=: )((?:(?!: ).)+)$")


def is_credential_parameter(name: str) -> bool:
    """Whether a query parameter so named (decoded) holds a credential: ``password``, ``api_key``, ``sig``..."""
    return _CREDENTIAL_PARAMETER.search(name) is not None


def _redact_credential_parameters(text: str) -> str:
    """``a=1&password=x`` as ``a=1&password=REDACTED``: only parameters named as credentials."""
    parts = []
    for part in text.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and is_credential_parameter(unquote_plus(name)) else part)
    return "&".join(parts)


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


def redact_headers(headers: Iterable[tuple[str, str]], sensitive: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``headers`` with the values of credential headers (:func:`is_credential_header`, and ``sensitive``
    ones) replaced."""
    names = {name.lower() for name in sensitive}
    return [
        (name, REDACTED if is_credential_header(name) or name.lower() in names else value) for name, value in headers
    ]


def is_credential_header(name: str) -> bool:
    """Whether a header so named holds a credential: one of :data:`SENSITIVE_HEADERS`, a configured token
    header (:func:`add_sensitive_headers`), or a name with one of ``CREDENTIAL_WORDS`` in it
    (``X-Amz-Security-Token``, ``X-CSRF-Token``, ``X-Signature``, ``Authentication``). The one rule for
    a header's value in a header dump, a header list and a mapping."""
    lower = name.lower()
    return lower in SENSITIVE_HEADERS or lower in _extra_headers or is_credential_name(lower)


# A header line of a dump: websockets' (and uvicorn's through it) "< name: value" and "> name: value"
# at debug, or a line of an HTTP header block (ended by CRLF) in an exception's text. Read by
# is_credential_header, not by a list of names: a dump shows every header the peer chose to send.
_HEADER_DUMP = re.compile(
    r"^(?P<head>(?P<dir>[<>] )?(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]++):[ \t]*+)(?P<value>[^\r\n]*+)(?P<cr>\r?+)$",
    re.MULTILINE,
)


def _redacted_dump_header(match: re.Match[str]) -> str:
    dumped = match["dir"] is not None or match["cr"]
    if not dumped or match["value"] == REDACTED or not is_credential_header(match["name"]):
        return match[0]
    return f"{match['head']}{REDACTED}{match['cr']}"


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


def redact_targets(text: str) -> str:
    """``text`` with the values of each query and fragment in it redacted."""
    if "?" in text:
        text = _QUERY_IN_TEXT.sub(_redacted_query, text)
    if "#" in text:
        text = _FRAGMENT_IN_TEXT.sub(_redacted_fragment, text)
    return text


def _redacted_header(match: re.Match[str]) -> str:
    if match["quote"]:
        return f"{match['name']}{match['sep']}{match['quote']}{REDACTED}"
    return f"{match['name']}{match['bare']}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with query values, credential header values, URL passwords and JWT-shaped strings redacted."""
    text = redact_targets(text)
    if _may_hold(text, _HEADER_NAMES):
        text = _HEADER_IN_TEXT.sub(_redacted_header, text)
    if ":" in text and (text.startswith(("< ", "> ")) or "\n< " in text or "\n> " in text or "\r" in text):
        text = _HEADER_DUMP.sub(_redacted_dump_header, text)
    if "//" in text and ("@" in text or "%40" in text):
        text = _USERINFO.sub(rf"\1\2{REDACTED}\3", text)
        text = _USER_ONLY.sub(lambda m: m[0] if m[0].endswith(REDACTED) else REDACTED, text)
    return _JWT.sub(_redacted_jwt, text) if "eyJ" in text else text  # every match starts so: no scan without it


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
_NAMED_VALUE = re.compile(
    rf"(?<![\w.-])(?P<name>(?>[\w.-]*?(?i:{'|'.join(CREDENTIAL_WORDS)}))[\w.-]*+)"
    r"(?P<close>[\"']?+)\s*+(?P<sep>=|(?<=[\"']):|:(?=[ \t]))\s*+"  # "name": or name: value, not host:port
    rf"(?:{_QUOTED}|(?P<bare>\([^\r\n()]*+\)?+|(?![{{\[])(?:\\.|[^\s&;,\"'()\\])++))"
)


def redact_free_text(text: str) -> str:
    """:func:`redact_text`, and also, anywhere in ``text``, the credential of an authorization scheme
    (``Bearer abc``) and a value named as a credential (``token=abc``, ``api_key: abc``,
    ``{"token": "a b"}``), query or not, quoted or not.

    For a client's free text before it is recorded: a User-Agent, a Host, a close reason, a subject.

    >>> redact_free_text("probe/1 (Bearer abc123; token=s3cret) user=alice")
    'probe/1 (Bearer REDACTED; token=REDACTED) user=alice'
    """
    text = redact_text(text)
    # Schemes first: "auth: Bearer abc" read as a pair would take "Bearer" for the value and leave abc.
    # The pattern ignores case: for ASCII text, exactly these words are needed (a User-Agent: 1.5 µs less).
    if not text.isascii() or "bearer" in (lower := text.lower()) or "basic" in lower:
        text = _SCHEME_CREDENTIAL.sub(_redacted_scheme_credential, text)
    # A User-Agent with ``rv:109.0`` took 11 µs to scan, 1 µs with the words looked for first.
    if ("=" in text or ":" in text) and _may_hold(text, CREDENTIAL_WORDS):
        text = _NAMED_VALUE.sub(_redacted_named_value, text)
    return text


def _redacted_scheme_credential(match: re.Match[str]) -> str:
    if match["quote"] is None:
        return f"{match['scheme'] or match['basic']} {REDACTED}"
    closed = match.end("quoted") < match.end()
    return f"{match['scheme']} {match['quote']}{REDACTED}{match['quote'] if closed else ''}"


def _redacted_named_value(match: re.Match[str]) -> str:
    if REDACTED in (match["bare"], match["quoted"]):
        return match[0]  # redact_text's already ("Authorization: REDACTED")
    start = f"{match['name']}{match['close']}{match['sep']}"
    if match["quote"] is None:
        return f"{start}{REDACTED}"
    closed = match.end("quoted") < match.end()
    return f"{start}{match['quote']}{REDACTED}{match['quote'] if closed else ''}"


_UNCHANGED_LIMIT = 1024
_UNCHANGED_LENGTH = 512
_unchanged: dict[str, tuple[str, ...]] = {}
"""Paths ``redact_text`` left unchanged, each with the header names it was checked against."""
_unchanged_texts: dict[str, tuple[str, ...]] = {}
"""Free texts (a User-Agent, a Host, a close reason) ``redact_free_text`` left unchanged, as ``_unchanged``
(a store of their own: many distinct User-Agents must not push the paths out)."""
_unchanged_urls: dict[str, tuple[str, ...]] = {}
"""URLs ``redact_url`` left unchanged, as ``_unchanged`` (their paths are read as paths are)."""


def redact_path(path: str) -> str:
    """``redact_free_text(path)``, remembering the paths it leaves unchanged (most repeat; bounded).

    A client writes its path as freely as its User-Agent: ``/ws/token=s3cret`` and
    ``/ws/Bearer%20abc`` (the path is decoded) are redacted as in a close reason.

    A remembered path counts only under the sensitive header names it was checked with: after
    :func:`add_sensitive_headers` adds names, it is checked again.
    """
    return _remembered(path, redact_free_text, _unchanged, _HEADER_NAMES)


def redact_free_text_remembered(text: str) -> str:
    """``redact_free_text(text)``, remembering the texts it leaves unchanged, as :func:`redact_path`
    (User-Agents, Host headers and close reasons repeat from one connection to the next)."""
    if _unchanged_texts.get(text) is _HEADER_NAMES:  # _remembered's first step, without its call
        return text
    return _remembered(text, redact_free_text, _unchanged_texts, _HEADER_NAMES)


def redact_url_remembered(url: str) -> str:
    """``redact_url(url)``, remembering the URLs it leaves unchanged (an upstream's, per connection)."""
    return _remembered(url, redact_url, _unchanged_urls, _HEADER_NAMES)


def _remembered(
    text: str, redact: Callable[[str], str], store: dict[str, tuple[str, ...]], mark: tuple[str, ...]
) -> str:
    """``redact(text)``; a text it leaves unchanged is kept in ``store`` under ``mark`` and returned at
    once while the mark is the same. Only texts without a secret, of at most 512 characters (clients
    choose paths and path parameters), at most 1024 of them (emptied when full)."""
    if store.get(text) is mark:
        return text
    redacted = redact(text)
    if redacted == text and len(text) <= _UNCHANGED_LENGTH:
        remember(store, text, mark, _UNCHANGED_LIMIT)
    return redacted


def _may_hold(text: str, words: Iterable[str]) -> bool:
    """False only when ``text`` cannot hold any of ``words`` (lower-case) as a pattern ignoring case
    reads it: before a sensitive header's name or a credential's name is looked for.

    Exact for ASCII text (the pattern ignores case, and ASCII letters fold only to ASCII letters);
    text with other characters always takes the pattern, whose case folding also maps some of
    them to ASCII letters (U+0130, U+017F, the Kelvin sign).
    """
    if not text.isascii():
        return True
    lower = text.lower()
    for word in words:  # noqa: SIM110 - a loop: a third cheaper than any() over a generator, per log line
        if word in lower:
            return True
    return False


__all__ = [
    "CONTROL_CHARACTERS",
    "CREDENTIAL_VALUES",
    "CREDENTIAL_WORDS",
    "REDACTED",
    "SENSITIVE_HEADERS",
    "add_sensitive_headers",
    "credential_headers",
    "credential_setting",
    "is_credential_header",
    "is_credential_name",
    "is_credential_parameter",
    "printable",
    "printable_json",
    "redact_encoded_path",
    "redact_free_text",
    "redact_free_text_remembered",
    "redact_headers",
    "redact_path",
    "redact_query",
    "redact_targets",
    "redact_text",
    "redact_url",
    "redact_url_credentials",
    "redact_url_remembered",
    "redact_values",
]
