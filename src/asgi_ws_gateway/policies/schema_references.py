"""Where a JSON Schema's ``$ref`` leads, for the gateway's own readings of a schema (what it costs a
message: :mod:`.schema_budget`; the names it declares at each place: :mod:`.schema_names`).

The schema's resources (``$id``), its anchors (``$anchor``, ``$dynamicAnchor``) and the ``file:``
documents it names, read as the validator reads them; a document it could not read (the validator
compiled without it: a ``$ref`` it never follows) leads nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

SAME_PLACE_ONE = ("not", "if", "then", "else")
SAME_PLACE_LIST = ("allOf", "anyOf", "oneOf")
SAME_PLACE_MAP = ("dependentSchemas", "dependencies")  # draft 7's: a list of names there is no schema
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", *SAME_PLACE_MAP)
"""Keywords whose value maps names to subschemas."""
DATA = ("enum", "const", "default", "examples")
"""Keywords whose value is data, never a subschema."""


def retrieved(retrieve: Callable[[str], Any], uri: str) -> Any:
    """The document ``uri`` names, or None when it cannot be read."""
    try:
        return retrieve(uri)
    except (ValueError, OSError, RecursionError):  # the validator compiled without it: a $ref it never follows
        return None


class SchemaReferences:
    """Where a ``$ref`` leads: the schema's resources (``$id``), anchors, and the files it names."""

    def __init__(self, schema: Any, retrieve: Callable[[str], Any]) -> None:
        self.retrieve = retrieve
        self.resources: dict[str, Any] = {}
        self.anchors: dict[tuple[str, str], Any] = {}
        self.dynamic: dict[str, list[Any]] = {}  # a $dynamicAnchor's name: every subschema holding it
        self.bases: dict[int, str] = {}
        self._add(schema, "")

    def _add(self, document: Any, base: str) -> None:
        self.resources.setdefault(base, document)
        pending = [(document, base)]
        while pending:
            node, base = pending.pop()
            if not isinstance(node, dict) or id(node) in self.bases:
                continue
            if isinstance(node.get("$id"), str):
                base = urldefrag(urljoin(base, node["$id"])).url
                self.resources.setdefault(base, node)
            self.bases[id(node)] = base
            for keyword in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(keyword), str):
                    self.anchors.setdefault((base, node[keyword]), node)
            if isinstance(node.get("$dynamicAnchor"), str):
                self.dynamic.setdefault(node["$dynamicAnchor"], []).append(node)
            for keyword, value in node.items():
                if keyword in SCHEMA_MAPS and isinstance(value, dict):
                    pending += [(child, base) for child in value.values()]
                elif isinstance(value, list | dict) and keyword not in DATA:
                    pending += [(child, base) for child in value] if isinstance(value, list) else [(value, base)]

    def resolve(self, node: dict[str, Any], reference: str) -> Any:
        """The subschema ``reference`` (in ``node``) names, or None (a document not read, such as a
        meta-schema the validator holds itself)."""
        uri, fragment = urldefrag(urljoin(self.bases.get(id(node), ""), reference))
        if uri not in self.resources and uri.startswith("file://"):
            self._add(retrieved(self.retrieve, uri), uri)
        document = self.resources.get(uri)
        if document is None or not fragment:
            return document
        if not fragment.startswith("/"):
            return self.anchors.get((uri, unquote(fragment)))
        for part in fragment[1:].split("/"):
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(document, dict) and part in document:
                document = document[part]
            elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
                document = document[int(part)]
            else:
                return None
        return document


__all__ = [
    "DATA",
    "SAME_PLACE_LIST",
    "SAME_PLACE_MAP",
    "SAME_PLACE_ONE",
    "SCHEMA_MAPS",
    "SchemaReferences",
    "retrieved",
]
