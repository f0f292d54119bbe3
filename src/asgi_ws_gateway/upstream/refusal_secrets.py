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
from ..redact import is_credential_header, is_credential_parameter
from .base import UpstreamRequest
from .secret_index import MIN_SCRUBBED, SecretIndex

_HEX = re.compile(rb"[0-9A-Fa-f:-]+")
"""A key written in hex (``-`` and ``:`` between its groups): one a backend may print in either case."""
_SCHEMES = frozenset({b"bearer", b"basic", b"token", b"digest", b"apikey"})


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


MAX_SPELLED = 32 * 1024
"""Bytes of credentials, every spelling counted, past which a refusal is relayed without its body and
header values instead of scrubbed (:func:`too_costly`)."""


def too_costly(credentials: Sequence[bytes]) -> bool:
    """Whether ``credentials`` spell to more than :data:`MAX_SPELLED` bytes: a client chooses its own (its
    ``Authorization``, a ``?key=`` per parameter), and indexing 400 KB of spellings cost ~60 ms of the event
    loop per refusal, ~150 ms with the scan. No client that means well sends 32 KiB of credentials."""
    return sum(map(len, credentials)) > MAX_SPELLED


def without_credentials(refusal: UpstreamRejected, credentials: Sequence[bytes] | SecretIndex) -> UpstreamRejected:
    """``refusal`` with each of ``credentials`` in its body and header values ``REDACTED`` (itself
    when none is there). The credentials are indexed once for the body and every header value; more
    than :data:`MAX_SPELLED` bytes of them: the refusal's status alone, without body or headers."""
    if not isinstance(credentials, SecretIndex) and too_costly(credentials):
        bare = UpstreamRejected(refusal.status, [], b"")
        bare.__traceback__ = refusal.__traceback__
        return bare
    index = credentials if isinstance(credentials, SecretIndex) else SecretIndex(credentials)
    body = index.scrubbed(refusal.body or b"")
    headers = [(name, index.scrubbed(value)) for name, value in refusal.headers]
    if body == (refusal.body or b"") and headers == refusal.headers:
        return refusal
    scrubbed = UpstreamRejected(refusal.status, headers, body)
    scrubbed.__traceback__ = refusal.__traceback__
    return scrubbed


def scrubbed_bytes(data: bytes, credentials: Sequence[bytes] | SecretIndex) -> bytes:
    """``data`` with each of ``credentials`` ``REDACTED``, then each run of :data:`MIN_SCRUBBED` bytes or
    more that is part of one (:func:`without_pieces`). Never longer than it was.

    Each credential is taken whole, longest first (a value that holds another is taken whole), as
    ``data.replace`` of each in turn would; :class:`.secret_index.SecretIndex` finds them in one scan of
    ``data`` (pass one to scrub several texts: it is built once)."""
    index = credentials if isinstance(credentials, SecretIndex) else SecretIndex(credentials)
    return index.scrubbed(data)


def without_pieces(data: bytes, credentials: Sequence[bytes] | SecretIndex) -> bytes:
    """``data`` with each run of :data:`MIN_SCRUBBED` bytes or more of one of ``credentials`` ``REDACTED``
    (one word per run): a credential cut at either end, or its middle alone, as an upstream that quotes
    it within a bound (a close reason's 123 bytes, an error page's excerpt) leaves it.

    A credential after a scheme (``Bearer abc…``) counts by the credential alone when that is one of
    ``credentials`` too: ``Bearer a`` would otherwise take the start of a page's "Bearer authentication"."""
    index = credentials if isinstance(credentials, SecretIndex) else SecretIndex(credentials)
    return index.without_pieces(data)


__all__ = [
    "MAX_SPELLED",
    "MIN_SCRUBBED",
    "SecretIndex",
    "scrubbed_bytes",
    "sent_credentials",
    "too_costly",
    "without_credentials",
    "without_pieces",
]
