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

Each is looked for as a backend writes it back (:func:`_spellings`): a ``+``, ``/`` or ``=`` in it cut a
base64 key echoed percent-encoded (a redirect's URL), JSON-escaped (``\\/``) or HTML-escaped into runs
shorter than 8 bytes, none found and all of it there to read; and a ``Basic`` credential is looked for
decoded too (a backend that names the account and the password it refused).
"""

from __future__ import annotations

import binascii
import html
import json
import re
from collections.abc import Iterable, Sequence
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from ..errors import UpstreamRejected
from ..redact import REDACTED, is_credential_header, is_credential_parameter
from .base import UpstreamRequest

MIN_SCRUBBED = 8
"""Bytes a credential must have to be looked for: a shorter value ("1", "on") is a word a page holds
anyway, and taking it out would garble the page, not hide a secret."""

_HEX = re.compile(rb"[0-9A-Fa-f:-]+")
"""A key written in hex (``-`` and ``:`` between its groups): one a backend may print in either case."""
_SCHEMES = frozenset({b"bearer", b"basic", b"token", b"digest", b"apikey"})
_REDACTED = REDACTED.encode()


def sent_credentials(requests: Iterable[UpstreamRequest]) -> list[bytes]:
    """The credentials ``requests`` carry, longest first, each in every spelling a backend writes it back
    in (:func:`_spellings`): each credential header's value (and its credential alone, after an
    ``Authorization`` scheme; a ``Basic`` one decoded too), each credential query parameter's value as
    the URL writes it and percent-decoded."""
    found: set[bytes] = set()
    for request in requests:
        for name, value in request.headers:
            if is_credential_header(name):
                raw = value.encode("latin-1", "replace")
                scheme, _, credential = raw.partition(b" ")
                if scheme.lower() in _SCHEMES:
                    found.add(raw)  # as sent only: a spelling's "Bearer%20" would be a word of a page
                    found.update(_spellings(credential := credential.strip()))
                    if scheme.lower() == b"basic":
                        found.update(_spellings(*_basic(credential)))
                else:
                    found.update(_spellings(raw))
        for pair in urlsplit(request.url).query.split("&"):
            name, _, value = pair.partition("=")
            if value and is_credential_parameter(unquote_to_bytes(name).decode("utf-8", "replace")):
                found.update(_spellings(value.encode("latin-1", "replace"), unquote_to_bytes(value.replace("+", " "))))
    return sorted((secret for secret in found if len(secret) >= MIN_SCRUBBED), key=len, reverse=True)


def _spellings(*secrets: bytes) -> set[bytes]:
    """``secrets`` as sent and as a backend writes them back: as UTF-8 (Latin-1 bytes decoded as
    characters), percent-encoded (every reserved byte, or all but ``/``: a URL it builds), a hex key
    in lower and upper case, JSON-escaped (``\\u00e9``, and ``\\/`` as PHP writes it) and HTML-escaped
    (an error page)."""
    found = set(secrets)
    for secret in secrets:
        text = secret.decode("latin-1")
        for form in (secret,) if secret.isascii() else (secret, text.encode()):
            found.update((form, quote_from_bytes(form, safe="").encode(), quote_from_bytes(form).encode()))
        if _HEX.fullmatch(secret):  # a hex key printed in the other case
            found.update((secret.lower(), secret.upper()))
        escaped = json.dumps(text)[1:-1]
        found.update((escaped.encode(), escaped.replace("/", "\\/").encode(), html.escape(text).encode("latin-1")))
    return found


def _basic(credential: bytes) -> tuple[bytes, ...]:
    """A ``Basic`` credential's ``user:password`` and its password, decoded (none when it is not base64)."""
    try:
        decoded = binascii.a2b_base64(credential, strict_mode=True)
    except binascii.Error:
        return ()
    return decoded, decoded.partition(b":")[2]


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
    """The windows of :data:`MIN_SCRUBBED` bytes of ``data`` that one of ``secrets`` holds, as ``(start,
    end)``: a longer run shared with a secret is a chain of such windows, overlapping (one word when
    written).

    A window spans 5 starts, one a multiple of 5, and the 4 bytes from there are a block of its secret:
    ``data`` is read at every fifth byte (an error page of 64 KiB in ~1 ms), and only the 5 windows
    around a block found are looked up. Linear in ``data`` and ``secrets`` whatever they hold: growing
    each place a block occurs in a secret both ways cost a 4 KB secret of one repeated byte and a page
    echoing it cut 0.7 s, ~3 s at 8 KB, the event loop held meanwhile."""
    windows = {secret[at : at + MIN_SCRUBBED] for secret in secrets for at in range(len(secret) - MIN_SCRUBBED + 1)}
    blocks = {secret[at : at + _BLOCK] for secret in secrets for at in range(len(secret) - _BLOCK + 1)}
    runs: list[tuple[int, int]] = []
    last = len(data) - MIN_SCRUBBED
    for at in range(0, len(data) - _BLOCK + 1, _STRIDE):
        if data[at : at + _BLOCK] in blocks:
            for start in range(max(0, at - _STRIDE + 1), min(at, last) + 1):
                if data[start : start + MIN_SCRUBBED] in windows:
                    runs.append((start, start + MIN_SCRUBBED))
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
