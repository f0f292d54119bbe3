"""How many items a client may list in the handshake's list headers, counted before any parser reads them.

``Connection``, ``Upgrade``, ``Sec-WebSocket-Protocol`` (subprotocols) and ``Sec-WebSocket-Extensions``
(extensions and their parameters) are lists (RFC 9110 §5.6.1, RFC 6455 §4.1, §9.1) that no RFC bounds.
websockets' parsers read each item with regular expressions, a few microseconds an item, and the
gateway's WebSocket protocol runs them in its accept, before the application and so before any policy
(the splice parses the deflate offer again after the policies). Four 7.8 KB lines of ``a,a,a,...``,
within every size limit, cost a worker 24-26 ms of CPU in ``Sec-WebSocket-Protocol`` (13-15 ms in
``Connection``) for a handshake that ``validate-jwt`` or ``ip-filter`` then refused (1 ms without
them); junk extension offers, 48 ms for an admitted one (4 ms). A browser lists two connection
options, a few subprotocols and one extension: :data:`MAX_ITEMS` in each header is room for every
real client, and a request listing more is a 400 before anything parses it (the gateway's protocol
and the middleware alike).

Items are counted by their separators, over all of a header's lines, empty ones included, as the
parsers meet them: ``,`` in every list, and ``;`` (before each parameter) in the extensions. A
separator inside a quoted parameter value counts too: the count may be high, never low.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

MAX_ITEMS = 64
"""Items one list header may hold, all its lines together (an extension's parameters are items too)."""

LISTS: dict[str, tuple[str, str]] = {
    "connection": ("Connection", ","),
    "upgrade": ("Upgrade", ","),
    "sec-websocket-protocol": ("Sec-WebSocket-Protocol", ","),
    "sec-websocket-extensions": ("Sec-WebSocket-Extensions", ",;"),
}
"""The list headers, by lower-case name: how they are written, and the separators of their items."""


def _items(lines: Iterable[str], separators: str) -> int:
    return sum(1 + sum(line.count(separator) for separator in separators) for line in lines)


def crowded_list(lines_of: Callable[[str], Iterable[str]]) -> str | None:
    """The name of the first list header whose lines (``lines_of(lower-case name)``) hold more than
    :data:`MAX_ITEMS` items, or None."""
    for lowered, (name, separators) in LISTS.items():
        if _items(lines_of(lowered), separators) > MAX_ITEMS:
            return name
    return None


TOO_MANY = f"holds more than {MAX_ITEMS} items"
"""What a refusal says of a crowded header, after its name (never its value: a subprotocol may carry a token)."""


__all__ = ["LISTS", "MAX_ITEMS", "TOO_MANY", "crowded_list"]
