"""How ``validate-jwt`` GETs a JWKS: bounded, on the event loop, never redirected, never into a denied network.

The JWKS URL is the only thing the gateway itself fetches over HTTP, and a management change may set
it (``validate-jwt`` is a policy like any other). The upstream connectors never reach an address in
the configuration file's ``upstream_networks.deny`` (link-local and the cloud metadata services by
default); the fetch reached every one: ``jwks_url: http://169.254.169.254/...`` in a management
change made each handshake of that API a GET to the metadata service, and a JWKS host name whose DNS
an attacker controls did the same by rebinding. Now each address a fetch is about to connect to is
compared with that ``deny`` first, the very address handed to the connect (no second lookup between
the two), spelled as the upstream connectors read it (:class:`~..upstream.address_guard.AddressGuard`:
``::ffff:169.254.169.254``, NAT64, ``0.0.0.0``). ``upstream_networks.allow`` is not applied: it lists
the backends' networks, and an identity provider is usually elsewhere. The file's ``jwks_networks``
is the fetch's own rule: its ``allow`` (where the identity providers are) and its ``deny`` (the
private networks, say, which keeps a management change's ``jwks_url`` off every internal service).

Through a proxy the environment names (``HTTPS_PROXY``; ``NO_PROXY`` exempts hosts from it), the proxy
resolves the URL's host and connects: only a host written as an address is checked then.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore2
import httpx2

from ..forwarded import parse_ip
from ..redact import redact_url
from ..upstream.address_guard import AddressGuard
from ..upstream.resolver import RESOLVER

MAX_JWKS_BYTES = 1024 * 1024
"""The most a JWKS document may hold; the fetch stops reading past it."""


class JwksAddressDenied(OSError):
    """Every address of the JWKS URL's host is in ``upstream_networks.deny``: nothing was connected to."""


async def fetch_url(
    url: str,
    timeout: float,  # noqa: ASYNC109 - the whole fetch's bound
    *,
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
) -> bytes:
    """GET ``url`` on the event loop; raises on anything but a 200 with at most 1 MiB, or after ``timeout``,
    and without connecting when no address of its host is in ``allow`` (when given) and outside ``deny``
    (:class:`JwksAddressDenied`).

    On the event loop, not in a worker thread: a thread cannot be stopped, and urllib's timeout
    bounds each socket read, so a host that sent its status line and headers a byte at a time held
    its thread for as long as it liked (a header line may be 64 KiB). The loop's default executor,
    which upstream DNS lookups and every other JWKS fetch share, has ``cpu_count + 4`` threads: a few
    such fetches left every other identity provider's keys unfetched (503) for good. Here the
    deadline cancels the request, whatever it is waiting for, and closes its connection.

    Redirects are not followed (urllib followed them, to any host, from ``https://`` to ``http://``,
    to ``ftp://``): the keys come from the URL the operator configured, or from nowhere. The body is
    read as sent (``Accept-Encoding: identity``, no decompression), as urllib read it.
    """
    guard = _guard(tuple(allow), tuple(deny))
    if guard is not None:
        literal = parse_ip(httpx2.URL(url).host)  # through a proxy, the one address this process sees
        if literal is not None and (why := guard.refusal(str(literal))) is not None:
            raise JwksAddressDenied(f"the JWKS host's address {literal} is {why}: not connected to")
    async with asyncio.timeout(timeout), _client(guard) as client, client.stream("GET", url) as response:
        if response.status_code != 200:
            location = response.headers.get("location")
            if response.is_redirect and location is not None:
                # Redacted (a presigned URL's signature): the message reaches the fetch's span as it is.
                raise OSError(f"JWKS answered {response.status_code}, a redirect to {redact_url(location)[:200]!r}: "
                              "redirects are not followed (set jwks_url to the keys' own URL)")  # fmt: skip
            raise OSError(f"JWKS answered {response.status_code}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise OSError("JWKS document too large")
            chunks.append(chunk)
    return b"".join(chunks)


def guarded_fetch(allow: Sequence[str], deny: Sequence[str]) -> Callable[[str, float], Awaitable[bytes]]:
    """:func:`fetch_url` that connects only to an address in ``allow`` (``jwks_networks.allow``; empty: any)
    and in no network of ``deny`` (``upstream_networks.deny`` and ``jwks_networks.deny``)."""
    allowed, denied = tuple(allow), tuple(deny)

    async def fetch(url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the whole fetch's bound
        return await fetch_url(url, timeout, allow=allowed, deny=denied)

    return fetch


@functools.lru_cache(maxsize=16)
def _guard(allow: tuple[str, ...], deny: tuple[str, ...]) -> AddressGuard | None:
    """One guard per rule (its verdicts are remembered per address); None when the rule admits any address."""
    if not allow and not deny:
        return None
    return AddressGuard(
        "JWKS", (allow,), deny, rules=("jwks_networks.allow", "upstream_networks.deny or jwks_networks.deny")
    )


def _client(guard: AddressGuard | None) -> httpx2.AsyncClient:
    """A client for one fetch: the system's certificate authorities (as urllib used; not certifi's),
    the environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``, as urllib read them), no redirects, and
    direct connections only to addresses ``guard`` admits."""
    client = httpx2.AsyncClient(
        verify=_tls_context(),
        follow_redirects=False,
        trust_env=True,
        timeout=None,  # the caller's deadline bounds the whole fetch
        headers={"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "asgi-ws-gateway"},
    )
    if guard is not None:
        # The transport of the URLs no proxy takes (passing one of our own would turn the environment's
        # proxies off); it takes no network backend, so its pool is made again with one that checks.
        transport = getattr(client, "_transport", None)
        if not isinstance(transport, httpx2.AsyncHTTPTransport) or not hasattr(transport, "_pool"):
            raise OSError("the JWKS fetch cannot check the addresses it connects to (httpx2 changed): not fetched")
        transport._pool = httpcore2.AsyncConnectionPool(
            ssl_context=_tls_context(), network_backend=_CheckedBackend(guard)
        )
    return client


class _CheckedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves the host itself and connects to its first address ``guard`` admits, by that address
    (TLS still verifies the URL's host name: httpcore names it to the handshake, not the address)."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._backend = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:  # the upstreams' resolver: its own bounded lookup threads, a deadline, dns_ttl's cache
            addresses = await RESOLVER.addresses(host, port)
        except Exception as exc:  # no such name, a lookup that hangs, no lookup thread free
            raise httpcore2.ConnectError(f"{host}: {exc}") from exc
        refused: list[str] = []
        error: Exception | None = None
        for address in addresses:
            why = self._guard.refusal(address)
            if why is not None:
                refused.append(f"{address} ({why})")
                continue
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore2.ConnectError as exc:
                error = exc
        if error is not None:
            raise error
        shown = ", ".join(refused[:4]) + (", ..." if len(refused) > 4 else "")
        raise JwksAddressDenied(f"every address of the JWKS host {host} is denied: {shown}: not connected to")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("a JWKS is fetched over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Made once: loading the system's certificate authorities takes milliseconds of the event loop."""
    return ssl.create_default_context()


__all__ = ["MAX_JWKS_BYTES", "JwksAddressDenied", "fetch_url", "guarded_fetch"]
