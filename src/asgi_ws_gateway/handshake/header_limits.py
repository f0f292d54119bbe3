"""The size limits of a handshake request (headers, target), checked before any policy runs.

Servers differ: uvicorn's websockets-sansio refuses a header line over 8 KiB and more than 128
headers, wsproto (through h11) a request head over 16 KiB, and httptools has no limit at all. The
gateway holds every server to the same configured limit, because what it accepts it also forwards
to the upstream.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import HandshakeLimitsConfig
from ..errors import HandshakeDenied

_SEPARATORS = 4  # ": " and CRLF, as on the wire


def check_header_limits(headers: Iterable[tuple[bytes, bytes]], target: bytes, limits: HandshakeLimitsConfig) -> None:
    """Raise :class:`HandshakeDenied` when the request's ``headers`` or ``target`` exceed ``limits``.

    Args:
        headers: the request headers, as in the ASGI scope.
        target: the raw path and query string.

    Raises:
        HandshakeDenied: status 414 (reason ``target_too_large``) or 431 (``headers_too_large``).
    """
    if len(target) > limits.max_target_bytes:
        detail = f"the request target takes {len(target)} bytes; at most {limits.max_target_bytes} are accepted"
        raise HandshakeDenied(414, detail, reason="target_too_large")
    count = size = 0
    for name, value in headers:
        count += 1
        size += len(name) + len(value) + _SEPARATORS
    if count > limits.max_headers:
        detail = f"the request has {count} headers; at most {limits.max_headers} are accepted"
    elif size > limits.max_header_bytes:
        detail = f"the request headers take {size} bytes; at most {limits.max_header_bytes} are accepted"
    else:
        return
    raise HandshakeDenied(431, detail, reason="headers_too_large")


__all__ = ["check_header_limits"]
