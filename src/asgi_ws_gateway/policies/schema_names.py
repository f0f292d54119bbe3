"""The names a JSON Schema declares, and a message's names that differ from one only in case.

Go's ``encoding/json`` and ASP.NET Core bind an object's name to a field ignoring case: a schema
that allows ``role: {enum: [user]}`` let ``{"ROLE": "admin"}`` through as an unknown name, and a Go
upstream read ``role = admin``. :class:`CaseVariants` refuses such a name, wherever it stands in
the message (``json_names.check_unique_names`` refuses two spellings side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urldefrag, urljoin

from ..json_names import AmbiguousJson

_ONE = ("additionalProperties", "unevaluatedProperties", "items", "additionalItems", "unevaluatedItems", "contains",
        "propertyNames", "not", "if", "then", "else", "contentSchema")  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_NAMED = ("properties", "dependentRequired", "dependentSchemas", "dependencies")  # their keys are names
_CONTAINERS = (dict, list)


def declared_names(schema: Any, retrieve: Callable[[str], Any]) -> set[str]:
    """Every name ``schema`` declares, at any depth: ``properties``, ``required``, ``dependentRequired``,
    ``dependentSchemas`` (and draft 7's ``dependencies``), in every subschema (``allOf``, ``items``,
    ``$defs``, ...) and in the files its ``$ref`` names (``retrieve``: a ``file:`` URI's document).
    Values (``const``, ``enum``, ``default``, ``examples``) are data, not read."""
    names: set[str] = set()
    pending: list[tuple[Any, str]] = [(schema, "")]
    retrieved: set[str] = set()
    seen: set[int] = set()  # a YAML alias shares a subschema, or makes one contain itself
    while pending:
        node, base = pending.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        for keyword in _NAMED:
            if isinstance(node.get(keyword), dict):
                names.update(name for name in node[keyword] if isinstance(name, str))
        names.update(_strings(node.get("required")))
        for keyword in ("dependentRequired", "dependencies"):  # a name: the names it requires
            if isinstance(node.get(keyword), dict):
                for required in node[keyword].values():
                    names.update(_strings(required))
        pending.extend((node.get(keyword), base) for keyword in _ONE)
        for keyword in _LIST:
            if isinstance(node.get(keyword), list):
                pending.extend((child, base) for child in node[keyword])
        for keyword in _MAP:
            if isinstance(node.get(keyword), dict):
                pending.extend((child, base) for child in node[keyword].values())
        for keyword in ("$ref", "$dynamicRef"):
            if isinstance(node.get(keyword), str):
                uri = urldefrag(urljoin(base, node[keyword])).url
                if uri.startswith("file://") and uri not in retrieved:
                    retrieved.add(uri)
                    pending.append((_retrieved(retrieve, uri), uri))
    return names


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _retrieved(retrieve: Callable[[str], Any], uri: str) -> Any:
    try:
        return retrieve(uri)
    except (ValueError, OSError, RecursionError):  # the validator compiled without it: a $ref it never follows
        return None


class CaseVariants:
    """Refuses a message holding a name that is a declared name in another case (``casefold``, as
    ``check_unique_names`` compares: it folds the long s, U+017F, and the Kelvin sign as Go does).

    Per message, one set lookup per name, and a ``casefold`` for a name not spelled as declared."""

    __slots__ = ("exact", "folded")

    def __init__(self, names: Iterable[str]) -> None:
        self.exact = frozenset(names)
        self.folded = frozenset(name.casefold() for name in self.exact)

    def check(self, value: Any) -> None:
        """Raise :class:`AmbiguousJson` when an object in ``value``, at any depth, holds such a name.

        Raises:
            AmbiguousJson: a name the schema declares, in another case.
        """
        exact, folded = self.exact, self.folded
        pending = [value] if isinstance(value, _CONTAINERS) else []
        while pending:  # not recursive: a message may nest deeper than Python's stack goes
            node = pending.pop()
            if isinstance(node, dict):
                for name in node:
                    if name not in exact and name.casefold() in folded:
                        raise AmbiguousJson("a name is one the schema declares, in another case")
                pending += [child for child in node.values() if isinstance(child, _CONTAINERS)]
            else:
                pending += [child for child in node if isinstance(child, _CONTAINERS)]


__all__ = ["CaseVariants", "declared_names"]
