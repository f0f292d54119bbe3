"""The size limits of a handshake request (headers, target), and the names of its headers, checked
before any policy runs.

Servers differ: uvicorn's websockets-sansio refuses a header line over 8 KiB and more than 128
headers, wsproto (through h11) a request head over 16 KiB, and httptools has no limit at all. The
gateway holds every server to the same configured limit, because what it accepts it also forwards
to the upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .._types import Scope
from ..config.settings import HandshakeLimitsConfig
from ..errors import HandshakeDenied
from ..upstream.header_lists import LISTS, MAX_ITEMS, TOO_MANY, crowded_list

logger = logging.getLogger(__name__)

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


def check_lists(scope: Scope) -> None:
    """400 (``bad_request``) for a list header (``Connection``, ``Upgrade``, ``Sec-WebSocket-Protocol``,
    ``Sec-WebSocket-Extensions``) holding more items than anything should parse (``upstream.header_lists``),
    before the policies read the offers and the connectors parse them. The gateway's protocol refuses it
    before its own parsers; this holds every other server to the same rule. The header lines as sent, and
    (wsproto keeps the subprotocols out of the scope's headers) ``scope["subprotocols"]`` when they hold
    none, as ``upstream.request.offered_subprotocols`` reads them: each element an item."""
    lines: dict[str, list[str]] = {}
    # A line holds at most one item more than it has characters (each separator is one): lines of 64
    # characters and line counts together, in all the list headers, cannot hold more than MAX_ITEMS in any
    # (a handshake's "Upgrade" and "websocket": 18). Then none is counted (~25 opcodes a line, six calls).
    bound = 0
    for name, value in scope.get("headers") or ():
        listed_name = _LIST_NAMES.get(name.lower())
        if listed_name is not None:
            lines.setdefault(listed_name, []).append(value.decode("latin-1"))
            bound += 1 + len(value)
    listed = scope.get("subprotocols")
    if _PROTOCOL not in lines and type(listed) is list:
        lines[_PROTOCOL] = elements = [element for element in listed if type(element) is str]
        bound += sum(map(len, elements)) + len(elements)
    if bound <= MAX_ITEMS:
        return
    crowded = crowded_list(lambda lowered: lines.get(lowered, ()))
    if crowded is not None:
        raise HandshakeDenied(400, f"the {crowded} header {TOO_MANY}", reason="bad_request")


_LIST_NAMES = {lowered.encode(): lowered for lowered in LISTS}
_PROTOCOL = "sec-websocket-protocol"


def underscored(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The names of ``headers`` that contain an underscore (``handshake_limits.headers_with_underscores``)."""
    return [name for name, _ in headers if name.find(b"_") != -1]  # find: see routing.split_path


def without_underscored(scope: Scope) -> Scope:
    """``scope``, or a copy without the headers whose names contain an underscore when it has some.

    Many upstream stacks turn header names into variables (CGI's ``HTTP_X_USER``, WSGI, PHP, Rack,
    Django's ``META``) and read ``X_User`` and ``X-User`` as one: a client's ``X_User`` could then
    stand in for an ``X-User`` that a policy checked, removed or set. Dropped here, before any policy
    reads the request, neither the policies nor the upstream see them (nginx ignores them alike).
    """
    headers = scope.get("headers") or ()
    if b"".join([name for name, _ in headers]).find(b"_") == -1:  # one search for all the names
        return scope
    logger.debug("dropped request headers with underscores in their names: %s", underscored(headers))
    return {**scope, "headers": [(name, value) for name, value in headers if name.find(b"_") == -1]}


def check_no_underscores(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """``headers_with_underscores: reject``: 400 for a request header whose name contains an underscore."""
    names = underscored(headers)
    if names:
        shown = ", ".join(repr(name.decode("latin-1")[:64]) for name in names[:3])
        raise HandshakeDenied(400, f"request header names must not contain '_': {shown}", reason="invalid_header_name")


__all__ = ["check_header_limits", "check_lists", "check_no_underscores", "underscored", "without_underscored"]
