"""How much of what is written to a TCP transport its peer has taken in: the probe of the stall rule.

A peer whose transport's writes are paused is judged by its progress, not by the pause: one reading
slowly but steadily keeps the writes paused for long while the kernel's send buffer (MBs) drains. The
splice's sides (:mod:`.sides`) and the gateway's server protocol (the relay's client leg) both ask,
within the API's ``ping_timeout``: the splice is given it, the server protocol reads it from the
application's ``websocket.accept`` (:data:`~.asgi_extension.PING_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from typing import Any

_OUTQ: int | None
try:  # Linux: the bytes of a TCP socket its peer has not acknowledged (SIOCOUTQ)
    from fcntl import ioctl
    from termios import TIOCOUTQ as _OUTQ
except ImportError:  # pragma: no cover  (not Linux: the transport's buffer alone)
    _OUTQ = None
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_ACKED = struct.Struct("=Q")
_ACKED_AT = 120  # struct tcp_info's tcpi_bytes_acked (Linux 4.1 and later)


def undelivered(transport: asyncio.BaseTransport) -> int:
    """Bytes written to ``transport`` its peer has not taken in yet: the transport's buffer and what the
    kernel holds unacknowledged (Linux SIOCOUTQ); the buffer alone where the kernel's is unknown."""
    try:
        queued: int = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):  # a transport that does not tell (asyncio's base class)
        return 0
    sock = _socket(transport)
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued += int.from_bytes(ioctl(sock.fileno(), _OUTQ, bytes(4)), sys.byteorder)
    return queued


def taken_in(transport: asyncio.BaseTransport) -> int:
    """A count that grows as ``transport``'s peer takes in what is written to it: the bytes its TCP stack
    acknowledged (Linux TCP_INFO), or else minus :func:`undelivered`. The acknowledged count is not
    masked by new writes: a peer still written to shows its progress too."""
    sock = _socket(transport)
    if _TCP_INFO is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _ACKED_AT + _ACKED.size)
            if len(info) >= _ACKED_AT + _ACKED.size:
                return int(_ACKED.unpack_from(info, _ACKED_AT)[0])
    return -undelivered(transport)


def _socket(transport: asyncio.BaseTransport) -> Any:
    """The transport's socket; None if it has none or does not say."""
    try:
        return transport.get_extra_info("socket")
    except AttributeError:
        return None


__all__ = ["taken_in", "undelivered"]
