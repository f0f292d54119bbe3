"""Which addresses an API's upstream connections may reach (``upstream_networks``), checked on the address
each connect is about to use.

The resolver's addresses were used as they came: a backend name whose DNS an attacker controls
(rebinding) reached whatever it pointed to, and a ``set-backend-service`` template whose whole host is
a claim let the token's issuer send the gateway to ``127.0.0.1`` or ``169.254.169.254``. The check is
made in :meth:`~asgi_ws_gateway.upstream.resolver.Resolver.connect` on the very address it hands to
the connect (no second lookup between the two), for every connector, literal IP hosts included.

An address is compared as what it reaches: an IPv4-mapped address (``::ffff:127.0.0.1``) as its IPv4
address, a zone id (``fe80::1%eth0``) left aside, ``0.0.0.0`` and ``::`` (which Linux connects to the
host itself) as ``127.0.0.1`` and ``::1``; and an IPv6 address that carries an IPv4 one (NAT64's
``64:ff9b::/96``, 6to4, ...) as ``ip-filter`` matches it: denied if any IPv4 address it may stand for
is denied, allowed if it or the IPv4 address it carries is allowed.

A host a handshake value picked (a claim or a custom policy's variable in a ``set-backend-service``
host or port, or a URL a custom policy set) is held to :attr:`AddressGuard.picked` as well: the host's
own addresses (:data:`LOCAL_NETWORKS`: loopback, ``0.0.0.0/8``, ``::``, in any spelling above) are
refused there unless an ``allow`` list names them, an entry inside those networks (``127.0.0.1``,
``::1/128``; ``0.0.0.0/0`` names no loopback). The issuer's ``127.0.0.1`` (or ``localhost``,
``0.0.0.0``) reached the gateway's own admin port, a Redis or a sidecar under the default rule.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence

from ..config.upstream_networks import LOCAL_NETWORKS, names_local
from ..forwarded import IPAddress, Networks, embedded_ipv4, parse_ip, translated_ipv4s
from ..log_throttle import OutageLog

logger = logging.getLogger(__name__)

_LOCAL_V4 = ipaddress.IPv4Address("127.0.0.1")
_LOCAL_V6 = ipaddress.IPv6Address("::1")
_MAX_REMEMBERED = 4096

_LOCAL = Networks(LOCAL_NETWORKS)
PICKED_LOCAL = (
    "on the gateway's own host (loopback), where a host a handshake value picked goes only if "
    "upstream_networks.allow names it"
)
"""Why a picked host's local address is refused (the WARNING's words)."""

DENIED = "network_denied"
"""The reason an address that is not connected to is counted by (``ws_gateway.upstream.address.failures``)."""


class AddressDenied(OSError):
    """None of a host's addresses may be connected to: a connect failure (502), as an unreachable host is."""

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        shown = ", ".join(addresses[:4]) + (", ..." if len(addresses) > 4 else "")
        super().__init__(f"upstream_networks allows none of the addresses of {host} ({shown})")
        self.host = host


def reached(address: IPAddress) -> IPAddress:
    """The address a connect to ``address`` reaches, for comparing: without a zone id, ``0.0.0.0`` and
    ``::`` as the host's own loopback address (IPv4-mapped addresses are unmapped by ``parse_ip``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))
    if not address.is_unspecified:
        return address
    return _LOCAL_V4 if isinstance(address, ipaddress.IPv4Address) else _LOCAL_V6


class AddressGuard:
    """The addresses one API's connections may reach: in every ``allow`` list given (an empty one
    allows any), in no ``deny`` list. Verdicts are remembered per address (a name's few addresses come
    back on every handshake), so a connect's check is a dictionary look-up.

    Args:
        api: the API's name (for the log).
        allow: each list of networks an address must be in (the file's, the API's); empty lists are skipped.
        deny: networks an address must not be in.
        rules: how a refusal names the allow and the deny lists (the JWKS fetch's are its own).

    Attributes:
        picked: the guard of a host a handshake value picked (itself, for that guard): besides these
            rules, :data:`LOCAL_NETWORKS` refused unless an ``allow`` entry inside them covers the address.
    """

    def __init__(
        self,
        api: str,
        allow: Iterable[Sequence[str]],
        deny: Iterable[str],
        *,
        rules: tuple[str, str] = ("upstream_networks.allow", "upstream_networks.deny"),
        _picked_by: AddressGuard | None = None,
    ) -> None:
        self.api = api
        self._outside, self._inside = f"outside {rules[0]}", f"in {rules[1]}"
        lists = [list(networks) for networks in allow if networks]
        denied = list(deny)
        self._allow = [Networks(networks) for networks in lists]
        self._deny = Networks(denied)
        # allow entries inside the local networks: what a picked host may reach of them
        self._named_local = Networks(n for networks in lists for n in networks if names_local(n))
        self._local = _picked_by is not None
        self._verdicts: dict[str, str | None] = {}  # address: why it is refused (None: admitted)
        self._logs: dict[tuple[str, str], OutageLog] = {}
        self.picked: AddressGuard = (
            self if _picked_by is not None else AddressGuard(api, lists, denied, rules=rules, _picked_by=self)
        )

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (as a resolver answers it, or a literal host) may not be connected to; None if it may."""
        try:
            return self._verdicts[address]
        except KeyError:
            pass
        verdict = self._judge(parse_ip(address))
        if len(self._verdicts) >= _MAX_REMEMBERED:
            self._verdicts.clear()
        self._verdicts[address] = verdict
        return verdict

    def _judge(self, parsed: IPAddress | None) -> str | None:
        if parsed is None:  # not an address: nothing to compare, so not connected to
            return "not an IP address"
        address = reached(parsed)
        carried: IPAddress | None = None
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            candidates += translated_ipv4s(address)
            carried = embedded_ipv4(address)
        if any(candidate in self._deny for candidate in candidates):
            return self._inside
        for allow in self._allow:
            if address not in allow and (carried is None or carried not in allow):
                return self._outside
        if (
            self._local
            and any(candidate in _LOCAL for candidate in candidates)
            and address not in self._named_local
            and (carried is None or carried not in self._named_local)
        ):
            return PICKED_LOCAL
        return None

    def refused(self, host: str, port: int, address: str, why: str) -> None:
        """Log one address not connected to: a WARNING, then at most one per 10 s per host and address."""
        key = (host, address)
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= _MAX_REMEMBERED:
                self._logs.clear()
            log = self._logs[key] = OutageLog()
        count = log.event()
        if count:
            more = f" ({count - 1} more since the last such line)" if count > 1 else ""
            logger.warning(
                "API %s: upstream %s port %d: address %s is %s: not connected to%s",
                self.api, host, port, address, why, more,
            )  # fmt: skip


__all__ = ["DENIED", "PICKED_LOCAL", "AddressDenied", "AddressGuard", "reached"]
