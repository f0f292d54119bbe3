""":class:`GatewayConfig`, the whole configuration: its WebSocket APIs, products, subscriptions and
process-wide settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from ..forwarded import UNIX_SOCKET_PEER
from ..plugins import MODULE_NAME
from .apis import ApiConfig, MessagePoliciesConfig
from .fields import DAY, POLICIES_DOC, ConfigModel, Policies
from .limits import MAX_APIS, MAX_MODULE, MAX_NETWORK, MAX_NETWORKS, MAX_PLUGINS, MAX_SUBSCRIPTIONS
from .products import ProductConfig, SubscriptionConfig, SubscriptionKeyConfig
from .settings import HandshakeLimitsConfig, ManagementConfig, StoreConfig, TelemetryConfig
from .upstream_networks import JwksNetworksConfig, UpstreamNetworksConfig, checked_network


def _proxy(value: str) -> str:
    """A ``trusted_proxies`` entry: a network, or :data:`UNIX_SOCKET_PEER` exactly; a near miss (``unix``,
    ``UNIX:``, a socket's path) is told how the entry is written."""
    if value == UNIX_SOCKET_PEER:
        return value
    if value.strip().lower().startswith("unix"):
        raise PydanticCustomError(
            "policy_network",  # a policy_ error: the message names the value itself
            "'{value}' is not an IP address or network; the peer of a Unix socket is written '{unix}' "
            "(the socket's path is not needed: every peer of the gateway's socket is the proxy)",
            {"value": value, "unix": UNIX_SOCKET_PEER},
        )
    return checked_network(value)


Proxy = Annotated[str, Field(max_length=MAX_NETWORK), AfterValidator(_proxy)]


class GatewayConfig(ConfigModel):
    """Everything the gateway needs: its WebSocket APIs and process-wide settings."""

    plugins: list[Annotated[str, Field(pattern=MODULE_NAME, max_length=MAX_MODULE)]] = Field(
        default_factory=list,
        max_length=MAX_PLUGINS,
        description="Modules to import before the policies are checked: they register custom policy types "
        "(see docs/policies.md#plugins); at most 64, each a name of at most 256 characters. Never changed "
        "through the management API.",
    )
    apis: list[ApiConfig] = Field(default_factory=list, max_length=MAX_APIS)
    drain_grace_period: float = Field(
        default=10.0,
        ge=0,
        le=DAY,
        description="Seconds open connections get to close when the gateway drains (0 to 86400).",
    )
    drain_close_code: Literal[1001, 1012] = Field(
        default=1001, description="Close code sent when draining: 1001 going away or 1012 service restart."
    )
    policies: Policies = Field(
        default_factory=list, description=POLICIES_DOC + " Global: they run first, for every API."
    )
    message_policies: MessagePoliciesConfig = Field(
        default_factory=MessagePoliciesConfig, description="Global message policies: they run first, for every API."
    )
    products: list[ProductConfig] = Field(default_factory=list, max_length=MAX_APIS)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list, max_length=MAX_SUBSCRIPTIONS)
    subscription_key: SubscriptionKeyConfig = Field(default_factory=SubscriptionKeyConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    trusted_proxies: list[Proxy] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Addresses or networks of proxies whose forwarding header names the client (client.ip), and "
        "'unix:' for the peer of a Unix socket (a proxy on this host); at most 1,024 (a forwarding header is "
        "read 32 hops deep at most).",
    )
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        default="x-forwarded-for", description="The header trusted proxies put the client address in."
    )
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    handshake_limits: HandshakeLimitsConfig = Field(
        default_factory=HandshakeLimitsConfig,
        description="Size limits of handshake requests, checked before any policy (see docs/security.md).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Connections one gateway process serves at once, handshakes in progress included (each "
        "worker of --workers has its own); past it: 503 over_capacity with Retry-After, before any policy or "
        "upstream connect. Default (null): as many as the process's open-file limit has room for, two "
        "descriptors a connection after 64 in reserve; a larger value is lowered to that, with a warning.",
    )
    expose_error_details: bool = Field(
        default=False,
        description="Development only: 5xx handshake refusals tell the client the internal detail (backend URL, "
        "error text) instead of a generic problem. Off: the detail goes only to the log and the span.",
    )
    upstream_networks: UpstreamNetworksConfig = Field(
        default_factory=UpstreamNetworksConfig,
        description="The addresses upstream connections may reach (allow, deny), checked on each address a "
        "connect uses, after its name is resolved (see docs/security.md). Not changeable through the "
        "management API.",
    )
    jwks_networks: JwksNetworksConfig = Field(
        default_factory=JwksNetworksConfig,
        description="The addresses validate-jwt's JWKS fetches may connect to (allow, deny), besides "
        "upstream_networks.deny, which they never reach; checked on each address a fetch connects to (see "
        "docs/security.md). Not changeable through the management API.",
    )
    management: ManagementConfig = Field(
        default_factory=ManagementConfig, description="Rules for the management API (not changeable through it)."
    )


__all__ = [
    "GatewayConfig",
]
