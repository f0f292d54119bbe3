"""A typed async client for the management API (the command line uses it).

Usage::

    async with ManagementClient("http://127.0.0.1:8000/_gateway", token=token) as gateway:
        await gateway.create_api({"name": "echo", "path": "/ws/echo", "upstreams": ["ws://echo:9000/"]})
        for connection in await gateway.list_connections(api="echo"):
            await gateway.send(connection["id"], "maintenance in 5 minutes")

Every method raises :class:`ManagementAPIError` when the API refuses (its ``status`` and
``problems``), and ``httpx2.TransportError`` subclasses when the gateway cannot be reached. A name
or id is sent as one path segment, percent-encoded (``/``, ``?``, ``#`` included: ``../apis/x`` is
looked up as that id, never as API ``x``); ``""``, ``.`` and ``..`` raise ``ValueError`` unsent.
Every change is sent typed ``application/json``, with or without a body, as the API requires.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import httpx2

ApiDocument = dict[str, Any]
"""A WebSocket API: the fields of an ``apis`` entry of the configuration file."""


class Written(dict[str, Any]):
    """The resource a change answered with (:meth:`~ManagementClient.create_api`,
    :meth:`~ManagementClient.replace_api`, :meth:`~ManagementClient.create_product`): its fields, a dict
    to send back as it is, and apart from them, the attribute ``warnings``.

    ``warnings`` lists the configuration warnings that concern the change (empty when none): valid,
    probably not meant, such as a token read from a cookie with no ``check-origin``; redacted as the log
    writes them. Usage::

        api = await gateway.create_api(document)
        for warning in api.warnings:
            print("warning:", warning)
        api["max_lifetime"] = 60
        await gateway.replace_api(api["name"], api)  # the dict has the API's fields only
    """

    def __init__(self, fields: Mapping[str, Any] | None = None, /, *, warnings: Iterable[str] = ()) -> None:
        super().__init__(fields or {})
        self.warnings: list[str] = list(warnings)

    def __repr__(self) -> str:
        return f"Written({dict.__repr__(self)}, warnings={self.warnings!r})"


class Product(TypedDict):
    name: str
    display_name: str | None
    apis: list[str]
    subscription_required: bool
    policies: list[dict[str, Any]]
    message_policies: dict[str, Any]


class SubscriptionInfo(TypedDict):
    id: str
    product: str
    name: str | None
    state: Literal["active", "suspended", "expired"]
    expires_at: str | None
    created_at: str | None
    """None for the configuration file's own subscriptions."""
    key: NotRequired[str]
    """Only in the answer to create and regenerate-key: the key is never shown again."""


class Connection(TypedDict):
    id: str
    api: str
    client: str
    peer: str
    subject: str | None
    subscription: str | None
    opened_at: float
    messages_in: int
    bytes_in: int
    messages_out: int
    bytes_out: int
    worker: str


class ManagementAPIError(Exception):
    """The management API refused a request: ``status`` (401, 404, 409, 412, 422, 429, 503, ...) and ``problems``.

    ``retry_after``: the seconds its ``Retry-After`` asks for (a 503 while Redis fails, a 429 after too
    many refused tokens), else None: nothing was changed, so the same call may be sent again then.
    """

    def __init__(
        self, status: int, title: str, detail: str, problems: list[str], retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + "".join(f"\n  {p}" for p in problems))
        self.status = status
        self.title = title
        self.detail = detail
        self.problems = problems
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (the API sends a number; an HTTP date or anything else: None)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class ManagementClient:
    """Client of one gateway's management API.

    Args:
        base_url: where the API is served, e.g. ``http://127.0.0.1:8000/_gateway``.
        token: the admin token (sent as ``Authorization: Bearer``).
        timeout: seconds for each request (default 10).
        transport: an ``httpx2`` transport (tests: ``httpx2.ASGITransport(app)``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx2.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, transport=transport, trust_env=False
        )

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        if method in ("POST", "PUT", "PATCH"):  # the API refuses a change not typed as JSON (415), body or not
            headers = {"Content-Type": "application/json", **(headers or {})}
        response = await self._http.request(method, path, json=json, params=params, headers=headers)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            raise ManagementAPIError(
                response.status_code,
                str(body.get("title", response.reason_phrase)),
                str(body.get("detail", response.text[:200])),
                list(body.get("problems", [])),
                _retry_after(response.headers.get("retry-after")),
            )
        return response

    # -- health --
    async def ready(self) -> bool:
        """True if the gateway is ready (not starting, not draining)."""
        return (await self._http.get("readyz")).status_code == 200

    # -- WebSocket APIs --
    async def list_apis(self) -> list[ApiDocument]:
        return cast(list[ApiDocument], (await self._call("GET", "apis")).json()["apis"])

    async def get_api(self, name: str) -> ApiDocument:
        return cast(ApiDocument, (await self._call("GET", f"apis/{_segment(name)}")).json())

    async def create_api(self, api: Mapping[str, Any]) -> Written:
        """Create an API; returns it, with the configuration warnings about it in ``.warnings`` (:class:`Written`)."""
        return _written(await self._call("POST", "apis", json=dict(api)))

    async def replace_api(
        self, name: str, api: Mapping[str, Any], *, drain: bool = False, if_match: str | None = None
    ) -> Written:
        """Replace API ``name``; ``drain`` also closes its open connections; ``if_match``: an ETag.

        ``api`` may be a document read or returned before, :class:`Written` included. Returns the API,
        with the configuration warnings about it in ``.warnings`` (:class:`Written`)."""
        response = await self._call(
            "PUT",
            f"apis/{_segment(name)}",
            json=dict(api),
            params=_drain(drain),
            headers={"If-Match": if_match} if if_match else None,
        )
        return _written(response)

    async def delete_api(self, name: str, *, drain: bool = False) -> list[str]:
        """Delete API ``name``; returns the configuration warnings the deletion brought (usually none)."""
        return _warnings(await self._call("DELETE", f"apis/{_segment(name)}", params=_drain(drain)))

    async def export_config(self) -> dict[str, Any]:
        """The merged configuration (file and changes), ready to be written as a config file."""
        return cast(dict[str, Any], (await self._call("GET", "config")).json())

    # -- products and subscriptions --
    async def list_products(self) -> list[Product]:
        return cast(list[Product], (await self._call("GET", "products")).json()["products"])

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
        return _written(await self._call("POST", "products", json=body, params=_flags(force=force)))

    async def delete_product(self, name: str, *, force: bool = False, drain: bool = False) -> list[str]:
        """Delete a product; ``force``: even an API's last one that required a key (else 409); ``drain``: also
        close the connections of its APIs admitted with a subscription that no longer grants them.

        Returns:
            The configuration warnings the deletion brought: about its APIs, which no longer run its
            policies (a ``check-origin`` they needed, say).
        """
        response = await self._call("DELETE", f"products/{_segment(name)}", params=_flags(force=force, drain=drain))
        return _warnings(response)

    async def list_subscriptions(self, product: str | None = None) -> list[SubscriptionInfo]:
        params = {"product": product} if product else None
        return cast(
            list[SubscriptionInfo], (await self._call("GET", "subscriptions", params=params)).json()["subscriptions"]
        )

    async def get_subscription(self, subscription_id: str) -> SubscriptionInfo:
        return cast(SubscriptionInfo, (await self._call("GET", f"subscriptions/{_segment(subscription_id)}")).json())

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
        return cast(SubscriptionInfo, (await self._call("POST", "subscriptions", json=body)).json())

    async def suspend_subscription(self, subscription_id: str, *, drain: bool = False) -> SubscriptionInfo:
        """Suspend; ``drain``: also close the connections it admitted, on every worker."""
        path = f"subscriptions/{_segment(subscription_id)}/suspend"
        return cast(SubscriptionInfo, (await self._call("POST", path, params=_drain(drain))).json())

    async def activate_subscription(self, subscription_id: str) -> SubscriptionInfo:
        return cast(
            SubscriptionInfo, (await self._call("POST", f"subscriptions/{_segment(subscription_id)}/activate")).json()
        )

    async def regenerate_key(self, subscription_id: str, *, drain: bool = False) -> SubscriptionInfo:
        """A new key for the subscription (in the result's ``key``); the old one stops working for new
        handshakes (``drain``: its open connections are closed too, on every worker)."""
        path = f"subscriptions/{_segment(subscription_id)}/regenerate-key"
        return cast(SubscriptionInfo, (await self._call("POST", path, params=_drain(drain))).json())

    async def delete_subscription(self, subscription_id: str, *, drain: bool = False) -> None:
        """Delete; ``drain``: also close the connections it admitted, on every worker."""
        await self._call("DELETE", f"subscriptions/{_segment(subscription_id)}", params=_drain(drain))

    # -- live connections --
    async def list_connections(self, api: str | None = None, *, limit: int | None = None) -> list[Connection]:
        """The oldest open connections on every worker of the gateway (``limit``: the server's default, 1000)."""
        params = {"api": api} if api else {}
        if limit is not None:
            params["limit"] = str(limit)
        return cast(list[Connection], (await self._call("GET", "connections", params=params)).json()["connections"])

    async def send(self, connection_id: str, data: str | bytes) -> str:
        """Send a text (``str``) or binary (``bytes``) message to a connection's client.

        Returns:
            The id of the worker that holds the connection (any worker of the gateway may).
        """
        body = {"text": data} if isinstance(data, str) else {"binary": base64.b64encode(data).decode()}
        return str(
            (await self._call("POST", f"connections/{_segment(connection_id)}/messages", json=body)).json()["worker"]
        )

    async def kick(self, connection_id: str, code: int = 1000, reason: str = "") -> str:
        """Close a connection (both sides) with ``code`` and ``reason``; returns the worker that held it."""
        body = {"code": code, "reason": reason}
        return str(
            (await self._call("POST", f"connections/{_segment(connection_id)}/close", json=body)).json()["worker"]
        )


def _written(response: httpx2.Response) -> Written:
    """The resource a create or replace answered with, its ``warnings`` taken out of it."""
    body = response.json()
    if not isinstance(body, dict):
        return Written()
    found = body.pop("warnings", None)
    return Written(body, warnings=[str(warning) for warning in found] if isinstance(found, list) else ())


def _warnings(response: httpx2.Response) -> list[str]:
    """The ``warnings`` of a deletion's answer: 200 with them, or 204 without."""
    if response.status_code == 204 or not response.content:
        return []
    body = response.json()
    found = body.get("warnings") if isinstance(body, dict) else None
    return [str(warning) for warning in found] if isinstance(found, list) else []


def _segment(value: str) -> str:
    """``value`` as one URL path segment: percent-encoded with nothing left safe, ``/`` included.

    Built by f-string, ``subscriptions/../apis/x`` was ``/apis/x`` (and ``?``, ``#`` cut a name short);
    ``""``, ``.`` and ``..`` cannot be one segment once a client or proxy normalises the path.
    """
    if value in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be a name or id in the management API")
    return quote(value, safe="")


def _drain(drain: bool) -> dict[str, str] | None:
    return _flags(drain=drain)


def _flags(**flags: bool) -> dict[str, str] | None:
    """The query's flags that are set (``?drain=true&force=true``), or None."""
    return {name: "true" for name, on in flags.items() if on} or None


__all__ = [
    "ApiDocument",
    "Connection",
    "ManagementAPIError",
    "ManagementClient",
    "Product",
    "SubscriptionInfo",
    "Written",
]
