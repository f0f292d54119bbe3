"""URLs fit for a span: ``url.full`` of an upstream attempt, with no credential in it.

Clients and configurations put credentials in query strings (``?access_token=``,
``?subscription-key=``) and in userinfo, so every query value becomes ``REDACTED`` (the names stay:
they say what was sent; a bare item without ``=`` may itself be a key, so it is redacted whole) and
userinfo is dropped. ``redact.py`` does the same for logs; the two may
merge.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "REDACTED"


def redacted_url(url: str) -> str:
    """``url`` without userinfo or fragment, each query value replaced by ``REDACTED``.

    >>> redacted_url("wss://u:p@example.com:8443/ws/room?token=abc&key")
    'wss://example.com:8443/ws/room?token=REDACTED&REDACTED'
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&") if pair) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={REDACTED}" if sep else REDACTED


__all__ = ["REDACTED", "redacted_url"]
