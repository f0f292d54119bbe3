"""What :class:`~.client.ManagementClient`'s calls return: the management API's resources as typed
dicts, and :class:`Written`, the answer to a change with the configuration warnings it brought."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast

from .answers import AnswerProblem, an_object, rows, warnings_of

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


@dataclass(frozen=True)
class ConnectionListing:
    """A page of ``GET /connections`` with what says whether it is whole
    (:meth:`~.client.ManagementClient.connection_listing`).

    ``answered`` of ``expected`` workers answered; ``missing`` names those of the management bus's
    roster that did not (cut off from Redis, or late): their connections are not in ``connections``,
    nor in ``total``. Usage::

        listing = await gateway.connection_listing()
        if not listing.complete:
            print("not listed: the connections of", ", ".join(listing.missing) or "some workers")
    """

    connections: list[Connection]
    total: int
    """Connections open on the workers that answered (``connections`` is at most ``limit`` of them)."""
    answered: int
    expected: int
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every worker answered: the page holds the oldest connections of the whole gateway."""
        return self.answered >= self.expected and not self.missing


_CONNECTION_ROWS = rows("connections", "id")
_UNSAID = {"answered": 1, "expected": 1}
"""The ``workers`` of an answer without one (a server that does not say, as another program serving this
API may): itself, whole. A ``workers`` that is not an object is still refused."""


def a_connection_listing(value: Any) -> ConnectionListing:
    """``GET /connections``'s answer, its ``total`` and ``workers`` checked (a shape, :mod:`.answers`)."""
    found = _CONNECTION_ROWS(value)
    workers = value.get("workers", _UNSAID)
    if not isinstance(workers, dict):
        raise AnswerProblem("expected a 'workers' object")
    total = _count(value, "total")
    answered, expected = _count(workers, "answered"), _count(workers, "expected")
    missing = workers.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(worker, str) for worker in missing):
        raise AnswerProblem("expected 'workers.missing' to be a list of strings")
    return ConnectionListing(cast(list[Connection], found), total, answered, expected, tuple(missing))


def _count(answer: dict[str, Any], field: str) -> int:
    number = answer.get(field)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise AnswerProblem(f"expected {field!r} to be a count, got {type(number).__name__}")
    return number


def written(value: Any) -> Written:
    """The resource a create or replace answered with, its ``warnings`` taken out of it (a shape, :mod:`.answers`)."""
    body = an_object(value)
    warnings = warnings_of(body)
    body.pop("warnings", None)
    return Written(body, warnings=warnings)


__all__ = [
    "ApiDocument",
    "Connection",
    "ConnectionListing",
    "Product",
    "SubscriptionInfo",
    "Written",
    "a_connection_listing",
    "written",
]
