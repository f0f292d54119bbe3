"""Sans-I/O: close codes and reasons as they may go on the wire, shared by the relay and the splice."""

from __future__ import annotations

from .._types import Message

TOO_BIG = "asgi_ws_gateway.too_big"
"""A key of the ``websocket.disconnect`` the gateway's protocol sends when it closed the client itself
with 1009 for a message over the limit the application set (``MAX_SIZE``): the gateway's refusal,
not a close of the client's, so the relay closes the upstream with 1001 as for one it found itself."""


def wire_code(code: int) -> int:
    """A close code that may be sent in a close frame, mapping the reserved ones."""
    if code == 1005:
        return 1000
    if code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011  # 1006, 1015 and codes no peer may send


def client_vanished(disconnect: Message) -> bool:
    """True when a ``websocket.disconnect`` reports a lost TCP connection rather than a close frame.

    Servers disagree: uvicorn's legacy ``websockets`` implementation reports 1006, while its
    ``wsproto`` and ``websockets-sansio`` implementations report 1005 *without* a ``reason`` key
    (a close frame without a status code comes as 1005 with ``reason: ""``).
    """
    code = disconnect.get("code", 1005)
    return code == 1006 or (code == 1005 and "reason" not in disconnect)


def wire_reason(reason: str) -> str:
    """A close reason cut to the 123 bytes a close frame holds, on a character boundary."""
    encoded = reason.encode()
    return reason if len(encoded) <= 123 else encoded[:123].decode(errors="ignore")


__all__ = ["TOO_BIG", "client_vanished", "wire_code", "wire_reason"]
