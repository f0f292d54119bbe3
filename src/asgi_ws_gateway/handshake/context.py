"""What one handshake's policies share (:class:`HandshakeContext`): the request view
(:mod:`.request_view`), the upstream edits (:mod:`.upstream_edits`), claims, subscription, template
values, and the cleanups run when the connection ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..cancellation import cancel_requested
from ..forwarded import client_network
from ..templates import Caseless, dig
from ..upstream.base import UpstreamRequest
from ..upstream.checks import MAX_UPSTREAM_HEAD, check_upstream_request
from ..upstream.request import build_request
from . import addressless
from .request_view import AmbiguousValue, RequestView
from .upstream_edits import UpstreamEdits

if TYPE_CHECKING:
    from ..config.apis import ApiConfig, UpstreamConfig


logger = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]
_CLEANUP_TIMEOUT = 5.0  # seconds all cleanups of one connection may take together
_Place = tuple[str, tuple[str, ...]]
_SAME_VALUE: dict[_Place, _Place] = {("request", ("host",)): ("header", ("host",))}
"""References that read the value another names: a check of the ``Host`` header admits ``{request.host}``."""


def _one(values: list[str] | None, kind: str, name: str) -> str | None:
    """The value of ``name`` when every copy sent is the same; None when it is absent.

    Raises:
        AmbiguousValue: the copies differ.
    """
    if not values:
        return None
    first = values[0]
    if len(values) > 1 and values.count(first) != len(values):
        raise AmbiguousValue(kind, name)
    return first


@dataclass(frozen=True)
class Subscription:
    """The subscription a handshake was admitted with (see ``policies.products``)."""

    id: str
    product: str
    name: str
    key_sha256: str = ""
    """The digest of the key it was admitted with (a regenerated key is another subscription's)."""
    expires_at: float | None = None
    """POSIX seconds: its connections are closed then (``expires_at`` of its configuration)."""


class CredentialVerifier(Protocol):
    """Validates a token as the handshake did (``validate-jwt``), for in-band credential refresh."""

    async def verify_token(self, token: str) -> dict[str, Any]:
        """The token's claims; raises :class:`~asgi_ws_gateway.errors.HandshakeDenied` when it is refused."""
        ...


class HandshakeContext:
    """Everything one handshake's policies share.

    Attributes:
        api: the API's name.
        request: the client's request (read-only view).
        upstream: changes to make to the upstream request.
        claims: the validated JWT's claims (set by ``validate-jwt``), else None.
        subscription: the subscription the handshake was admitted with, else None.
        variables: free-form values for custom policies (``{var.name}`` in templates).
        credential_expires_at: the credential's expiry (POSIX seconds, the JWT's ``exp``), else None.
        credential_verifier: what validated the credential (``validate-jwt``), to validate an
            in-band refresh of it the same way; else None.
    """

    def __init__(self, api: str, request: RequestView) -> None:
        self.api = api
        self.request = request
        self.upstream = UpstreamEdits()
        self.claims: dict[str, Any] | None = None
        self.subscription: Subscription | None = None
        self.variables: dict[str, Any] = {}
        self.credential_expires_at: float | None = None
        self.credential_verifier: CredentialVerifier | None = None
        self._cleanups: list[Cleanup] = []
        self._caseless: dict[_Place, set[str]] = {}

    def add_cleanup(self, cleanup: Cleanup) -> None:
        """Run ``cleanup`` when the connection ends, however it ends (denied later, refused, closed)."""
        self._cleanups.append(cleanup)

    @property
    def holds_cleanups(self) -> bool:
        """Whether a cleanup waits for the connection's end (a concurrency lease): :meth:`release` has work."""
        return bool(self._cleanups)

    async def release(self) -> None:
        """Run the cleanups, last registered first; bounded in time, never raises, idempotent.

        Taken one at a time: a cancellation cuts the cleanup it meets (a lease's release may be cut) and
        leaves the others for the next call, which the middleware makes (a client gone mid-refusal)."""
        cleanups = self._cleanups
        if not cleanups:
            return
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                while cleanups:
                    cleanup = cleanups.pop()
                    try:
                        await cleanup()
                    except Exception:
                        logger.exception("API %s: a handshake cleanup failed", self.api)
                    except asyncio.CancelledError:
                        if cancel_requested():
                            raise
                        # The cleanup's own (it awaited something cancelled): propagated, it left the
                        # cleanups after it undone (a lease held to its expiry, a cap's slot with it).
                        logger.exception("API %s: a handshake cleanup failed", self.api)
        except TimeoutError:
            logger.warning("API %s: handshake cleanups took over %g s; abandoned", self.api, _CLEANUP_TIMEOUT)

    def admit_caseless(self, namespace: str, path: tuple[str, ...], value: str) -> None:
        """A gate admitted ``value`` at ``namespace.path`` whatever its case (``check-header`` with
        ``ignore_case``, an RE2 ``(?i)`` pattern): :meth:`lookup` gives it as a
        :class:`~asgi_ws_gateway.templates.Caseless`, which limit keys count by its ``casefold``."""
        self._caseless.setdefault((namespace, path), set()).add(value)

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        """Template variables: ``jwt``, ``header``, ``query``, ``cookie``, ``path``, ``client``, ...

        A value a case-insensitive gate admitted (:meth:`admit_caseless`) is a
        :class:`~asgi_ws_gateway.templates.Caseless`: a ``str`` of the client's spelling."""
        # A claim read here (the usual reference, {jwt.sub}, read by a limit's key and a header), the rest below.
        value = dig(self.claims, path) if namespace == "jwt" else self._lookup(namespace, path)
        if self._caseless and type(value) is str:
            place = (namespace, path)
            if value in self._caseless.get(_SAME_VALUE.get(place, place), ()):
                return Caseless(value)
        return value

    def _lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        request = self.request
        key = path[0]
        if namespace == "jwt":
            return dig(self.claims, path)
        # A value sent twice differently is refused (AmbiguousValue), never one copy of it picked:
        # the upstream may read the other (the first, the last, or both joined). A query parameter's
        # or a cookie's copies are those of every spelling of its name (``names.fold_name``).
        if namespace == "header":
            return request.header(key) if key == "cookie" else _one(request.header_values(key), "header", key)
        if namespace == "query":
            return _one(request.query_copies(key), "query parameter", key)
        if namespace == "cookie":
            return _one(request.cookie_copies(key), "cookie", key)
        if namespace == "path":
            return request.path_params.get(key)
        if namespace == "client":
            if key != "port":
                addressless.missing(request)  # the WARNING when there is no address (a Unix socket's peer)
            if key == "network":
                return client_network(request.client.ip)
            return request.client.ip if key == "ip" else request.client.port
        if namespace == "subscription":
            return getattr(self.subscription, key) if self.subscription is not None else None
        if namespace == "var":
            return dig(self.variables, path)
        if namespace == "api":
            return self.api
        if namespace == "request":
            if key == "hostname":  # parsed on first use: most handshakes read no request value
                return request.hostname
            return {"path": request.path, "host": request.host, "scheme": request.scheme}.get(key)
        return None

    def build_request(
        self, api: ApiConfig, upstream: UpstreamConfig, *, max_head: int = MAX_UPSTREAM_HEAD
    ) -> UpstreamRequest:
        """The upstream request for one backend, with the policies' changes applied; its head at most
        ``max_head`` bytes (:func:`~asgi_ws_gateway.upstream.head_limits.head_limit`).

        Raises:
            HandshakeDenied: 500 when a change cannot apply to this backend (a misconfiguration);
                400 when the client's values made a request that cannot be sent (see ``upstream.checks``).
        """
        request = build_request(api, upstream, self.request.scope, dict(self.request.path_params),
                                trust_forwarded=self.request.peer_is_trusted_proxy,
                                trusted_proxies=self.request.trusted_proxies,
                                forwarded_header=self.request.forwarded_header,
                                subprotocols=self.request.subprotocols)  # fmt: skip
        in_process = upstream.kind == "asgi"
        request = self.upstream.apply(request, in_process=in_process)
        check_upstream_request(request.url, request.headers, in_process=in_process, max_head=max_head,
                               subprotocols=request.subprotocols)  # fmt: skip
        return request


__all__ = [
    "CredentialVerifier",
    "HandshakeContext",
    "Subscription",
]
