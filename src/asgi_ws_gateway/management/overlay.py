"""The overlay: what the management API changed, on top of the configuration file.

The file is the declarative seed (GitOps); the overlay records, per API name, a full replacement
definition or a deletion (a tombstone), plus the products and subscriptions created through the
API. The configuration the gateway runs is :func:`merge` of the two:

* file APIs in file order, each replaced by its overlay definition or dropped by its tombstone;
* then the APIs only the overlay defines, in the order they were created.

Every change increments ``revision``; workers apply the highest revision they have seen. ``epoch``,
a random id made with the state's first change, tells a successor from another state: a store
restored from an older copy, failed over to a lagging replica or emptied goes back to a lower
revision, or to another epoch (:func:`compare_states`). A revision may ask every worker to close
open connections (:class:`Drain`): the request is kept with the state, so each worker closes them
when it applies that revision, whichever way it learns of it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..config.apis import ApiConfig
from ..config.gateway import GatewayConfig
from ..errors import ConfigError
from ..json_names import load_unique
from ..policies.build import load_config_to_install

FORMAT = 1
DRAIN_HISTORY = 256
"""The revisions whose drains the state keeps: a worker further behind misses the older ones (warned)."""
DRAIN_BYTES = 256 * 1024
"""What the kept drains may take of the state document at most (the oldest go first): a product's API list
repeated by each ``?drain=true`` filled the 16 MiB state until every change was refused (an attack pass)."""
# An index into the merged configuration's APIs: not one of a product's list (``products[0].apis[0]``),
# which read as the first API's name, or past the list, a 500 (IndexError).
_API_REF = re.compile(r"(?<![\w.])apis\[(\d+)\](\.?)")
_DRAIN_FIELDS = ("apis", "subscriptions", "ungranted")


@dataclass(frozen=True)
class Drain:
    """The open connections one revision asked every worker to close (``?drain=true``).

    ``apis``: every connection of these APIs. ``subscriptions``: the connections admitted with these
    subscriptions (suspended, re-keyed or deleted). ``ungranted``: the connections of these APIs
    admitted with a subscription that no longer grants the API (a deleted product's).
    """

    apis: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()
    ungranted: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in _DRAIN_FIELDS if getattr(self, name)}

    @classmethod
    def from_json(cls, data: Any) -> Drain:
        if not isinstance(data, Mapping):
            raise TypeError(f"a drain is an object, not {type(data).__name__}")
        return cls(*(tuple(str(value) for value in data.get(name, ())) for name in _DRAIN_FIELDS))


@dataclass(frozen=True)
class Overlay:
    """The management API's changes. Values are JSON-ready dicts; ``apis[name] = None`` deletes.

    ``epoch`` is made by the first change (empty before it); ``drains`` maps a revision to what it
    asked to close, for the last :data:`DRAIN_HISTORY` revisions.
    """

    revision: int = 0
    apis: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: str = ""
    drains: dict[int, Drain] = field(default_factory=dict)

    def to_json(self) -> str:
        """The state document (kept once made: a state is never changed, only replaced by :meth:`next`, and
        at 1,000 APIs the indented document takes ~0.2 s to write, which a change did three times, one of
        them on the event loop)."""
        made: str | None = self.__dict__.get("_json")
        if made is None:
            made = self._document()
            object.__setattr__(self, "_json", made)  # not a field: neither compared nor copied by replace()
        return made

    def _document(self) -> str:
        """``json.dumps(document, indent=1)``, its APIs and products from the text the state this one was made
        from wrote of each: unchanged, they are the same objects (Python's indenting encoder is ~30 times
        slower than its C one, and a change wrote 1,000 APIs again)."""
        fragments = _Fragments(self.__dict__.get("_fragments"))
        document = {
            "format": FORMAT,
            "epoch": self.epoch,
            "revision": self.revision,
            "apis": _APIS_PLACE if _str_keys(self.apis) else self.apis,
            "products": _PRODUCTS_PLACE if _str_keys(self.products) else self.products,
            "subscriptions": self.subscriptions,
            "drains": {str(revision): drain.to_json() for revision, drain in self.drains.items()},
        }
        text = json.dumps(document, indent=1, sort_keys=False)
        if document["apis"] is _APIS_PLACE:  # the first such string: an epoch is hex, the revision a number
            text = text.replace(json.dumps(_APIS_PLACE), fragments.mapping(self.apis), 1)
        if document["products"] is _PRODUCTS_PLACE:
            text = text.replace(json.dumps(_PRODUCTS_PLACE), fragments.mapping(self.products), 1)
        object.__setattr__(self, "_fragments", fragments.made)  # this state's own: its successors' to reuse
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> Overlay:
        data = load_unique(text.decode() if isinstance(text, bytes) else text)  # a hand edit's name twice: refused
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not an asgi-ws-gateway state document of format {FORMAT}")
        return cls(
            revision=int(data["revision"]),
            apis=dict(data.get("apis", {})),
            products=dict(data.get("products", {})),
            subscriptions=dict(data.get("subscriptions", {})),
            epoch=str(data.get("epoch", "")),
            drains={int(revision): Drain.from_json(drain) for revision, drain in dict(data.get("drains", {})).items()},
        )

    def next(self, **changes: Any) -> Overlay:
        """A copy with ``changes`` and the revision incremented (the first change makes the epoch)."""
        revision = self.revision + 1
        return self._succeeded_by(replace(
            self, revision=revision, epoch=self.epoch or secrets.token_hex(8), drains=_kept(self.drains, revision),
            **changes,
        ))  # fmt: skip

    def draining(self, drain: Drain | None) -> Overlay:
        """This revision, asking every worker that applies it to close what ``drain`` selects (None: nothing)."""
        if drain is None:
            return self
        return self._succeeded_by(replace(self, drains=_kept({**self.drains, self.revision: drain}, self.revision)))

    def _succeeded_by(self, successor: Overlay) -> Overlay:
        """``successor``, given the text this state wrote (or was given) of its documents: most are its too.
        Held by the states, not by a module-wide cache: gone with them (a cache of every state's documents
        by count kept thousands of multi-megabyte APIs, each state file poll adding its own)."""
        object.__setattr__(successor, "_fragments", self.__dict__.get("_fragments"))
        return successor

    def drains_after(self, revision: int) -> list[tuple[int, Drain]]:
        """The revisions after ``revision``, up to this one, that asked to close something, oldest first."""
        return [(r, self.drains[r]) for r in sorted(self.drains) if revision < r <= self.revision]

    def drains_since(self, revision: int) -> list[Drain]:
        """What the revisions after ``revision``, up to this one, asked to close, oldest first."""
        return [drain for _, drain in self.drains_after(revision)]

    def describe(self) -> str:
        return f"revision {self.revision} of state {self.epoch or '(none yet)'}"


_APIS_PLACE = "\x00apis"
_PRODUCTS_PLACE = "\x00products"


def _str_keys(mapping: Mapping[Any, Any]) -> bool:
    return all(isinstance(key, str) for key in mapping)


class _Fragments:
    """The text of a state's documents as ``json.dumps(..., indent=1)`` writes them two levels deep, by the
    document object (``id`` with the object: a state's documents are never changed in place, only
    replaced): those of the state it was made from (``known``) reused, the others written."""

    def __init__(self, known: dict[int, tuple[Any, str]] | None) -> None:
        self.known = known or {}
        self.made: dict[int, tuple[Any, str]] = {}

    def mapping(self, mapping: Mapping[str, Any]) -> str:
        """``mapping`` as ``json.dumps(..., indent=1)`` writes it one level deep in the document."""
        if not mapping:
            return "{}"
        return "{" + ",".join(f"\n  {json.dumps(key)}: {self.text(value)}" for key, value in mapping.items()) + "\n }"

    def text(self, value: Any) -> str:
        held = self.known.get(id(value))
        if held is None or held[0] is not value:
            held = (value, json.dumps(value, indent=1).replace("\n", "\n  "))  # JSON escapes a newline in a string
        if isinstance(value, dict):
            self.made[id(value)] = held
        return held[1]


def compare_states(applied: Overlay, stored: Overlay) -> Literal["same", "newer", "diverged"]:
    """How the store's state relates to the one a worker applied.

    ``newer``: a successor (same epoch, higher revision; or the first change gave the state its epoch).
    ``diverged``: a lower revision or another epoch, the store went back (restored from an older copy,
    failed over to a lagging replica, emptied) — or ``stored`` was read before ``applied`` was saved.
    """
    if stored.epoch == applied.epoch:
        if stored.revision == applied.revision:  # after a rollback, one number may name two states
            return "same" if stored is applied or stored == applied else "diverged"
        return "newer" if stored.revision > applied.revision else "diverged"
    if "" in (stored.epoch, applied.epoch) and stored.revision > applied.revision:
        return "newer"  # a state without an epoch yet, or one an older version of the gateway wrote
    return "diverged"


def _kept(drains: dict[int, Drain], revision: int) -> dict[int, Drain]:
    """``drains`` of the last :data:`DRAIN_HISTORY` revisions up to ``revision``, within :data:`DRAIN_BYTES`
    (the newest kept first)."""
    kept: dict[int, Drain] = {}
    size = 0
    for number in sorted((r for r in drains if r > revision - DRAIN_HISTORY), reverse=True):
        size += len(json.dumps(drains[number].to_json()))
        if size > DRAIN_BYTES and kept:
            break
        kept[number] = drains[number]
    return dict(sorted(kept.items()))


def drain_reasons(drains: Iterable[Drain], config: GatewayConfig) -> Callable[[str, str | None], str | None]:
    """The reason a connection of an API, admitted with a subscription (or None), is closed with, if ``drains``
    select it under ``config`` (the configuration that applied them); None when they do not."""
    apis: set[str] = set()
    subscriptions: set[str] = set()
    ungranted: set[str] = set()
    for drain in drains:
        apis.update(drain.apis)
        subscriptions.update(drain.subscriptions)
        ungranted.update(drain.ungranted)
    granted = {product.name: set(product.apis) for product in config.products}
    grants = {s.id: granted.get(s.product, set()) for s in config.subscriptions}

    def reason(api: str, subscription: str | None) -> str | None:
        if api in apis:
            return "API configuration changed"
        if subscription is None:
            return None
        if subscription in subscriptions or (api in ungranted and api not in grants.get(subscription, ())):
            return "subscription revoked"
        return None

    return reason


def api_document(api: ApiConfig, *, compact: bool = False) -> dict[str, Any]:
    """An API as JSON: every field (``compact``: only those set, upstreams as plain URLs when possible)."""
    if not compact:
        return api.model_dump(mode="json")
    document = api.model_dump(mode="json", exclude_unset=True)
    document["upstreams"] = [
        u["url"] if set(u) == {"url"} else u for u in api.model_dump(mode="json", exclude_unset=True)["upstreams"]
    ]
    return document


class ValidatedApis:
    """The APIs of the overlay validated before, each with the document it was validated from: a merge passes
    the :class:`ApiConfig` of a document unchanged (the same JSON) instead of the document, which is then
    not validated again (1,000 APIs: ~0.1 s, holding the interpreter). Keep one per management service:
    what was validated under its gate holds under it."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[dict[str, Any], str, ApiConfig]] = {}

    def get(self, name: str, document: dict[str, Any]) -> ApiConfig | dict[str, Any]:
        known = self._known.get(name)
        # As JSON, not ==: True == 1 and 1.0 == 1, and a document that changed max: 1 to max: true is not valid.
        if known is not None and (known[0] is document or known[1] == json.dumps(document)):
            return known[2]
        return document

    def learn(self, overlay: Overlay, config: GatewayConfig) -> None:
        """Remember the APIs ``config`` (valid) made of ``overlay``'s documents (replaced whole: threads read)."""
        known = {name: held for name, held in self._known.items() if overlay.apis.get(name) is not None}
        for api in config.apis:
            document = overlay.apis.get(api.name)
            held = known.get(api.name)
            if document is not None and (held is None or held[2] is not api):
                known[api.name] = (document, json.dumps(document), api)
        self._known = known


def merge_document(base: GatewayConfig, overlay: Overlay, known: ValidatedApis | None = None) -> dict[str, Any]:
    """The merged configuration as a mapping :func:`~asgi_ws_gateway.policies.build.load_config` accepts
    (``known``: APIs validated before, passed as they are; see :class:`ValidatedApis`)."""
    document: dict[str, Any] = base.model_dump(mode="python", exclude={"apis"}, exclude_unset=True)
    apis: list[Any] = []

    def replaced(name: str, doc: dict[str, Any]) -> Any:
        return known.get(name, doc) if known is not None else doc

    for api in base.apis:
        if api.name not in overlay.apis:
            apis.append(api)  # kept as the object: in-code upstream apps survive the merge
        elif (replacement := overlay.apis[api.name]) is not None:
            apis.append(replaced(api.name, replacement))
    file_names = {api.name for api in base.apis}
    apis.extend(replaced(name, doc) for name, doc in overlay.apis.items() if doc is not None and name not in file_names)
    document["apis"] = apis
    # Products and subscriptions created here travel with the APIs, after the file's own.
    document["products"] = [*document.get("products", []), *overlay.products.values()]
    kept = ({k: v for k, v in doc.items() if k != "created_at"} for doc in overlay.subscriptions.values())
    document["subscriptions"] = [*document.get("subscriptions", []), *kept]
    return document


def merge(base: GatewayConfig, overlay: Overlay, known: ValidatedApis | None = None) -> GatewayConfig:
    """The configuration to run: the file's, changed by the overlay. Raises ``ConfigError``."""
    return load_config_to_install(merge_document(base, overlay, known))


class InvalidChange(ConfigError):
    """A change would make the configuration invalid; ``problems`` are relative to the request body."""


def validate(
    base: GatewayConfig, overlay: Overlay, subject: str | None = None, known: ValidatedApis | None = None
) -> GatewayConfig:
    """Merge and validate; on failure, problems about API ``subject`` lose their ``apis[i].`` prefix.

    Other APIs are named rather than numbered (``API 'chat'``), since indexes in the merged list
    mean nothing to a client of the management API.
    """
    document = merge_document(base, overlay, known)
    try:
        return load_config_to_install(document)  # the management API never imports a module
    except ConfigError as exc:
        names = [_name_of(api, i) for i, api in enumerate(document["apis"])]
        raise InvalidChange([_relative(p, names, subject) for p in exc.problems]) from None


def _name_of(api: Any, index: int) -> str:
    if isinstance(api, ApiConfig):
        return api.name
    name = api.get("name") if isinstance(api, Mapping) else None
    return name if isinstance(name, str) else f"#{index}"


def _relative(problem: str, names: list[str], subject: str | None) -> str:
    def name(index: str) -> str | None:
        return names[int(index)] if int(index) < len(names) else None

    match = _API_REF.match(problem)
    if match is not None and subject is not None and name(match.group(1)) == subject:
        rest = problem[match.end() :]
        problem = "(top level)" + rest if rest.startswith(":") else rest

    def named(m: re.Match[str]) -> str:
        found = name(m.group(1))
        return m.group(0) if found is None else f"API '{found}'" + (" " if m.group(2) else "")

    return _API_REF.sub(named, problem)


__all__ = [
    "DRAIN_HISTORY",
    "FORMAT",
    "Drain",
    "InvalidChange",
    "Overlay",
    "ValidatedApis",
    "api_document",
    "compare_states",
    "drain_reasons",
    "merge",
    "merge_document",
    "validate",
]
