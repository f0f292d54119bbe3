"""Upstream host names resolved once every few seconds, not once per handshake.

Without it every handshake to a host-named upstream (``ws://chat.internal:9000``) resolved the name
again, in a worker thread: about 94 µs of CPU under uvloop (a name from ``/etc/hosts``; more through
DNS, and a search list makes several queries of one lookup) where an address costs 2 µs, and a
resolver that answers slowly held every handshake to every host name behind it. Addresses are kept
for the API's ``dns_ttl`` seconds (default :data:`TTL`; one lookup in flight per name); connects
take them in turn (spreading over a name's addresses as a rotating resolver did), and an address that
fails is left out until the name is resolved again.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import SplitResult

from ..config import ApiConfig
from ..forwarded import parse_ip

TTL: float = ApiConfig.model_fields["dns_ttl"].default
"""Seconds a name's addresses are used before it is resolved again (the system resolver gives no TTL),
unless the caller says otherwise: an API's ``dns_ttl``, whose default this is."""

_MAX_NAMES = 1024

T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def _is_address(host: str) -> bool:
    """Whether ``host`` is an IP address (remembered: upstream hosts come from the configuration)."""
    return parse_ip(host) is not None


class Resolver:
    """Addresses of host names, cached for ``ttl`` seconds (or each caller's); addresses are returned as they are."""

    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.lookups = 0  # calls to the system resolver (tests read it)
        self._turn = 0  # which address a connect starts from
        self._known: dict[tuple[str, int], tuple[float, list[str]]] = {}  # when looked up, the addresses
        # One lookup in flight per name and event loop (servers in threads each run their own loop).
        self._pending: dict[tuple[asyncio.AbstractEventLoop, str, int], asyncio.Future[list[str]]] = {}

    async def addresses(self, host: str, port: int, ttl: float | None = None) -> list[str]:
        """``host``'s addresses, best first; ``[host]`` when it is an address already. ``ttl``: how old
        (in seconds) the addresses may be, default ``self.ttl``; 0 looks the name up again.

        Raises:
            OSError: the name does not resolve (``socket.gaierror``), as ``create_connection`` raises.
        """
        if _is_address(host):
            return [host]
        key = (host, port)
        known = self._known.get(key)
        if known is not None and self.clock() < known[0] + (self.ttl if ttl is None else ttl):
            return known[1]
        in_flight = (asyncio.get_running_loop(), host, port)
        pending = self._pending.get(in_flight)
        if pending is None:
            pending = self._pending[in_flight] = asyncio.ensure_future(self._lookup(host, port))
            pending.add_done_callback(lambda _: self._pending.pop(in_flight, None))
        return await asyncio.shield(pending)  # a cancelled handshake leaves the lookup to the others

    def forget(self, host: str, port: int) -> None:
        """Resolve ``host`` again next time (a connect to its address failed: it may have moved)."""
        self._known.pop((host, port), None)

    async def _lookup(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))  # in order, each address once
        if len(self._known) >= _MAX_NAMES:
            self._known.clear()
        self._known[host, port] = (self.clock(), found)
        return found

    async def connect(
        self, host: str, port: int, connect: Callable[[str], Awaitable[T]], ttl: float | None = None
    ) -> T:
        """``connect(address)`` for ``host``'s addresses until one connects, starting from the next one
        each time (a name with several addresses spreads its connections over them, as resolving it for
        each handshake did with a resolver that rotates them). An address that fails is left out until
        the name is resolved again; when none connects, that is at once (the service may have moved).

        Raises:
            OSError: the name does not resolve, or no address connected (the last one's error).
        """
        addresses = await self.addresses(host, port, ttl)
        self._turn += 1
        start = self._turn % len(addresses)
        last: OSError | None = None
        for address in addresses[start:] + addresses[:start]:
            try:
                return await connect(address)
            except OSError as error:
                if isinstance(error, TimeoutError):  # the handshake's time is up: no other address
                    self.forget(host, port)
                    raise
                self._drop(host, port, address)
                last = error
        self.forget(host, port)
        assert last is not None  # getaddrinfo never answers with no address
        raise last

    def _drop(self, host: str, port: int, address: str) -> None:
        known = self._known.get((host, port))
        if known is not None:
            kept = [a for a in known[1] if a != address]
            if kept:
                self._known[host, port] = (known[0], kept)
            else:
                self.forget(host, port)


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
