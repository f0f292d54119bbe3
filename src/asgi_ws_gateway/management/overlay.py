"""The overlay: what the management API changed, on top of the configuration file.

The file is the declarative seed (GitOps); the overlay records, per API name, a full replacement
definition or a deletion (a tombstone), plus the products and subscriptions created through the
API. The configuration the gateway runs is :func:`merge` of the two:

* file APIs in file order, each replaced by its overlay definition or dropped by its tombstone;
* then the APIs only the overlay defines, in the order they were created.

Every change increments ``revision``; workers apply the highest revision they have seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config.apis import ApiConfig
from ..config.gateway import GatewayConfig
from ..errors import ConfigError
from ..json_names import load_unique
from ..policies.build import load_config

FORMAT = 1
_API_REF = re.compile(r"apis\[(\d+)\](\.?)")


@dataclass(frozen=True)
class Overlay:
    """The management API's changes. Values are JSON-ready dicts; ``apis[name] = None`` deletes."""

    revision: int = 0
    apis: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        document = {
            "format": FORMAT,
            "revision": self.revision,
            "apis": self.apis,
            "products": self.products,
            "subscriptions": self.subscriptions,
        }
        return json.dumps(document, indent=1, sort_keys=False)

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
        )

    def next(self, **changes: Any) -> Overlay:
        """A copy with ``changes`` and the revision incremented."""
        return replace(self, revision=self.revision + 1, **changes)


def api_document(api: ApiConfig, *, compact: bool = False) -> dict[str, Any]:
    """An API as JSON: every field (``compact``: only those set, upstreams as plain URLs when possible)."""
    if not compact:
        return api.model_dump(mode="json")
    document = api.model_dump(mode="json", exclude_unset=True)
    document["upstreams"] = [
        u["url"] if set(u) == {"url"} else u for u in api.model_dump(mode="json", exclude_unset=True)["upstreams"]
    ]
    return document


def merge_document(base: GatewayConfig, overlay: Overlay) -> dict[str, Any]:
    """The merged configuration as a mapping :func:`~asgi_ws_gateway.policies.build.load_config` accepts."""
    document: dict[str, Any] = base.model_dump(mode="python", exclude={"apis"}, exclude_unset=True)
    apis: list[Any] = []
    for api in base.apis:
        if api.name not in overlay.apis:
            apis.append(api)  # kept as the object: in-code upstream apps survive the merge
        elif (replacement := overlay.apis[api.name]) is not None:
            apis.append(replacement)
    file_names = {api.name for api in base.apis}
    apis.extend(doc for name, doc in overlay.apis.items() if doc is not None and name not in file_names)
    document["apis"] = apis
    # Products and subscriptions created here travel with the APIs, after the file's own.
    document["products"] = [*document.get("products", []), *overlay.products.values()]
    kept = ({k: v for k, v in doc.items() if k != "created_at"} for doc in overlay.subscriptions.values())
    document["subscriptions"] = [*document.get("subscriptions", []), *kept]
    return document


def merge(base: GatewayConfig, overlay: Overlay) -> GatewayConfig:
    """The configuration to run: the file's, changed by the overlay. Raises ``ConfigError``."""
    return load_config(merge_document(base, overlay), import_plugins=False)


class InvalidChange(ConfigError):
    """A change would make the configuration invalid; ``problems`` are relative to the request body."""


def validate(base: GatewayConfig, overlay: Overlay, subject: str | None = None) -> GatewayConfig:
    """Merge and validate; on failure, problems about API ``subject`` lose their ``apis[i].`` prefix.

    Other APIs are named rather than numbered (``API 'chat'``), since indexes in the merged list
    mean nothing to a client of the management API.
    """
    document = merge_document(base, overlay)
    try:
        return load_config(document, import_plugins=False)  # the management API never imports a module
    except ConfigError as exc:
        names = [_name_of(api, i) for i, api in enumerate(document["apis"])]
        raise InvalidChange([_relative(p, names, subject) for p in exc.problems]) from None


def _name_of(api: Any, index: int) -> str:
    if isinstance(api, ApiConfig):
        return api.name
    name = api.get("name") if isinstance(api, Mapping) else None
    return name if isinstance(name, str) else f"#{index}"


def _relative(problem: str, names: list[str], subject: str | None) -> str:
    match = _API_REF.match(problem)
    if match is not None and subject is not None and names[int(match.group(1))] == subject:
        rest = problem[match.end() :]
        problem = "(top level)" + rest if rest.startswith(":") else rest
    return _API_REF.sub(lambda m: f"API '{names[int(m.group(1))]}'" + (" " if m.group(2) else ""), problem)


__all__ = ["FORMAT", "InvalidChange", "Overlay", "api_document", "merge", "merge_document", "validate"]
