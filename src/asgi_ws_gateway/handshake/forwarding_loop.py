"""Forwarding loops: a handshake that has already passed through this gateway too many times.

Every upstream request the gateway sends names it in ``Via`` (RFC 9110 §7.6.3,
:data:`~asgi_ws_gateway.upstream.headers.VIA_RECEIVED_BY`). An upstream URL that leads back to a
gateway (its own address, a load balancer in front of it, another gateway pointing back) would
otherwise open a new upstream connection per hop until the headers outgrow a limit: one client
handshake became thousands of connections. Counting the gateway's own entries bounds that at
``handshake_limits.max_gateway_hops`` + 1 upstream connections, and a chain of gateways that long works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import HandshakeDenied
from ..upstream.headers import VIA_RECEIVED_BY

# One Via entry naming the gateway: a received-protocol ("1.1", "HTTP/1.1"), then its received-by,
# followed by a comment, another entry or the end.
_NAME = VIA_RECEIVED_BY.encode()
_OWN_ENTRY = re.compile(rb"(?:^|,)[ \t]*[^ \t,]+[ \t]+" + re.escape(_NAME) + rb"(?=[ \t,]|$)")


def gateway_hops(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """How many of the request's ``Via`` entries name this gateway (in any of its header lines).

    The pattern runs only on a value that names the gateway at all: a client's 30 KB ``Via`` of
    ``a,a,a,...`` took it 2.3 ms (a handshake's CPU several times over); the substring test, microseconds.
    """
    return sum(len(_OWN_ENTRY.findall(value)) for name, value in headers if name.lower() == b"via" and _NAME in value)


def check_forwarding_loop(headers: Iterable[tuple[bytes, bytes]], max_hops: int) -> None:
    """Raise :class:`HandshakeDenied` (508, ``loop_detected``) when the request has already passed
    through the gateway more than ``max_hops`` times."""
    hops = gateway_hops(headers)
    if hops > max_hops:
        detail = (f"the handshake has already passed through {hops} gateway hops (Via: {VIA_RECEIVED_BY}); "
                  f"at most {max_hops} are accepted: a forwarding loop, or a longer chain than "
                  "handshake_limits.max_gateway_hops allows")  # fmt: skip
        raise HandshakeDenied(508, detail, reason="loop_detected")


__all__ = ["check_forwarding_loop", "gateway_hops"]
