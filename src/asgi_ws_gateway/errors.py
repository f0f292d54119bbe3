"""Exceptions raised by the gateway.

Hierarchy::

    GatewayError
    ├── ConfigError            invalid configuration (every problem, by field path)
    └── HandshakeDenied        the handshake is refused with an HTTP status
        └── UpstreamError      the upstream could not be reached or refused us
            ├── UpstreamUnreachable     -> 502
            ├── UpstreamTimeout         -> 504
            └── UpstreamRejected        -> the upstream's own status and body
"""

from __future__ import annotations

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


class UpstreamError(HandshakeDenied):
    """The upstream leg of the handshake failed."""


class UpstreamUnreachable(UpstreamError):
    def __init__(self, detail: str) -> None:
        super().__init__(502, detail, reason="upstream_unreachable")


class UpstreamTimeout(UpstreamError):
    def __init__(self, detail: str) -> None:
        super().__init__(504, detail, reason="upstream_timeout")


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


__all__ = [
    "ConfigError",
    "GatewayError",
    "HandshakeDenied",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]
