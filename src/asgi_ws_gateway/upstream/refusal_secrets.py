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


def scrubbed_bytes(data: bytes, credentials: Sequence[bytes]) -> bytes:
    """``data`` with each of ``credentials`` ``REDACTED``, then each run of :data:`MIN_SCRUBBED` bytes or
    more that is part of one (:func:`without_pieces`). Never longer than it was."""
    for secret in credentials:  # longest first: a value that holds another is taken whole
        if secret in data:
            data = data.replace(secret, _REDACTED)
    if not credentials or len(data) < MIN_SCRUBBED:
        return data
    return without_pieces(data, credentials)


def without_pieces(data: bytes, credentials: Sequence[bytes]) -> bytes:
    """``data`` with each run of :data:`MIN_SCRUBBED` bytes or more of one of ``credentials`` ``REDACTED``
    (one word per run): a credential cut at either end, or its middle alone, as an upstream that quotes
    it within a bound (a close reason's 123 bytes, an error page's excerpt) leaves it.

    A credential after a scheme (``Bearer abc…``) counts by the credential alone when that is one of
    ``credentials`` too: ``Bearer a`` would otherwise take the start of a page's "Bearer authentication"."""
    listed = set(credentials)
    secrets = [secret for secret in credentials if secret.partition(b" ")[2].strip() not in listed]
    spans = _shared_runs(data, secrets)
    if not spans:
        return data
    out = bytearray()
    written = 0
    for start, end in sorted(spans):
        if end <= written:
            continue
        if start > written or not out:
            out += data[written:start] + _REDACTED
        written = end  # (an overlapping run lengthens the one before: one word)
    return bytes(out + data[written:])


def _shared_runs(data: bytes, secrets: Sequence[bytes]) -> list[tuple[int, int]]:
    """Where ``data`` holds :data:`MIN_SCRUBBED` bytes or more in a row of one of ``secrets``, as
    ``(start, end)``.

    A run of 8 bytes spans 5 starts, one a multiple of 5, and the 4 bytes from there are a block of its
    secret: ``data`` is read at every fifth byte (an error page of 64 KiB in ~1 ms), and a block found is
    grown both ways as far as ``data`` and the secret agree."""
    blocks = {secret[at : at + _BLOCK] for secret in secrets for at in range(len(secret) - _BLOCK + 1)}
    runs: list[tuple[int, int]] = []
    reached = 0
    for at in range(0, len(data) - _BLOCK + 1, _STRIDE):
        if at + _BLOCK <= reached or data[at : at + _BLOCK] not in blocks:
            continue
        for secret in secrets:
            where = secret.find(data[at : at + _BLOCK])
            while where != -1:
                start, end, low, high = at, at + _BLOCK, where, where + _BLOCK
                while start > 0 and low > 0 and data[start - 1] == secret[low - 1]:
                    start, low = start - 1, low - 1
                while end < len(data) and high < len(secret) and data[end] == secret[high]:
                    end, high = end + 1, high + 1
                if end - start >= MIN_SCRUBBED:
                    runs.append((start, end))
                    reached = max(reached, end)
                where = secret.find(data[at : at + _BLOCK], where + 1)
    return runs


_BLOCK = 4
_STRIDE = MIN_SCRUBBED - _BLOCK + 1
"""A run of :data:`MIN_SCRUBBED` bytes holds a whole :data:`_BLOCK` starting at one of any
:data:`_STRIDE` positions in a row."""


__all__ = [
    "MIN_SCRUBBED",
    "scrubbed_bytes",
    "sent_credentials",
    "without_credentials",
    "without_pieces",
]
