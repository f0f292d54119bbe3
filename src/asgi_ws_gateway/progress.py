"""How much of what is written to a TCP transport its peer has taken in: the probe of the stall rule;
and how much the peer has sent, read or not: the keepalive's sign of life.

A peer whose transport's writes are paused is judged by its progress, not by the pause: one reading
slowly but steadily keeps the writes paused for long while the kernel's send buffer (MBs) drains. The
splice's sides (:mod:`.sides`) and the gateway's server protocol (the relay's client leg) both ask,
within the API's ``ping_timeout``: the splice is given it, the server protocol reads it from the
application's ``websocket.accept`` (:data:`~.asgi_extension.PING_TIMEOUT`).

A peer that sent bytes since a keepalive ping is alive, whether its reader took them in or not: the
server protocol asks :func:`received`, and, of one that sent none, :func:`may_send` (its silence is
its own only if the reader's backpressure left it room to send).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from _socket import socket as _bare_socket
from asyncio.trsock import TransportSocket
from typing import Any

_OUTQ: int | None
_INQ: int | None
try:  # Linux: the bytes of a TCP socket its peer has not acknowledged (SIOCOUTQ), and those unread (SIOCINQ)
    from fcntl import ioctl
    from termios import FIONREAD as _INQ
    from termios import TIOCOUTQ as _OUTQ
except ImportError:  # pragma: no cover  (not Linux: the transport's buffer alone)
    _OUTQ = _INQ = None
# Linux's layout below; another system's TCP_INFO (FreeBSD's) has its own: the fallbacks serve there.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_ACKED = struct.Struct("=Q")
_U32 = struct.Struct("=I")
# struct tcp_info (include/uapi/linux/tcp.h); a kernel returns as much of it as it has, so a field is
# read only when the answer reaches past it.
_ADVMSS_AT = 84  # tcpi_advmss: the MSS this side announced, the largest segment its peer sends
_ACKED_AT = 120  # tcpi_bytes_acked (Linux 4.1 and later)
_RECEIVED_AT = 128  # tcpi_bytes_received (Linux 4.1 and later): in order from the peer, read or not
_RCV_WND_AT = 232  # tcpi_rcv_wnd (Linux 6.2 and later): the receive window last announced to the peer


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
    info = _tcp_info(_socket(transport), _ACKED_AT + _ACKED.size)
    if len(info) >= _ACKED_AT + _ACKED.size:
        return int(_ACKED.unpack_from(info, _ACKED_AT)[0])
    return -undelivered(transport)


def received(transport: asyncio.BaseTransport) -> int | None:
    """The bytes ``transport``'s peer has sent that its TCP stack received, whether they were read or not
    (Linux TCP_INFO's tcpi_bytes_received): a count that grows while the peer sends, its reader paused or
    not. None where it is unknown."""
    info = _tcp_info(_socket(transport), _RECEIVED_AT + _ACKED.size)
    if len(info) < _RECEIVED_AT + _ACKED.size:
        return None
    return int(_ACKED.unpack_from(info, _RECEIVED_AT)[0])


def may_send(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport``'s peer has had room to send since the last segment sent to it: nothing it sent
    waits unread in the kernel (the whole receive window is open), or the window announced to it holds a
    full segment (Linux TCP_INFO's tcpi_rcv_wnd, 6.2 and later). False where that is unknown (no
    :func:`received` either, or an older kernel with bytes unread): its silence may be the reader's."""
    sock = _socket(transport)
    info = _tcp_info(sock, _RCV_WND_AT + _U32.size)
    if len(info) < _RECEIVED_AT + _ACKED.size or _INQ is None:
        return False
    try:
        unread = int.from_bytes(ioctl(sock.fileno(), _INQ, bytes(4)), sys.byteorder)
    except (OSError, ValueError):
        return False
    if unread == 0:
        return True
    if len(info) < _RCV_WND_AT + _U32.size:
        return False
    # A window below one segment may not let the peer's next one out: it may wait (a probe), not be dead.
    return bool(_U32.unpack_from(info, _RCV_WND_AT)[0] >= _U32.unpack_from(info, _ADVMSS_AT)[0] > 0)


_PEER_ENDED = frozenset({6, 7, 8, 9, 11})
"""tcpi_state once the peer's FIN or a reset is in: TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING."""


def peer_ended(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport``'s peer has ended its side of the TCP connection (its FIN or a reset is in), read
    or not: Linux TCP_INFO's tcpi_state, which a transport whose reading is paused does not otherwise learn.
    False where that is unknown."""
    info = _tcp_info(_socket(transport), 1)
    return bool(info) and info[0] in _PEER_ENDED


def _tcp_info(sock: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``sock``'s struct tcp_info; none where there is none.

    A socket that is not one (uvloop's transports hand out a stand-in that makes a ``socket.socket`` of
    the descriptor for each call, and detaches it: ~9.7 k instructions, at each close of a spliced
    connection for each side) is asked through a bare ``_socket.socket`` of its descriptor, detached
    the same way (~3 k)."""
    if _TCP_INFO is None or sock is None:
        return b""
    try:
        if type(sock) is TransportSocket or isinstance(sock, socket.socket):
            info: bytes = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, size)
            return info
        # The family, type and protocol given only name the object; the kernel answers for the descriptor.
        bare = _bare_socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
        try:
            info = bare.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, size)
        finally:
            bare.detach()  # (never closed: the descriptor is the transport's)
        return info
    except (OSError, ValueError):
        return b""


def _socket(transport: asyncio.BaseTransport) -> Any:
    """The transport's socket; None if it has none or does not say."""
    try:
        return transport.get_extra_info("socket")
    except AttributeError:
        return None


__all__ = ["may_send", "peer_ended", "received", "taken_in", "undelivered"]
