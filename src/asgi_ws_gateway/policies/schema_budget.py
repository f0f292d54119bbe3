"""How much one message location costs a JSON Schema, its ``$ref``s followed: refused past a bound.

A schema's ``$ref``s may share a subschema: ``d0 = {allOf: [{$ref: d1}] * 4}``, ``d1`` the same with
``d2``, 14 levels deep, is a few hundred bytes that compile in milliseconds, and validating ``{}``
walked 4^14 subschemas (4.3 s of the worker's event loop; 4^20 would be days). What multiplies is the
subschemas evaluated at one place of the message: those reached from there without stepping into
the message (``allOf``, ``anyOf``, ``oneOf``, ``not``, ``if``/``then``/``else``, ``dependentSchemas``,
``$ref``), and, a level down, every subschema that steps to the same child (two ``items`` beside each
other, ``properties.a`` with ``additionalProperties``). :func:`schema_cost` walks the message's places
as the schema addresses them, each place's subschemas counted with their multiplicity (each shared
subschema once, times the paths that reach it, as ``loading.alias_problem`` counts YAML aliases).

A ``$ref`` back to a subschema being walked is the validator's to follow, lazily, as deep as the
message goes: a recursive tree (``{properties: {children: {items: {$ref: "#"}}}}``) costs what the
message holds. A place whose subschemas are those of a place above it ends the walk there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .schema_references import SAME_PLACE_LIST, SAME_PLACE_MAP, SAME_PLACE_ONE, SchemaReferences

MAX_SUBSCHEMAS_AT_ONE_PLACE = 10_000
"""Subschemas a message's one place (a value, an item, a name) may be checked against, references
followed. jsonschema-rs takes ~16 ns per subschema: 10,000 is ~0.2 ms for a place."""
MAX_PATTERNS_AT_ONE_PLACE = 16
"""Regular expressions (``pattern``, ``patternProperties``' names) matched at one place of a message.
Each is matched in linear time, at most ~0.6 s per MiB for the worst allowed (``MAX_SCHEMA_PATTERN_BYTES``):
16 on one 1 MiB string is ~10 s at most; 1,000 (an ``allOf`` of patterns) was ~600 s."""
_MAX_STEPS = 200_000  # subschema visits the measure may take (~0.7 s; a real schema takes thousands)

_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
_ANY_NAME = ("additionalProperties", "unevaluatedProperties")
_ANY_ITEM = ("additionalItems", "unevaluatedItems", "contains")
_DECLARED = ("$defs", "definitions")  # evaluated only where referenced

Label = tuple[str, Any]  # ("p", name) a property, ("i", index) an item, ("n", None) a property name
_ANY = None  # the label's second part for "any name" / "any item"


class SchemaTooCostly(ValueError):
    """The schema makes one place of a message cost more than the bounds allow (the message says which)."""


@dataclass
class SchemaCost:
    """The most subschemas and regular expressions one place of a message meets."""

    subschemas: int = 0
    patterns: int = 0


def schema_cost(schema: Any, retrieve: Callable[[str], Any]) -> SchemaCost:
    """The most ``schema`` evaluates at one place of any message, its ``$ref``s followed
    (``retrieve``: a ``file:`` URI's document).

    Raises:
        SchemaTooCostly: past :data:`MAX_SUBSCHEMAS_AT_ONE_PLACE` or :data:`MAX_PATTERNS_AT_ONE_PLACE`.
    """
    walk = _Walk(SchemaReferences(schema, retrieve))
    try:
        walk.place({id(schema): (schema, 1)}, ())
    except RecursionError:  # a place per level of the message the schema addresses: hundreds deep
        raise SchemaTooCostly("addresses places of a message nested too deep to measure") from None
    return walk.worst


Place = dict[int, tuple[Any, int]]  # id -> (subschema, how many paths reach it)


class _Walk:
    def __init__(self, references: SchemaReferences) -> None:
        self.references = references
        self.worst = SchemaCost()
        self.steps = 0
        self.done: set[tuple[tuple[int, int], ...]] = set()

    def place(self, seeds: Place, above: tuple[frozenset[int], ...]) -> None:
        """Measure the place whose subschemas start with ``seeds``, then the places below it."""
        key = tuple(sorted((i, n) for i, (_, n) in seeds.items()))
        if key in self.done:
            return
        self.done.add(key)
        here = self._same_place(seeds)
        subschemas = sum(n for _, n in here.values())
        patterns = sum(n * _patterns(node) for node, n in here.values())
        self.worst.subschemas = max(self.worst.subschemas, subschemas)
        self.worst.patterns = max(self.worst.patterns, patterns)
        if subschemas > MAX_SUBSCHEMAS_AT_ONE_PLACE:
            raise SchemaTooCostly(
                f"one place of a message would be checked against more than {MAX_SUBSCHEMAS_AT_ONE_PLACE:,} "
                "subschemas once the $refs are followed (a $ref shared by allOf/anyOf/oneOf at each level "
                "multiplies them); refer to each shared definition once per level"
            )
        if patterns > MAX_PATTERNS_AT_ONE_PLACE:
            raise SchemaTooCostly(
                f"one place of a message would be matched against {patterns:,} regular expressions (pattern, "
                f"patternProperties) once the $refs are followed, more than {MAX_PATTERNS_AT_ONE_PLACE}"
            )
        signature = frozenset(here)
        if signature in above:
            return  # recursion: the validator follows it as deep as the message goes, no wider
        for child in _children(here):
            self.place(child, (*above, signature))

    def _same_place(self, seeds: Place) -> Place:
        """``seeds`` and every subschema they reach without stepping into the message, each with the
        number of paths reaching it (a path around a cycle is the validator's, counted once)."""
        order: list[int] = []  # reverse post-order: a subschema after every one that reaches it
        nodes: dict[int, Any] = {}
        edges: dict[int, list[int]] = {}
        state: dict[int, bool] = {}  # False: being walked; True: done
        for start, _ in seeds.values():
            stack: list[tuple[Any, Iterator[Any] | None]] = [(start, None)]
            while stack:
                node, children = stack[-1]
                if children is None:
                    if id(node) in state:
                        stack.pop()
                        continue
                    state[id(node)], nodes[id(node)] = False, node
                    found = list(self._same_place_children(node))
                    edges[id(node)] = [id(c) for c in found if state.get(id(c)) is not False]  # cut cycles
                    stack[-1] = (node, iter(found))
                    continue
                child = next(children, None)
                if child is None:
                    state[id(node)] = True
                    order.append(id(node))
                    stack.pop()
                elif id(child) not in state:
                    stack.append((child, None))
        counts = {i: n for i, (_, n) in seeds.items()}
        for i in reversed(order):
            n = counts.get(i, 0)
            for child in edges[i]:
                counts[child] = min(counts.get(child, 0) + n, MAX_SUBSCHEMAS_AT_ONE_PLACE + 1)
        self.steps += len(order)
        if self.steps > _MAX_STEPS:
            raise SchemaTooCostly(
                f"too many subschemas to measure what a message costs (more than {_MAX_STEPS:,} visits)"
            )
        return {i: (nodes[i], counts[i]) for i in order if counts.get(i)}

    def _same_place_children(self, node: Any) -> Iterator[Any]:
        if not isinstance(node, dict):
            return
        for keyword in SAME_PLACE_ONE:
            if isinstance(node.get(keyword), dict):
                yield node[keyword]
        for keyword in SAME_PLACE_LIST:
            if isinstance(node.get(keyword), list):
                yield from (child for child in node[keyword] if isinstance(child, dict))
        for keyword in SAME_PLACE_MAP:
            if isinstance(node.get(keyword), dict):
                yield from (child for child in node[keyword].values() if isinstance(child, dict))
        for keyword in _REFS:
            if isinstance(node.get(keyword), str):
                target = self.references.resolve(node, node[keyword])
                if isinstance(target, dict):
                    yield target


def _patterns(node: Any) -> int:
    if not isinstance(node, dict):
        return 0
    named = node.get("patternProperties")
    return isinstance(node.get("pattern"), str) + (len(named) if isinstance(named, dict) else 0)


def _children(here: Place) -> Iterator[Place]:
    """The places one step into the message, each with the subschemas that step there: a named
    property's with those of any name (``additionalProperties``, ``patternProperties``), an item's
    at an index with those of any item; then any other name, any other item, a property's name."""
    named: dict[Label, Place] = {}
    for node, n in here.values():
        if isinstance(node, dict):
            for label, child in _steps(node):
                if isinstance(child, dict):
                    _add(named.setdefault(label, {}), child, n)
    for (kind, where), place in named.items():
        if where is not _ANY:
            merged = dict(place)
            for node, n in named.get((kind, _ANY), {}).values():
                _add(merged, node, n)
            yield merged
    yield from (place for (_, where), place in named.items() if where is _ANY)


def _add(place: Place, node: Any, n: int) -> None:
    count = place[id(node)][1] + n if id(node) in place else n
    place[id(node)] = (node, min(count, MAX_SUBSCHEMAS_AT_ONE_PLACE + 1))


def _steps(node: dict[str, Any]) -> Iterator[tuple[Label, Any]]:
    """The subschemas ``node`` applies one step into the message, each with where it applies."""
    if isinstance(node.get("properties"), dict):
        yield from ((("p", name), child) for name, child in node["properties"].items())
    if isinstance(node.get("patternProperties"), dict):
        yield from ((("p", _ANY), child) for child in node["patternProperties"].values())
    for keyword in _ANY_NAME:
        yield ("p", _ANY), node.get(keyword)
    yield ("n", _ANY), node.get("propertyNames")
    items = node.get("items")
    if isinstance(items, list):  # draft 4-2019-09: an item per index
        yield from ((("i", k), child) for k, child in enumerate(items))
    else:
        yield ("i", _ANY), items
    if isinstance(node.get("prefixItems"), list):
        yield from ((("i", k), child) for k, child in enumerate(node["prefixItems"]))
    for keyword in _ANY_ITEM:
        yield ("i", _ANY), node.get(keyword)


__all__ = ["MAX_PATTERNS_AT_ONE_PLACE", "MAX_SUBSCHEMAS_AT_ONE_PLACE", "SchemaCost", "SchemaTooCostly", "schema_cost"]
