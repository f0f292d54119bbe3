"""An upstream's refusal without the credentials the gateway sent in the handshake it refused.

An upstream's own refusal (4xx, 5xx) reaches the client with its headers and body
(:func:`~asgi_ws_gateway.errors.upstream_refusal`). A backend whose error page echoes the request it
refused (a debug page, a framework's 400 quoting the request line and headers) handed the client the
operator's credentials the gateway had added: a ``set-header`` of ``X-Api-Key``, a
``set-query-parameter`` of ``api_key``, a configured upstream URL's ``?token=``. Every value of a
credential header or query parameter the gateway sent (:func:`sent_credentials`) is ``REDACTED`` in
the refusal's body and header values, as sent and percent-decoded (:func:`without_credentials`), and so
is every run of :data:`MIN_SCRUBBED` bytes or more of one (:func:`scrubbed_bytes`): a page that quotes a
key cut (``bad key sk_live_0123…``), or from its middle on, handed the client most of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import unquote_to_bytes, urlsplit

from ..errors import UpstreamRejected
from ..redact import REDACTED, is_credential_header, is_credential_parameter
from .base import UpstreamRequest

MIN_SCRUBBED = 8
"""Bytes a credential must have to be looked for: a shorter value ("1", "on") is a word a page holds
anyway, and taking it out would garble the page, not hide a secret."""

_SCHEMES = frozenset({b"bearer", b"basic", b"token", b"digest", b"apikey"})
_REDACTED = REDACTED.encode()


def sent_credentials(requests: Iterable[UpstreamRequest]) -> list[bytes]:
    """The credentials ``requests`` carry, longest first: each credential header's value (and its
    credential alone, after an ``Authorization`` scheme), each credential query parameter's value as
    the URL writes it and percent-decoded."""
    found: set[bytes] = set()
    for request in requests:
        for name, value in request.headers:
            if is_credential_header(name):
                raw = value.encode("latin-1", "replace")
                found.add(raw)
                scheme, _, credential = raw.partition(b" ")
                if scheme.lower() in _SCHEMES:
                    found.add(credential.strip())
        for pair in urlsplit(request.url).query.split("&"):
            name, _, value = pair.partition("=")
            if value and is_credential_parameter(unquote_to_bytes(name).decode("utf-8", "replace")):
                found.update((value.encode("latin-1", "replace"), unquote_to_bytes(value.replace("+", " "))))
    return sorted((secret for secret in found if len(secret) >= MIN_SCRUBBED), key=len, reverse=True)


def without_credentials(refusal: UpstreamRejected, credentials: Sequence[bytes]) -> UpstreamRejected:
    """``refusal`` with each of ``credentials`` in its body and header values ``REDACTED`` (itself
    when none is there)."""
    body = scrubbed_bytes(refusal.body or b"", credentials)
    headers = [(name, scrubbed_bytes(value, credentials)) for name, value in refusal.headers]
    if body == (refusal.body or b"") and headers == refusal.headers:
        return refusal
    scrubbed = UpstreamRejected(refusal.status, headers, body)
    scrubbed.__traceback__ = refusal.__traceback__
    return scrubbed


def scrubbed_bytes(data: bytes, credentials: Sequence[bytes], pieces: frozenset[bytes] | None = None) -> bytes:
    """``data`` with each of ``credentials`` ``REDACTED``, then each run that is part of one, as
    :func:`without_pieces` finds it (``pieces``: their :func:`credential_pieces`, worked out here when
    not given). Never longer than it was."""
    for secret in credentials:  # longest first: a value that holds another is taken whole
        if secret in data:
            data = data.replace(secret, _REDACTED)
    if not credentials or len(data) < MIN_SCRUBBED:
        return data
    return without_pieces(data, credential_pieces(credentials) if pieces is None else pieces)


def credential_pieces(credentials: Sequence[bytes]) -> frozenset[bytes]:
    """Every run of :data:`MIN_SCRUBBED` bytes of ``credentials``: what :func:`without_pieces` looks for.

    A credential after a scheme (``Bearer abc…``) counts by the credential alone when that is one of
    ``credentials`` too: ``Bearer a`` would otherwise take the start of a page's "Bearer authentication"."""
    listed = set(credentials)
    pieces: set[bytes] = set()
    for secret in credentials:
        if secret.partition(b" ")[2].strip() in listed:
            continue
        pieces.update(secret[at : at + MIN_SCRUBBED] for at in range(len(secret) - MIN_SCRUBBED + 1))
    return frozenset(pieces)


def without_pieces(data: bytes, pieces: frozenset[bytes]) -> bytes:
    """``data`` with each run whose every :data:`MIN_SCRUBBED` bytes are one of ``pieces`` ``REDACTED``
    (one word per run): a credential cut at either end, or its middle alone, as an upstream that
    quotes it within a bound (a close reason's 123 bytes, an error page's excerpt) leaves it."""
    if not pieces:
        return data
    out = bytearray()
    start = at = 0
    last = len(data) - MIN_SCRUBBED
    while at <= last:
        if data[at : at + MIN_SCRUBBED] not in pieces:
            at += 1
            continue
        end = at + MIN_SCRUBBED
        while end < len(data) and data[end - MIN_SCRUBBED + 1 : end + 1] in pieces:
            end += 1
        out += data[start:at] + _REDACTED
        start = at = end
    return data if start == 0 else bytes(out + data[start:])


__all__ = [
    "MIN_SCRUBBED",
    "credential_pieces",
    "scrubbed_bytes",
    "sent_credentials",
    "without_credentials",
    "without_pieces",
]
