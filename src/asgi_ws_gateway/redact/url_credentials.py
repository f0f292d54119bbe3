"""A configured URL shown with only its credentials hidden (what the management API and its command line
show): its userinfo found as clients parse it, and the query and fragment parameters named as credentials."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from .credential_names import REDACTED, is_credential_parameter
from .text import redact_text

# A URL as a whole string: a scheme and "//" (leading white space is tolerated, as parsers do).
_URL_START = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")


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


def _redact_credential_parameters(text: str) -> str:
    """``a=1&password=x`` as ``a=1&password=REDACTED``: only parameters named as credentials."""
    parts = []
    for part in text.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and is_credential_parameter(unquote_plus(name)) else part)
    return "&".join(parts)


__all__ = ["redact_url_credentials"]
