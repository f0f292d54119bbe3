"""Exceptions raised by the gateway.

Hierarchy::

    GatewayError
    ├── ConfigError            invalid configuration (every problem, by field path)
    └── HandshakeDenied        the handshake is refused with an HTTP status
        ├── GatewayOverloaded  -> 503: the gateway is out of connections or of a system resource
        └── UpstreamError      the upstream could not be reached or refused us
            ├── UpstreamUnreachable     -> 502
            ├── UpstreamTimeout         -> 504
            │   └── NameLookupTimeout   -> 504: the upstream's host name did not resolve in time
            └── UpstreamRejected        -> the upstream's own 4xx/5xx status and body
    └── MessageRejected        a message policy stops one message of an open connection
        ├── DropMessage        the message goes no further (the sender may get an error reply)
        └── CloseConnection    both sides are closed (the offender with ``code``, the peer with ``peer_code``)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from ._types import Headers


class GatewayError(Exception):
    """Root of every exception the gateway raises."""


class ConfigError(GatewayError, ValueError):
    """The configuration is invalid; ``problems`` lists ``"field.path: what is wrong"`` lines."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid gateway configuration{where} ({len(self.problems)} problem(s)):\n{lines}")


class HandshakeDenied(GatewayError):
    """Refuse the handshake with an HTTP ``status``.

    The client receives an ``application/problem+json`` body (RFC 9457) built from ``title`` and
    ``detail`` unless ``body`` is given (then it is sent as is, with the ``headers`` given).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Headers | None = None,
        body: bytes | None = None,
        reason: str = "denied",
        policy: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.headers = headers or []
        self.body = body
        self.reason = reason
        """A short machine-readable cause, e.g. ``upstream_unreachable`` (logs and metrics)."""
        self.policy = policy
        """The name of the handshake policy that denied, if a policy did (logs and metrics)."""


class GatewayOverloaded(HandshakeDenied):
    """The gateway itself cannot take the connection now: never a backend's fault (no failover, no cooldown)."""

    def __init__(self, detail: str, reason: str = "gateway_overloaded") -> None:
        super().__init__(503, detail, headers=[(b"retry-after", b"5")], reason=reason)


LOCAL_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})
"""Errors of opening a connection that are this process's or host's own shortage: file descriptors
(per process, system-wide), socket buffers, memory, local ports to connect from."""


class UpstreamError(HandshakeDenied):
    """The upstream leg of the handshake failed."""


class UpstreamUnreachable(UpstreamError):
    def __init__(self, detail: str) -> None:
        super().__init__(502, detail, reason="upstream_unreachable")


class UpstreamTimeout(UpstreamError):
    def __init__(self, detail: str) -> None:
        super().__init__(504, detail, reason="upstream_timeout")


class NameLookupTimeout(UpstreamTimeout):
    """The upstream's host name did not resolve in time: its DNS, not the backend (504, ``upstream_dns_timeout``)."""

    def __init__(self, host: str, seconds: float) -> None:
        super().__init__(f"the upstream host name {host} did not resolve in {seconds:.3g} s (DNS lookup timed out)")
        self.reason = "upstream_dns_timeout"


def local_shortage(label: str, error: OSError) -> GatewayOverloaded | None:
    """The refusal for an ``OSError`` of opening the connection to ``label`` that is the gateway's own
    shortage (503, the backend not blamed); None when the backend may be at fault (unreachable)."""
    if error.errno not in LOCAL_RESOURCE_ERRORS:
        return None
    shortage = os.strerror(error.errno)  # the errno's text only: the message may name an address
    return GatewayOverloaded(f"no connection to {label} could be opened: {shortage} (on the gateway)")


class UpstreamRejected(UpstreamError):
    """The upstream answered the handshake with a non-101 status; relayed to the client."""

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        super().__init__(
            status,
            f"upstream rejected the handshake with {status}",
            headers=headers,
            body=body,
            reason="upstream_rejected",
        )


RELAYED_STATUSES = range(400, 600)
"""The upstream answers a client gets as they are: the upstream's own refusals (4xx, 5xx)."""


def upstream_refusal(label: str, status: int, headers: Headers, body: bytes) -> UpstreamError:
    """What an upstream's answer to the handshake other than 101 becomes, whatever the connector.

    Its own refusal (4xx, 5xx) is relayed to the client, with its headers and body. Anything else
    is a 502: a redirect is not followed, and a 1xx, a 2xx or a status outside 100-599 is no answer
    a client may get for its upgrade (a 100 as a final response leaves it waiting, a status outside
    the range is one the server refuses to send, answering 500 with a traceback).
    """
    if status in RELAYED_STATUSES:
        return UpstreamRejected(status, headers, body)
    if 300 <= status <= 399:
        return UpstreamUnreachable(f"{label} answered with a redirect ({status}), which is not followed")
    return UpstreamUnreachable(f"{label} answered the handshake with {status}, neither 101 nor a refusal")


class MessageRejected(GatewayError):
    """Raised by a message policy to stop the message it is looking at.

    Attributes:
        reason: a short machine-readable cause (``rate_limited``, ``schema_mismatch``): counted per
            policy in ``RelayStats.policy_actions`` and sent in error replies.
        detail: what a person reads in the error reply; never message content or a token.
    """

    action = "reject"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


class DropMessage(MessageRejected):
    """Drop the message; with ``reply`` (default) its sender gets an error message (see ``error_reply``).

    ``action`` is what the drop is counted as (``drop``; a refresh message the gateway consumed: ``refresh``).
    """

    action = "drop"

    def __init__(self, reason: str, detail: str = "", *, reply: bool = True, action: str = "drop") -> None:
        super().__init__(reason, detail)
        self.reply = reply
        self.action = action


class CloseConnection(MessageRejected):
    """Close the connection: the message's sender gets ``code``/``detail``, the other side ``peer_code``."""

    action = "close"

    def __init__(
        self, code: int, reason: str, detail: str = "", *, peer_code: int = 1001, peer_reason: str | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.code = code
        self.peer_code = peer_code
        self.peer_reason = peer_reason if peer_reason is not None else f"peer closed: {self.detail}"


__all__ = [
    "LOCAL_RESOURCE_ERRORS",
    "RELAYED_STATUSES",
    "CloseConnection",
    "ConfigError",
    "DropMessage",
    "GatewayError",
    "GatewayOverloaded",
    "HandshakeDenied",
    "MessageRejected",
    "NameLookupTimeout",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "local_shortage",
    "upstream_refusal",
]
