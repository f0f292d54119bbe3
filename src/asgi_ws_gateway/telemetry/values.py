"""What telemetry records of a value a client chose: redacted, and at most 512 characters.

A client chooses its User-Agent, Host, path, subprotocol and close reason, and (through a token) its
subject. Each is recorded on spans and in the access log, once per handshake: unbounded, an 8 KB
header set made an 8.6 KB handshake span (24 KB of headers, 24 KB), every one exported and stored.
So each passes through here: credentials redacted first (``Bearer eyJ...``, ``token=...``; a value
cut first could keep half a token), then cut to :data:`MAX_CHARS` with :data:`CUT_MARK` at the end.

The subprotocol is recorded only when it reads like a protocol name (``graphql-transport-ws``,
``v12.stomp``): clients put bearer tokens in ``Sec-WebSocket-Protocol``. An address (``client.address``,
``network.peer.address``, ``server.address`` from ``Host``) is recorded as it is when it reads like one,
else as a client's text, its control characters escaped (:func:`address_text`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..bounded import remember
from ..redact import REDACTED, printable, redact_free_text, redact_free_text_remembered, redact_path

MAX_CHARS = 512
"""The most characters a client's value takes in telemetry, :data:`CUT_MARK` included."""
CUT_MARK = "...[cut]"
SCANNED_CHARS = 2 * MAX_CHARS
"""The most characters of a value that redaction reads: the rest is cut anyway, and scanning all of an
8 KB header of ``a=b;`` pairs took 1.1 ms per value, per handshake."""

_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

# An RFC 6455 subprotocol is an RFC 2616 token; registered names are short (most under 30 characters).
_PROTOCOL_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def cut(text: str) -> str:
    """``text``, or its first characters and :data:`CUT_MARK`, :data:`MAX_CHARS` in all."""
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - len(CUT_MARK)] + CUT_MARK


def client_text(text: str) -> str:
    """A client's free text as telemetry records it: credentials redacted, then :func:`cut` (the texts
    that redaction leaves unchanged remembered: most repeat)."""
    if len(text) > SCANNED_CHARS:
        return cut(redact_free_text(_without_trailing_jwt(text[:SCANNED_CHARS])))
    redacted = redact_free_text_remembered(text)
    return redacted if len(redacted) <= MAX_CHARS else cut(redacted)


def client_path(path: str) -> str:
    """The request path as telemetry records it: :func:`client_text`, the paths it leaves unchanged
    remembered (``redact.redact_path``: most repeat)."""
    if len(path) > SCANNED_CHARS:
        return client_text(path)
    redacted = redact_path(path)
    return redacted if len(redacted) <= MAX_CHARS else cut(redacted)  # cut's test inline: once a handshake


# An IPv4 or IPv6 address as ``str()`` writes one, without a zone: the forwarded clients the gateway
# parsed and most peers. Checked first so that addresses (one per client) do not fill client_text's store.
_PLAIN_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


def address_text(address: str) -> str:
    """An address as telemetry records it: as it is when it reads like one, else :func:`client_text`
    with its control, line-breaking and bidi characters escaped (``redact.printable``), then :func:`cut`.

    What is not a plain address is a zoned peer (``fe80::1%eth0``: the kernel's, kept), a ``Host``, or
    a peer a server rewrote from a forwarding header (uvicorn's ``--proxy-headers``): a client's text.
    """
    if address in _plain_addresses:
        return address
    if _PLAIN_ADDRESS.fullmatch(address):
        remember(_plain_addresses, address, None, _PLAIN_ADDRESSES)  # 45 characters at most
        return address
    return cut(printable(client_text(address), quote=False))  # redaction's rules may change: not kept


_plain_addresses: dict[str, None] = {}
"""Plain addresses seen (a span's client and server, the access log's peer: the same few, again and
again), at most :data:`_PLAIN_ADDRESSES`, forgotten together when full."""
PLAIN_ADDRESSES: Mapping[str, None] = _plain_addresses
"""Read-only: an address in it is :func:`address_text`'s answer as it is (callers on the traced handshake
test it inline, a call fewer each; it is emptied in place, never replaced)."""
_PLAIN_ADDRESSES = 1024


def _without_trailing_jwt(text: str) -> str:
    """``text`` with a JWT that the scanned prefix cut before its signature redacted (its three-segment
    pattern no longer matches): ``eyJ...`` and at most one more segment at its end.

    Found from the end, in C: a pattern anchored there (``eyJ[A-Za-z0-9_-]*(?:\\.[A-Za-z0-9_-]*)?\\Z``)
    read from every ``eyJ`` to the end again, 12 ms for ``"eyJ" * 340 + "..."``, per value.
    """
    head = text.rstrip(_BASE64URL)
    if head.endswith("."):
        head = head[:-1].rstrip(_BASE64URL)
    start = text.find("eyJ", len(head))
    return text if start < 0 else text[:start] + REDACTED


def protocol_name(subprotocol: str) -> str:
    """``subprotocol`` when it is a token of at most 64 characters without a credential, else ``REDACTED``."""
    if _PROTOCOL_NAME.fullmatch(subprotocol) is None or redact_free_text(subprotocol) != subprotocol:
        return REDACTED
    return subprotocol


__all__ = [
    "CUT_MARK",
    "MAX_CHARS",
    "PLAIN_ADDRESSES",
    "address_text",
    "client_path",
    "client_text",
    "cut",
    "protocol_name",
]
