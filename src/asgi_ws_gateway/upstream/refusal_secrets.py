"""An upstream's refusal without the credentials the gateway sent in the handshake it refused.

An upstream's own refusal (4xx, 5xx) reaches the client with its headers and body
(:func:`~asgi_ws_gateway.errors.upstream_refusal`). A backend whose error page echoes the request it
refused (a debug page, a framework's 400 quoting the request line and headers) handed the client the
operator's credentials the gateway had added: a ``set-header`` of ``X-Api-Key``, a
``set-query-parameter`` of ``api_key``, a configured upstream URL's ``?token=``. Every value of a
credential header or query parameter the gateway sent (:func:`sent_credentials`) is ``REDACTED`` in
the refusal's body and header values, as sent and percent-decoded (:func:`without_credentials`).
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
    """``data`` with each of ``credentials`` ``REDACTED``."""
    for secret in credentials:  # longest first: a value that holds another is taken whole
        if secret in data:
            data = data.replace(secret, _REDACTED)
    return data


__all__ = ["MIN_SCRUBBED", "scrubbed_bytes", "sent_credentials", "without_credentials"]
