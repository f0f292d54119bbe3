"""Products and subscriptions as the management API keeps them: an isolated, provisional model.

A product groups APIs; a subscription grants one key to one product. A key is shown once, when it
is created or regenerated; only its SHA-256 (hex) is stored, and a presented key is checked with a
constant-time comparison (:func:`find_by_key`).

The fields mirror the configuration's ``products`` and ``subscriptions`` as the handshake policies
define them (``name``, ``display_name``, ``apis``, ``subscription_required``; ``id``, ``product``,
``name``, ``key_sha256``, ``state``, ``expires_at``). Once :class:`~asgi_ws_gateway.GatewayConfig`
has those fields, :func:`~asgi_ws_gateway.management.overlay.merge_document` passes the ones kept
here to the gateway with the APIs, so the policies see them on every worker.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.apis import ApiConfig
from ..config.fields import Instant, Name, Text
from ..config.gateway import GatewayConfig
from ..config.problems import describe_errors
from ..config.products import ProductConfig, SubscriptionConfig
from ..policies.products import hash_key
from ..strict_numbers import StrictNumbers
from .errors import Conflict, Invalid, NotFound
from .overlay import Overlay, merge_document

Product = ProductConfig
"""A product as the management API takes it: the configuration's own model, policies included."""


class SubscriptionRequest(StrictNumbers):
    """What a client sends to create a subscription (the key is generated)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    product: Name = Field(description="The product this subscription grants.")
    id: Annotated[Name | None, Field(description="Unique id (default: generated).")] = None
    name: Text | None = Field(default=None, description="Human name: the subscriber.")
    expires_at: Instant | None = Field(
        default=None, description="After this instant the subscription is expired (without a zone: UTC)."
    )


class SubscriptionResource(BaseModel):
    """A subscription as stored: never the key, only its SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, title="Subscription")

    id: str
    product: str
    name: str | None = None
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    state: Literal["active", "suspended", "expired"] = "active"
    expires_at: Instant | None = None
    created_at: Instant | None = None
    """When it was created here; None for the configuration file's own subscriptions."""

    def public(self) -> dict[str, Any]:
        """As the API shows it: no key hash; ``state`` is ``expired`` once ``expires_at`` has passed."""
        document = self.model_dump(mode="json", exclude={"key_sha256"})
        if self.state == "active" and self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            document["state"] = "expired"
        return document


def new_key() -> str:
    """A new subscription key: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a request body; ``Invalid`` lists every problem by field path."""
    if not isinstance(body, Mapping):
        raise Invalid("the body must be a JSON object", ["(top level): expected a JSON object"])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = describe_errors(exc.errors())
        raise Invalid(f"invalid {model.__name__.lower()} ({len(problems)} problem(s))", problems) from None


def products(overlay: Overlay) -> dict[str, Product]:
    return {name: Product.model_validate(doc) for name, doc in overlay.products.items()}


def subscriptions(overlay: Overlay) -> dict[str, SubscriptionResource]:
    return {sid: SubscriptionResource.model_validate(doc) for sid, doc in overlay.subscriptions.items()}


def add_product(overlay: Overlay, product: Product, api_names: set[str], file_products: set[str]) -> Overlay:
    if product.name in overlay.products or product.name in file_products:
        raise Conflict(f"product '{product.name}' exists already")
    unknown = [f"apis[{i}]: no API named '{name}'" for i, name in enumerate(product.apis) if name not in api_names]
    if unknown:
        raise Invalid(f"invalid product ({len(unknown)} problem(s))", unknown)
    return overlay.next(products={**overlay.products, product.name: product.model_dump(mode="json")})


def remove_product(overlay: Overlay, name: str, file_products: set[str]) -> Overlay:
    if name in file_products:
        raise Conflict(f"product '{name}' is defined in the configuration file: change it there")
    if name not in overlay.products:
        raise NotFound(f"no product named '{name}'")
    users = sorted(s.id for s in subscriptions(overlay).values() if s.product == name)
    if users:
        raise Conflict(f"product '{name}' still has subscriptions: {', '.join(users)}")
    return overlay.next(products={k: v for k, v in overlay.products.items() if k != name})


def keyed_apis(document: Mapping[str, Any]) -> set[str]:
    """The APIs of a merged configuration (:func:`~.overlay.merge_document`) a client needs a key for:
    listed by a product, and only by products that require a subscription."""
    needs_key: dict[str, bool] = {}
    for product in document["products"]:
        required = product.get("subscription_required", True)  # the file's products: only the fields set
        for api in product.get("apis", ()):
            needs_key[api] = needs_key.get(api, True) and required
    defined = {_api_name(api) for api in document["apis"]}
    return {api for api, keyed in needs_key.items() if keyed and api in defined}


def opened_apis(file: GatewayConfig, before: Overlay, after: Overlay) -> list[str]:
    """The APIs a change from ``before`` to ``after`` opens to clients without a subscription key: they
    needed one, they remain, and they no longer do (their last product that required a key deleted,
    or a product that requires none added)."""
    old, new = merge_document(file, before), merge_document(file, after)
    remaining = {_api_name(api) for api in new["apis"]}
    return sorted((keyed_apis(old) - keyed_apis(new)) & remaining)


def _api_name(api: ApiConfig | Mapping[str, Any]) -> Any:
    return api.name if isinstance(api, ApiConfig) else api.get("name")


def products_with_api(overlay: Overlay, api: str) -> list[str]:
    return sorted(name for name, product in products(overlay).items() if api in product.apis)


def add_subscription(
    overlay: Overlay, request: SubscriptionRequest, key: str, sid: str, file: GatewayConfig
) -> Overlay:
    if request.product not in overlay.products and all(p.name != request.product for p in file.products):
        raise Invalid("invalid subscription (1 problem(s))", [f"product: no product named '{request.product}'"])
    if sid in overlay.subscriptions or any(s.id == sid for s in file.subscriptions):
        raise Conflict(f"subscription '{sid}' exists already")
    subscription = SubscriptionResource(
        id=sid,
        product=request.product,
        name=request.name,
        key_sha256=hash_key(key),
        expires_at=request.expires_at,
        created_at=datetime.now(UTC),
    )
    return _put(overlay, subscription)


def from_file(subscription: SubscriptionConfig) -> SubscriptionResource:
    """A subscription of the configuration file, as the management API lists it."""
    return SubscriptionResource(
        id=subscription.id,
        product=subscription.product,
        name=subscription.name,
        key_sha256=subscription.key_sha256.lower(),
        state=subscription.state,
        expires_at=subscription.expires_at,
    )


def change_subscription(overlay: Overlay, sid: str, file: GatewayConfig, **changes: Any) -> Overlay:
    """Set ``state`` or ``key_sha256`` of subscription ``sid``."""
    _refuse_file_subscription(sid, file)
    current = subscriptions(overlay).get(sid)
    if current is None:
        raise NotFound(f"no subscription '{sid}'")
    return _put(overlay, current.model_copy(update=changes))


def remove_subscription(overlay: Overlay, sid: str, file: GatewayConfig) -> Overlay:
    _refuse_file_subscription(sid, file)
    if sid not in overlay.subscriptions:
        raise NotFound(f"no subscription '{sid}'")
    return overlay.next(subscriptions={k: v for k, v in overlay.subscriptions.items() if k != sid})


def _refuse_file_subscription(sid: str, file: GatewayConfig) -> None:
    if any(s.id == sid for s in file.subscriptions):
        raise Conflict(f"subscription '{sid}' is defined in the configuration file: change it there")


def _put(overlay: Overlay, subscription: SubscriptionResource) -> Overlay:
    return overlay.next(subscriptions={**overlay.subscriptions, subscription.id: subscription.model_dump(mode="json")})


__all__ = [
    "Product",
    "SubscriptionRequest",
    "SubscriptionResource",
    "add_product",
    "add_subscription",
    "change_subscription",
    "hash_key",
    "keyed_apis",
    "new_key",
    "opened_apis",
    "parse",
    "products",
    "products_with_api",
    "remove_product",
    "remove_subscription",
    "subscriptions",
]
