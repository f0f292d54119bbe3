"""``upstream_networks``: the addresses upstream connections may reach, the file's for every API and an API's own;
``jwks_networks``: those JWKS fetches may reach.

A host name's addresses are what its DNS says at the moment, and a ``set-backend-service`` template
whose host is a claim is what the token's issuer says: without a rule, a name rebound to
``169.254.169.254`` or a claim of ``127.0.0.1`` sent the gateway there. The check is the connectors'
(:mod:`asgi_ws_gateway.upstream.address_guard`); here are the settings and their defaults.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from ..forwarded import parse_network
from .fields import ConfigModel
from .limits import MAX_NETWORK, MAX_NETWORKS


def checked_network(value: str) -> str:
    """``value`` if it is an address or a network, else a validation error that names it."""
    try:
        parse_network(value)
    except ValueError:
        raise PydanticCustomError(
            "policy_network", "'{value}' is not an IP address or network", {"value": value}
        ) from None
    return value


Network = Annotated[str, Field(max_length=MAX_NETWORK), AfterValidator(checked_network)]
"""An address or a network in CIDR notation (``10.0.0.0/8``, ``2001:db8::/32``, ``127.0.0.1``)."""

METADATA_NETWORKS = (
    "169.254.0.0/16",  # IPv4 link-local: the metadata service of AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS's metadata service over IPv6
    "100.100.100.200/32",  # Alibaba Cloud's metadata service
    "168.63.129.16/32",  # Azure's WireServer
    "192.0.0.192/32",  # Oracle Cloud's metadata service (its older address)
)
"""Denied by default: cloud metadata services (credentials of the host's role) and link-local networks,
where no WebSocket backend lives."""


LOCAL_NETWORKS = ("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128")
"""The gateway's own host: loopback, and the unspecified addresses Linux connects to it. A host a handshake
value picked (a claim, a custom policy's variable) reaches them only where an ``allow`` entry names them."""

_LOCAL_V4 = [ipaddress.IPv4Network(n) for n in LOCAL_NETWORKS if ":" not in n]
_LOCAL_V6 = [ipaddress.IPv6Network(n) for n in LOCAL_NETWORKS if ":" in n]


def names_local(network: str) -> bool:
    """Whether an ``allow`` entry lies inside :data:`LOCAL_NETWORKS` (``127.0.0.1``, ``::1/128``,
    ``::ffff:127.0.0.1``): it names the gateway's own host. ``0.0.0.0/0`` covers it and names it not."""
    parsed = parse_network(network)
    if isinstance(parsed, ipaddress.IPv4Network):
        return any(parsed.subnet_of(local) for local in _LOCAL_V4)
    return any(parsed.subnet_of(local) for local in _LOCAL_V6)


class UpstreamNetworksConfig(ConfigModel):
    """The addresses an upstream connection may reach, checked on each address a connect is about to use."""

    allow: list[Network] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Networks upstream connections may reach (empty: any that deny does not list). An address "
        "outside them is not connected to: the name's other addresses are tried, and with none left the "
        "handshake is a 502.",
    )
    deny: list[Network] = Field(
        default_factory=lambda: list(METADATA_NETWORKS),
        max_length=MAX_NETWORKS,
        description="Networks upstream connections never reach, even inside allow, and validate-jwt's JWKS "
        "fetches never connect to. Default: link-local "
        "(169.254.0.0/16, fe80::/10) and the cloud metadata services (fd00:ec2::254, 100.100.100.200, "
        "168.63.129.16, 192.0.0.192). Set only in the configuration file; an API's own upstream_networks "
        "adds to it.",
    )


class ApiUpstreamNetworksConfig(ConfigModel):
    """An API's own rule: it narrows the file's ``upstream_networks``, never widens it."""

    allow: list[Network] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Networks this API's connections may reach, within the top-level upstream_networks.allow "
        "(empty: as the top level says).",
    )
    deny: list[Network] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Networks this API's connections never reach, besides the top-level upstream_networks.deny.",
    )


class JwksNetworksConfig(ConfigModel):
    """The addresses ``validate-jwt``'s JWKS fetches may connect to, besides the top-level ``upstream_networks.deny``
    (which they never reach). The file's alone: a management change may set a ``jwks_url``, never this."""

    allow: list[Network] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Networks a JWKS fetch may connect to (empty: any that deny and upstream_networks.deny do "
        "not list). upstream_networks.allow does not apply: it lists the backends, and an identity provider "
        "is usually elsewhere.",
    )
    deny: list[Network] = Field(
        default_factory=list,
        max_length=MAX_NETWORKS,
        description="Networks a JWKS fetch never connects to, besides upstream_networks.deny (e.g. the private "
        "networks, when every identity provider is on the internet: a jwks_url set through the management "
        "API then reaches no internal service). Default: none.",
    )


__all__ = [
    "LOCAL_NETWORKS",
    "METADATA_NETWORKS",
    "ApiUpstreamNetworksConfig",
    "JwksNetworksConfig",
    "Network",
    "UpstreamNetworksConfig",
    "checked_network",
    "names_local",
]
