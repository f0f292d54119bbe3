"""Upstream host names resolved once every few seconds, not once per handshake.

Without it every handshake to a host-named upstream (``ws://chat.internal:9000``) resolved the name
again, in a worker thread: about 94 µs of CPU under uvloop (a name from ``/etc/hosts``; more through
DNS, and a search list makes several queries of one lookup) where an address costs 2 µs, and a
resolver that answered slowly held every handshake to every host name behind it. Addresses are kept
for the API's ``dns_ttl`` seconds (default :data:`TTL`); lookups run on threads of the gateway's own,
bounded per name and in all, each caller within a deadline (:mod:`.lookups`). Addresses up to
``min(dns_ttl, STALE_FOR)`` seconds past their time are still used while the name is looked up again
(or its lookup hangs) instead of waiting for it.

Connects take the addresses in turn (spreading over a name's addresses as a rotating resolver did).
With a deadline and more than one address, an address has half the time left (the last one all of
it), so that one that stalls (accepts TCP, never answers TLS) leaves time for the next. An address
that fails (refused, timed out, a certificate that does not verify, ...) is left out until the name is
resolved again, and tried after the name's other addresses for :data:`ADDRESS_COOLDOWN` seconds; each
failure is counted by reason (``address_failures``) and logged, one line per address now and then
(WARNING for a certificate: it may be an interception).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import SplitResult

from ..config.apis import ApiConfig
from ..errors import LOCAL_RESOURCE_ERRORS
from ..forwarded import parse_ip
from ..log_throttle import OutageLog
from ..redact import redact_text
from .address_guard import DENIED, AddressDenied, AddressGuard
from .lookups import THREADS, Lookup, NameLookups, system_lookup

logger = logging.getLogger(__name__)

TTL: float = ApiConfig.model_fields["dns_ttl"].default
"""Seconds a name's addresses are used before it is resolved again (the system resolver gives no TTL),
unless the caller says otherwise: an API's ``dns_ttl``, whose default this is."""

STALE_FOR = 30.0
"""Seconds past its TTL (at most the TTL itself) a name's addresses are still used while it is looked up again."""

ADDRESS_COOLDOWN = 30.0
"""Seconds an address that failed is tried after its name's other addresses, even once resolved again."""

_MAX_NAMES = 1024

T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def _is_address(host: str) -> bool:
    """Whether ``host`` is an IP address (remembered: upstream hosts come from the configuration)."""
    return parse_ip(host) is not None


def failure_reason(error: OSError) -> str:
    """A short name for why a connect to one address failed (a bounded set: metrics, logs)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "tls_certificate"
    if isinstance(error, ssl.SSLError):
        return "tls"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError):
        return "reset"
    name = errno.errorcode.get(error.errno) if isinstance(error.errno, int) else None
    return name.lower() if name else "error"


def _why(error: OSError, seconds: float | None) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        why = (error.verify_message or "").rstrip(".")
        return f"{error.reason or 'certificate'}: {why}"  # CERTIFICATE_VERIFY_FAILED: Hostname mismatch, ...
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or type(error).__name__}"
    if isinstance(error, TimeoutError) and seconds is not None:
        return f"no answer in {seconds:.3g} s"
    return redact_text(str(error)) or type(error).__name__


class Resolver:
    """Addresses of host names, cached for ``ttl`` seconds (or each caller's); addresses are returned as they are.

    ``lookup`` resolves one name on a lookup thread (default: ``getaddrinfo``; tests give a fake one),
    on at most ``threads`` threads.
    """

    def __init__(
        self,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
        *,
        lookup: Lookup = system_lookup,
        threads: int = THREADS,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.names = NameLookups(lookup, found=self._found, threads=threads, clock=clock)
        self.address_failures: Counter[str] = Counter()  # connects to one address that failed, by reason
        self._turn = 0  # which address a connect starts from
        self._known: dict[tuple[str, int], tuple[float, list[str]]] = {}  # when looked up, the addresses
        self._cooling: dict[tuple[str, int], float] = {}  # an address and port that failed: until when
        self._logs: dict[tuple[str, int, str], OutageLog] = {}

    @property
    def lookups(self) -> int:
        """Lookups started (tests read it)."""
        return self.names.lookups

    async def addresses(self, host: str, port: int, ttl: float | None = None, wait: float | None = None) -> list[str]:
        """``host``'s addresses, best first; ``[host]`` when it is an address already. ``ttl``: how old
        (in seconds) the addresses may be, default ``self.ttl``; 0 looks the name up again. ``wait``:
        seconds to wait for a lookup at most (default :data:`.lookups.TIMEOUT`, never more).

        Raises:
            OSError: the name does not resolve (``socket.gaierror``), as ``create_connection`` raises.
            NameLookupTimeout: its lookup did not answer in time, or hangs (504).
            GatewayOverloaded: no lookup thread was free (503).
        """
        if _is_address(host):
            return [host]
        ttl = self.ttl if ttl is None else ttl
        known = self._known.get((host, port))
        if known is not None:
            age = self.clock() - known[0]
            if age < ttl:
                return known[1]
            if age < ttl + min(ttl, STALE_FOR):  # stale: used while the name is looked up again
                self.names.refresh(host, port)
                return known[1]
        return await self.names.resolve(host, port, wait, functools.partial(self._fresh, host, port, ttl))

    def _fresh(self, host: str, port: int, ttl: float) -> list[str] | None:
        """``host``'s addresses if they are younger than ``ttl`` seconds."""
        known = self._known.get((host, port))
        return known[1] if known is not None and self.clock() - known[0] < ttl else None

    def forget(self, host: str, port: int) -> None:
        """Resolve ``host`` again next time (a connect to its address failed: it may have moved)."""
        self._known.pop((host, port), None)
        self.names.forget(host, port)

    def _found(self, host: str, port: int, addresses: list[str]) -> None:
        """A lookup's answer (on its thread): kept, a late one too."""
        if len(self._known) >= _MAX_NAMES:
            self._known.clear()
        self._known[host, port] = (self.clock(), addresses)

    async def connect(
        self,
        host: str,
        port: int,
        connect: Callable[[str], Awaitable[T]],
        ttl: float | None = None,
        within: float | None = None,
        guard: AddressGuard | None = None,
    ) -> T:
        """``connect(address)`` for ``host``'s addresses until one connects, starting from the next one
        each time (a name with several addresses spreads its connections over them, as resolving it for
        each handshake did with a resolver that rotates them). An address that fails is left out until
        the name is resolved again; when none connects, that is at once (the service may have moved).

        ``within``: the caller's seconds for it all (its ``connect_timeout``): the lookup may take half,
        and each address but the last half of what is left (the last one nearly all).

        ``guard``: the addresses the caller may reach (its API's ``upstream_networks``): any other is
        skipped before a connect, counted (``network_denied``) and logged; the address checked is the one
        ``connect`` gets.

        Raises:
            OSError: the name does not resolve, or no address connected: TimeoutError if one did not
                answer in its time, else the last one's error; AddressDenied if ``guard`` refuses them all.
            NameLookupTimeout | GatewayOverloaded: as :meth:`addresses`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        addresses = await self.addresses(host, port, ttl, None if within is None else within / 2)
        if guard is not None:
            addresses = self._admitted(guard, host, port, addresses)
        order = self._order(addresses, port)
        last: OSError | None = None
        for i, address in enumerate(order):
            seconds = None if deadline is None or len(order) == 1 else _share(deadline - loop.time(), i, len(order))
            try:
                if seconds is None:
                    return await connect(address)
                async with asyncio.timeout(seconds):
                    return await connect(address)
            except OSError as error:
                if error.errno in LOCAL_RESOURCE_ERRORS:  # the gateway's own shortage, not the address's
                    raise
                self._failed(host, port, address, error, seconds)
                if not isinstance(last, TimeoutError):  # an address that answered slowly says more than a refusal
                    last = error
        self.forget(host, port)
        assert last is not None  # a lookup never answers with no address
        raise last

    def _admitted(self, guard: AddressGuard, host: str, port: int, addresses: list[str]) -> list[str]:
        """``addresses`` that ``guard`` admits; each other one counted and logged, not forgotten (the name's
        answer is what it is: another API may reach it). Raises AddressDenied when none is left."""
        refusal = guard.refusal
        if not any(map(refusal, addresses)):  # the usual case: one dictionary look-up per address
            return addresses
        admitted = []
        for address in addresses:
            why = refusal(address)
            if why is None:
                admitted.append(address)
            else:
                self.address_failures[DENIED] += 1
                guard.refused(host, port, address, why)
        if not admitted:
            raise AddressDenied(host, addresses)
        return admitted

    def _order(self, addresses: list[str], port: int) -> list[str]:
        """The addresses to try, from the next one in turn; those that failed lately last."""
        self._turn += 1
        start = self._turn % len(addresses)
        order = addresses[start:] + addresses[:start]
        if self._cooling:
            now = self.clock()
            order.sort(key=lambda address: self._cooling.get((address, port), now) > now)  # stable
        return order

    def _failed(self, host: str, port: int, address: str, error: OSError, seconds: float | None) -> None:
        reason = failure_reason(error)
        self.address_failures[reason] += 1
        self._drop(host, port, address)
        if len(self._cooling) >= _MAX_NAMES:
            self._cooling.clear()
        self._cooling[address, port] = self.clock() + ADDRESS_COOLDOWN
        key = (host, port, address)
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= _MAX_NAMES:
                self._logs.clear()
            log = self._logs[key] = OutageLog()
        count = log.event()
        if count:
            more = f" ({count - 1} more since the last such line)" if count > 1 else ""
            certificate = reason == "tls_certificate"
            logger.log(
                logging.WARNING if certificate else logging.INFO,
                "upstream %s port %d: address %s failed (%s): %s; its other addresses are tried first for %g s%s%s",
                host, port, address, reason, _why(error, seconds), ADDRESS_COOLDOWN, more,
                " (a certificate that does not verify may be an interception)" if certificate else "",
            )  # fmt: skip

    def _drop(self, host: str, port: int, address: str) -> None:
        known = self._known.get((host, port))
        if known is not None:
            kept = [a for a in known[1] if a != address]
            if kept:
                self._known[host, port] = (known[0], kept)
            else:
                self.forget(host, port)


def _share(left: float, index: int, count: int) -> float:
    """Seconds for the address at ``index`` of ``count`` with ``left`` seconds left: half, the last one all
    but a margin (so that its time runs out here, where the address is left out, before the caller's)."""
    if index < count - 1:
        return left / 2
    return left - min(0.1, left * 0.05)


def host_and_port(url: SplitResult) -> tuple[str, int]:
    """The host to resolve and the port to connect to of a ``ws://``/``wss://`` URL.

    Raises:
        ValueError: the URL's port is not a number from 0 to 65535.
    """
    return _authority(url.scheme, url.netloc)


@functools.lru_cache(maxsize=256)
def _authority(scheme: str, netloc: str) -> tuple[str, int]:
    """:func:`host_and_port` of a URL with this scheme and authority: an API's few upstreams repeat, and
    ``hostname`` and ``port`` parse the authority afresh each time (~10 k instructions a handshake).
    A bad port raises ValueError every time (the cache keeps answers only)."""
    url = SplitResult(scheme, netloc, "", "", "")
    return url.hostname or "", url.port or (443 if scheme == "wss" else 80)


RESOLVER = Resolver()
"""The process's resolver: every connector's, so a name is resolved once for all APIs naming it."""


__all__ = ["RESOLVER", "TTL", "Resolver", "host_and_port"]
