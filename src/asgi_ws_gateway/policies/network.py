"""Network policies: ``ip-filter`` (CIDR allow/deny lists) and ``check-origin`` (cross-site hijacking).

The address ``ip-filter`` tests is ``context.request.client.ip``: the TCP peer, or the address a
trusted proxy reported (top-level ``trusted_proxies``), never a header an untrusted client sent.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ..forwarded import Networks, parse_ip, parse_network
from ..handshake.context import HandshakeContext
from .base import PolicyEnv, PolicySettings, deny, register_policy


class IpFilterSettings(PolicySettings):
    """``ip-filter``: a client in ``deny`` is refused; with ``allow`` set, only clients in it pass."""

    allow: list[str] = Field(default_factory=list, description="Addresses or CIDR networks (IPv4, IPv6).")
    deny: list[str] = Field(default_factory=list, description="Addresses or CIDR networks; checked first.")

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_network(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an IP address or network") from None
        return values


@register_policy("ip-filter")
class IpFilter:
    Settings = IpFilterSettings

    def __init__(self, settings: IpFilterSettings, env: PolicyEnv) -> None:
        self.name = "ip-filter"
        self.allow = Networks(settings.allow)
        self.deny = Networks(settings.deny)
        self.allow_all = not settings.allow

    async def apply(self, context: HandshakeContext) -> None:
        address = parse_ip(context.request.client.ip)
        if address is None or address in self.deny or not (self.allow_all or address in self.allow):
            raise deny(403, "the client address is not allowed", reason="ip_forbidden")


class CheckOriginSettings(PolicySettings):
    """``check-origin``: the browser's ``Origin`` must be on the list (403 otherwise)."""

    allowed: list[str] = Field(
        min_length=1,
        description="Origins like https://app.example.com; '*.' matches subdomains (https://*.example.com); "
        "':*' any port (http://localhost:*).",
    )
    allow_missing: bool = Field(
        default=False, description="Admit requests without Origin (non-browser clients; browsers always send it)."
    )

    @field_validator("allowed")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            compile_origin(value)
        return values


def compile_origin(origin: str) -> re.Pattern[str]:
    """A pattern for one allowed origin: ``scheme://[*.]host[:port|:*]``; raises ValueError."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"'{origin}' is not an origin like https://app.example.com")
    host, _, port = parts.netloc.rpartition(":") if not parts.netloc.endswith("]") else (parts.netloc, "", "")
    if not host or (port and port != "*" and not port.isdigit()):
        host, port = parts.netloc, ""
    if host.startswith("*."):
        host_re = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\." + re.escape(host[2:])
    elif "*" in host:
        raise ValueError(f"'{origin}': a wildcard may only start the host, as in https://*.example.com")
    else:
        host_re = re.escape(host)
    default = {"http": "80", "https": "443"}[parts.scheme]
    if port == "*":
        port_re = r"(?::[0-9]+)?"
    elif port and port != default:
        port_re = ":" + port
    else:
        port_re = f"(?::{default})?"
    return re.compile(re.escape(parts.scheme) + "://" + host_re + port_re)


@register_policy("check-origin")
class CheckOrigin:
    Settings = CheckOriginSettings

    def __init__(self, settings: CheckOriginSettings, env: PolicyEnv) -> None:
        self.name = "check-origin"
        self.allow_missing = settings.allow_missing
        self.patterns = [compile_origin(origin) for origin in settings.allowed]

    async def apply(self, context: HandshakeContext) -> None:
        origin = context.request.header("origin")
        if origin is None:
            if not self.allow_missing:
                raise deny(403, "an Origin header is required", reason="origin_missing")
            return
        origin = origin.strip().lower()
        if not any(pattern.fullmatch(origin) for pattern in self.patterns):
            raise deny(403, "the request's origin is not allowed", reason="origin_forbidden")


__all__ = ["CheckOrigin", "IpFilter", "compile_origin"]
