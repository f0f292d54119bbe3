"""What :class:`~.client.ManagementClient`'s calls return: the management API's resources as typed
dicts, and :class:`Written`, the answer to a change with the configuration warnings it brought."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired, TypedDict

from .answers import an_object, warnings_of

ApiDocument = dict[str, Any]
"""A WebSocket API: the fields of an ``apis`` entry of the configuration file."""


class Written(dict[str, Any]):
    """The resource a change answered with (:meth:`~.client.ManagementClient.create_api`,
    :meth:`~.client.ManagementClient.replace_api`, :meth:`~.client.ManagementClient.create_product`): its fields, a dict
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


def written(value: Any) -> Written:
    """The resource a create or replace answered with, its ``warnings`` taken out of it (a shape, :mod:`.answers`)."""
    body = an_object(value)
    warnings = warnings_of(body)
    body.pop("warnings", None)
    return Written(body, warnings=warnings)


__all__ = ["ApiDocument", "Connection", "Product", "SubscriptionInfo", "Written", "written"]
