"""Which local user opened a loopback connection: the owner the kernel records for the client's socket.

On loopback every local user shares the administrator's address: keyed by address, the admin lockout
(:mod:`.lockout`) let any local user lock the administrator out with wrong tokens. And every address of
127.0.0.0/8 is a local one any user may bind: a guesser took a fresh key per source address. The kernel
knows who owns the client's end of a loopback TCP connection (``ss -e`` shows it, read through
``NETLINK_SOCK_DIAG``, no privilege needed), and no other user can make a socket under the
administrator's uid: the lockout counts a loopback client by that uid instead.

Linux only. Elsewhere, for a connection that is not loopback TCP, and when the look-up fails, None:
the address alone keys the lockout, as before. The uid is looked up for the peer in the scope it is
given: the management API gives the transport's peer (:mod:`.transport_peer`), not the one a server
rewrote from ``X-Forwarded-For`` (uvicorn's proxy headers, on by default for 127.0.0.1), with which
a local client named another's port.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from typing import Any

from ..forwarded import parse_ip

logger = logging.getLogger(__name__)

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # struct inet_diag_req_v2, up to its inet_diag_sockid
_PORTS = struct.Struct("!HH")  # inet_diag_sockid's source and destination ports, big-endian
_UID_AT = _HEADER.size + 64  # struct inet_diag_msg: family..retrans (4), sockid (48), expires, queues (12), uid


def loopback_user(scope: Any, address: str) -> int | None:
    """The uid owning the client's socket of ``scope``'s connection when it is loopback TCP and
    ``address`` (the client the gateway decided) is that peer itself, not one a proxy reported; else None."""
    client, server = scope.get("client"), scope.get("server")
    if not (isinstance(client, tuple | list) and isinstance(server, tuple | list)):
        return None
    if len(client) != 2 or len(server) != 2 or not isinstance(client[1], int) or not isinstance(server[1], int):
        return None
    peer, local = parse_ip(str(client[0])), parse_ip(str(server[0]))
    if peer is None or local is None or not peer.is_loopback or peer != parse_ip(address):
        return None
    if not hasattr(socket, "AF_NETLINK"):  # not Linux
        return None
    try:
        return socket_owner(peer, client[1], local, server[1])
    except OSError as exc:  # no netlink (not Linux, a sandbox): the address keys it
        logger.debug("no owner for the loopback client %s:%d: %s", peer, client[1], exc)
        return None


def socket_owner(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    source_port: int,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination_port: int,
) -> int | None:
    """The uid owning the TCP socket from ``source:source_port`` to ``destination:destination_port``
    (None when there is none); raises ``OSError`` when the kernel cannot be asked."""
    family = socket.AF_INET if source.version == 4 else socket.AF_INET6
    sockid = (
        _PORTS.pack(source_port, destination_port)
        + source.packed.ljust(16, b"\0")
        + destination.packed.ljust(16, b"\0")
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)  # any interface; no cookie: find it by its addresses
    )
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + sockid
    message = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + request
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)  # the kernel answers at once; never hang a request on it
        diag.sendto(message, (0, 0))
        answer = diag.recv(4096)
    if len(answer) < _UID_AT + 4 or _HEADER.unpack_from(answer)[1] == _NLMSG_ERROR:
        return None  # ENOENT: no such socket (closed meanwhile)
    if _PORTS.unpack_from(answer, _HEADER.size + 4) != (source_port, destination_port):
        return None
    uid: int = struct.unpack_from("=I", answer, _UID_AT)[0]
    return uid


__all__ = ["loopback_user", "socket_owner"]
