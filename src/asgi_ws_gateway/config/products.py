"""Products, the subscriptions to them, and where clients present a subscription's key."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from .apis import MessagePoliciesConfig
from .fields import POLICIES_DOC, ConfigModel, HeaderName, Instant, Name, Policies, QueryName, Text
from .limits import MAX_APIS, MAX_KEY_HEADERS


class ProductConfig(ConfigModel):
    """A product: a group of APIs that subscriptions grant access to, with its own policies."""

    name: Annotated[Name, Field(description="Unique identifier.")]
    display_name: Text | None = None
    apis: list[Name] = Field(
        default_factory=list, max_length=MAX_APIS, description="Names of the APIs in this product."
    )
    subscription_required: bool = Field(
        default=True, description="A subscription key is needed (false: an open product, its policies apply to all)."
    )
    policies: Policies = Field(default_factory=list, description=POLICIES_DOC)
    message_policies: MessagePoliciesConfig = Field(default_factory=MessagePoliciesConfig)


class SubscriptionConfig(ConfigModel):
    """A subscription to a product. Only the SHA-256 of its key is stored."""

    id: Annotated[Name, Field(description="Unique identifier ({subscription.id}).")]
    product: Name = Field(description="The product this subscription grants.")
    name: Text | None = Field(default=None, description="Human name (the subscriber).")
    key_sha256: Annotated[
        str,
        Field(pattern=r"^[0-9a-fA-F]{64}$", max_length=64, description="Hex SHA-256 of the key: never the key itself."),
    ]
    state: Literal["active", "suspended", "expired"] = "active"
    expires_at: Instant | None = Field(
        default=None, description="After this instant the subscription is expired (without a zone: UTC)."
    )


class SubscriptionKeyConfig(ConfigModel):
    """Where clients present subscription keys."""

    headers: list[HeaderName] = Field(
        default_factory=lambda: ["X-Subscription-Key", "Ocp-Apim-Subscription-Key"],
        max_length=MAX_KEY_HEADERS,
        description="Request headers tried in order (Ocp-Apim-Subscription-Key is Azure APIM's), at most 16: each is "
        "looked up in every handshake.",
    )
    query: QueryName | None = Field(default="subscription-key", description="Query parameter (null: not accepted).")

    @field_validator("headers")
    @classmethod
    def _not_via(cls, headers: list[str]) -> list[str]:
        # A key's header is taken out of the upstream request: Via's entries are how the gateway detects a
        # forwarding loop, and a client sending a key in it would have removed them.
        if any(header.lower() == "via" for header in headers):
            raise ValueError("Via cannot carry a subscription key: the gateway detects forwarding loops by it")
        return headers


__all__ = [
    "ProductConfig",
    "SubscriptionConfig",
    "SubscriptionKeyConfig",
]
