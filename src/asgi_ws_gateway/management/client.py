"""A typed async client for the management API (the command line uses it).

Usage::

    async with ManagementClient("http://127.0.0.1:8000/_gateway", token=token) as gateway:
        await gateway.create_api({"name": "echo", "path": "/ws/echo", "upstreams": ["ws://echo:9000/"]})
        for connection in await gateway.list_connections(api="echo"):
            await gateway.send(connection["id"], "maintenance in 5 minutes")

Every method raises :class:`ManagementAPIError` when the API refuses (its ``status`` and
``problems``), :class:`UnexpectedAnswerError` (a subclass) for any answer but the call's own (a
redirect, an HTML page, a body of another shape or too large: :mod:`.answers`), and
``httpx2.TransportError`` subclasses when the gateway cannot be reached or answers too slowly. A name
or id is sent as one path segment, percent-encoded (``/``, ``?``, ``#`` included: ``../apis/x`` is
looked up as that id, never as API ``x``); ``""``, ``.`` and ``..`` raise ``ValueError`` unsent.
Every change is sent typed ``application/json``, with or without a body, as the API requires.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import httpx2

from .answers import DEFAULT_MAX_ANSWER, Shape, a_resource, a_string_field, an_object, nothing_or_warnings, rows
from .client_calls import ManagementCalls
from .client_errors import ManagementAPIError, UnexpectedAnswerError
from .client_types import (
    ApiDocument,
    Connection,
    ConnectionListing,
    Product,
    SubscriptionInfo,
    Written,
    a_connection_listing,
    written,
)


class ManagementClient:
    """Client of one gateway's management API.

    Args:
        base_url: where the API is served, e.g. ``https://gateway.internal:8443/_gateway``: ``http`` or
            ``https``, no query, fragment or ``user:password@``. Plain ``http`` to a host other than
            this one is refused when a token is sent (anyone on the path reads it), unless
            ``allow_insecure_http``.
        token: the admin token (sent as ``Authorization: Bearer``): visible ASCII characters, checked
            before anything is sent (``ValueError``, the token never quoted).
        timeout: seconds for each call, its whole answer included (default 10): a server trickling
            its answer a byte at a time cannot hold a call longer (``httpx2.TimeoutException``).
        transport: an ``httpx2`` transport (tests: ``httpx2.ASGITransport(app)``; an in-process one,
            ``ASGITransport`` or ``MockTransport``, reaches no network: plain ``http`` is allowed).
        verify: the certificates trusted for ``https``: an ``ssl.SSLContext``, or the path of a PEM
            file of CA certificates (a private CA); default: the system's. Verification is always on.
        allow_insecure_http: send the token over plain ``http`` to another host too (default False).
        max_answer_size: bytes an answer may have, counted inflated (default 64 MiB); a larger one
            raises :class:`UnexpectedAnswerError`.

    Raises:
        ValueError: the base URL, the token or the CA file cannot be used (the secret never quoted).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | str | None = None,
        allow_insecure_http: bool = False,
        max_answer_size: int = DEFAULT_MAX_ANSWER,
    ) -> None:
        self._calls = ManagementCalls(
            base_url,
            token=token,
            timeout=timeout,
            transport=transport,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            max_answer_size=max_answer_size,
        )

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._calls.aclose()

    async def _call(self, method: str, path: str, shape: Shape, **options: Any) -> Any:
        """One request, its answer as ``shape`` checks it (:meth:`.client_calls.ManagementCalls.call`)."""
        return await self._calls.call(method, path, shape, **options)

    # -- health --
    async def ready(self) -> bool:
        """True if the gateway is ready (200), False while it starts or drains (503)."""
        try:
            await self._call("GET", "readyz", an_object)
        except ManagementAPIError as exc:
            if exc.status == 503 and not isinstance(exc, UnexpectedAnswerError):
                return False
            raise
        return True

    # -- WebSocket APIs --
    async def list_apis(self) -> list[ApiDocument]:
        return cast(list[ApiDocument], await self._call("GET", "apis", rows("apis", "name")))

    async def get_api(self, name: str) -> ApiDocument:
        return cast(ApiDocument, await self._call("GET", f"apis/{_segment(name)}", a_resource("name")))

    async def create_api(self, api: Mapping[str, Any]) -> Written:
        """Create an API; returns it, with the configuration warnings about it in ``.warnings`` (:class:`Written`)."""
        return cast(Written, await self._call("POST", "apis", written, expect=(201,), json=dict(api)))

    async def replace_api(
        self, name: str, api: Mapping[str, Any], *, drain: bool = False, if_match: str | None = None
    ) -> Written:
        """Replace API ``name``; ``drain`` also closes its open connections; ``if_match``: an ETag.

        ``api`` may be a document read or returned before, :class:`Written` included. Returns the API,
        with the configuration warnings about it in ``.warnings`` (:class:`Written`)."""
        return cast(
            Written,
            await self._call(
                "PUT",
                f"apis/{_segment(name)}",
                written,
                json=dict(api),
                params=_drain(drain),
                headers={"If-Match": if_match} if if_match else None,
            ),
        )

    async def delete_api(self, name: str, *, drain: bool = False) -> list[str]:
        """Delete API ``name``; returns the configuration warnings the deletion brought (usually none)."""
        path = f"apis/{_segment(name)}"
        return cast(
            list[str], await self._call("DELETE", path, nothing_or_warnings, expect=_DELETED, params=_drain(drain))
        )

    async def export_config(self) -> dict[str, Any]:
        """The merged configuration (file and changes), ready to be written as a config file."""
        return cast(dict[str, Any], await self._call("GET", "config", an_object))

    # -- products and subscriptions --
    async def list_products(self) -> list[Product]:
        return cast(list[Product], await self._call("GET", "products", rows("products", "name")))

    async def create_product(
        self,
        name: str,
        apis: list[str],
        *,
        display_name: str | None = None,
        subscription_required: bool = True,
        policies: list[dict[str, Any]] | None = None,
        force: bool = False,
    ) -> Written:
        """Create a product; ``force``: even one that lets clients without a key into an API (else 409).

        Returns the product (the fields of :class:`Product`), with the configuration warnings about it
        and its APIs in ``.warnings`` (:class:`Written`)."""
        body = {
            "name": name,
            "apis": apis,
            "display_name": display_name,
            "subscription_required": subscription_required,
            "policies": policies or [],
        }
        return cast(
            Written,
            await self._call("POST", "products", written, expect=(201,), json=body, params=_flags(force=force)),
        )

    async def delete_product(self, name: str, *, force: bool = False, drain: bool = False) -> list[str]:
        """Delete a product; ``force``: even an API's last one that required a key (else 409); ``drain``: also
        close the connections of its APIs admitted with a subscription that no longer grants them.

        Returns:
            The configuration warnings the deletion brought: about its APIs, which no longer run its
            policies (a ``check-origin`` they needed, say).
        """
        path, flags = f"products/{_segment(name)}", _flags(force=force, drain=drain)
        return cast(list[str], await self._call("DELETE", path, nothing_or_warnings, expect=_DELETED, params=flags))

    async def list_subscriptions(self, product: str | None = None) -> list[SubscriptionInfo]:
        params = {"product": product} if product else None
        found = await self._call("GET", "subscriptions", rows("subscriptions", "id"), params=params)
        return cast(list[SubscriptionInfo], found)

    async def get_subscription(self, subscription_id: str) -> SubscriptionInfo:
        return await self._subscription("GET", f"subscriptions/{_segment(subscription_id)}")

    async def create_subscription(
        self,
        product: str,
        *,
        name: str | None = None,
        subscription_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> SubscriptionInfo:
        """Create a subscription; its ``key`` is in the result and will never be shown again."""
        body: dict[str, Any] = {"product": product, "name": name, "id": subscription_id}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return await self._subscription("POST", "subscriptions", expect=(201,), json=body)

    async def suspend_subscription(self, subscription_id: str, *, drain: bool = False) -> SubscriptionInfo:
        """Suspend; ``drain``: also close the connections it admitted, on every worker."""
        path = f"subscriptions/{_segment(subscription_id)}/suspend"
        return await self._subscription("POST", path, params=_drain(drain))

    async def activate_subscription(self, subscription_id: str) -> SubscriptionInfo:
        return await self._subscription("POST", f"subscriptions/{_segment(subscription_id)}/activate")

    async def regenerate_key(self, subscription_id: str, *, drain: bool = False) -> SubscriptionInfo:
        """A new key for the subscription (in the result's ``key``); the old one stops working for new
        handshakes (``drain``: its open connections are closed too, on every worker)."""
        path = f"subscriptions/{_segment(subscription_id)}/regenerate-key"
        return await self._subscription("POST", path, params=_drain(drain))

    async def delete_subscription(self, subscription_id: str, *, drain: bool = False) -> None:
        """Delete; ``drain``: also close the connections it admitted, on every worker."""
        path = f"subscriptions/{_segment(subscription_id)}"
        await self._call("DELETE", path, nothing_or_warnings, expect=_DELETED, params=_drain(drain))

    async def _subscription(self, method: str, path: str, **options: Any) -> SubscriptionInfo:
        return cast(SubscriptionInfo, await self._call(method, path, a_resource("id"), **options))

    # -- live connections --
    async def list_connections(self, api: str | None = None, *, limit: int | None = None) -> list[Connection]:
        """The oldest open connections on every worker of the gateway (``limit``: the server's default, 1000).

        The rows only: a worker that did not answer (off the management bus) is not seen here. Use
        :meth:`connection_listing` to know whether every worker answered."""
        found = await self._call("GET", "connections", rows("connections", "id"), params=_listing(api, limit))
        return cast(list[Connection], found)

    async def connection_listing(self, api: str | None = None, *, limit: int | None = None) -> ConnectionListing:
        """As :meth:`list_connections`, with the workers that answered and those ``missing``
        (:attr:`ConnectionListing.complete` is False when some did not)."""
        listing: ConnectionListing = await self._call(
            "GET", "connections", a_connection_listing, params=_listing(api, limit)
        )
        return listing

    async def send(self, connection_id: str, data: str | bytes) -> str:
        """Send a text (``str``) or binary (``bytes``) message to a connection's client.

        Returns:
            The id of the worker that holds the connection (any worker of the gateway may).
        """
        body = {"text": data} if isinstance(data, str) else {"binary": base64.b64encode(data).decode()}
        path = f"connections/{_segment(connection_id)}/messages"
        return cast(str, await self._call("POST", path, a_string_field("worker"), json=body))

    async def kick(self, connection_id: str, code: int = 1000, reason: str = "") -> str:
        """Close a connection (both sides) with ``code`` and ``reason``; returns the worker that held it.

        Raises:
            ManagementAPIError: ``status`` 409 when the connection is already closing (its client or
                upstream closed it, or the gateway is: a drain, a policy, a shutdown, an earlier kick): it
                ends with that close, not this one, and nothing was sent; 404 when no worker holds it.
        """
        body = {"code": code, "reason": reason}
        path = f"connections/{_segment(connection_id)}/close"
        return cast(str, await self._call("POST", path, a_string_field("worker"), json=body))


_DELETED = (200, 204)
"""A deletion's answer: 204, or 200 with the configuration warnings it brought."""


def _segment(value: str) -> str:
    """``value`` as one URL path segment: percent-encoded with nothing left safe, ``/`` included.

    Built by f-string, ``subscriptions/../apis/x`` was ``/apis/x`` (and ``?``, ``#`` cut a name short);
    ``""``, ``.`` and ``..`` cannot be one segment once a client or proxy normalises the path.
    """
    if value in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be a name or id in the management API")
    return quote(value, safe="")


def _listing(api: str | None, limit: int | None) -> dict[str, str]:
    """A listing's query: ``api`` (all when none) and ``limit`` (the server's default when none)."""
    params = {"api": api} if api else {}
    if limit is not None:
        params["limit"] = str(limit)
    return params


def _drain(drain: bool) -> dict[str, str] | None:
    return _flags(drain=drain)


def _flags(**flags: bool) -> dict[str, str] | None:
    """The query's flags that are set (``?drain=true&force=true``), or None."""
    return {name: "true" for name, on in flags.items() if on} or None


__all__ = [
    "ApiDocument",
    "Connection",
    "ConnectionListing",
    "ManagementAPIError",
    "ManagementClient",
    "Product",
    "SubscriptionInfo",
    "UnexpectedAnswerError",
    "Written",
]
