"""Sans-I/O: close codes and reasons as they may go on the wire, shared by the relay and the splice."""

from __future__ import annotations

from .._types import Message

TOO_BIG = "asgi_ws_gateway.too_big"
"""A key of the ``websocket.disconnect`` the gateway's protocol sends when it closed the client itself
with 1009 for a message over the limit the application set (``MAX_SIZE``): the gateway's refusal,
not a close of the client's, so the relay closes the upstream with 1001 as for one it found itself."""

SERVER_SHUTDOWN = "asgi_ws_gateway.server_shutdown"
"""A key of the ``websocket.disconnect`` the gateway's protocol sends when the server shuts down: it
sent the client its 1012 itself, so the relay records the close as the gateway's and mirrors it."""

CLIENT_STALLED = "asgi_ws_gateway.client_stalled"
"""A key of the ``websocket.disconnect`` (1006) the gateway's protocol sends when it dropped a client
that took in nothing of what was queued to it (the stall rule): the gateway's close, recorded as the
splice records a stall (reason ``client read nothing``), the upstream told 1001 ``client went away``."""

SHUTDOWN_REFUSAL = "asgi_ws_gateway: the server is shutting down"
"""The message the gateway's protocol cancels a handshake's task with when the server shuts down
before the handshake was answered: the gateway answers it with its 503 draining refusal."""

CLIENT_GONE = "asgi_ws_gateway: the client left before its handshake was answered"
"""The message the gateway's protocol cancels a handshake's task with when the client's connection is
lost (reset, closed, or half-closed) before the handshake was answered: the gateway takes the
cancellation back, releases what the handshake took, answers nothing, and records it abandoned."""


_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def sendable(code: int) -> bool:
    """True for a close code a close frame may carry (RFC 6455 §7.4; the set ``websockets`` accepts):
    1000-1003, 1007-1014 and 3000-4999. Never 1004-1006 or 1015 (reserved), nor the unassigned
    0-999, 1016-2999 or 5000 and above: a peer that sends one breaks the protocol (1002)."""
    return code in _SENDABLE or 3000 <= code <= 4999


def wire_code(code: int) -> int:
    """A close code that may be sent in a close frame, mapping the reserved ones."""
    if code == 1005:
        return 1000
    return code if sendable(code) else 1011  # 1006, 1015 and codes no peer may send


def close_problem(payload: bytes) -> tuple[str, int] | None:
    """What makes a close frame's (unmasked) payload invalid, and the close code that calls for, or
    None: a one-byte payload or a code no peer may send (:func:`sendable`) is a protocol error
    (1002), a reason that is not UTF-8 invalid data (1007) (RFC 6455 §5.5.1, §7.4, Autobahn 7.x)."""
    if len(payload) == 1:
        return "invalid close frame", 1002
    if payload:
        try:  # the reason first, as websockets reads it: the same answer whichever path reads the frame
            payload[2:].decode()
        except UnicodeDecodeError:
            return "invalid UTF-8 in the close reason", 1007
        if not sendable(payload[0] << 8 | payload[1]):
            return "invalid close code", 1002
    return None


def close_code_and_reason(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's (unmasked) payload that :func:`close_problem` passed:
    1005 and no reason for an empty one, as received (RFC 6455 §7.1.5)."""
    return (payload[0] << 8 | payload[1], payload[2:].decode()) if payload else (1005, "")


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


__all__ = [
    "CLIENT_GONE",
    "CLIENT_STALLED",
    "SERVER_SHUTDOWN",
    "SHUTDOWN_REFUSAL",
    "TOO_BIG",
    "client_vanished",
    "close_code_and_reason",
    "close_problem",
    "sendable",
    "wire_code",
    "wire_reason",
]
