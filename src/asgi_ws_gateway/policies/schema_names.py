"""The names a JSON Schema declares at each place of a message, and a message's names that differ
from one only in case.

Go's ``encoding/json`` and ASP.NET Core bind an object's name to a field ignoring case: a schema
that allows ``role: {enum: [user]}`` let ``{"ROLE": "admin"}`` through as an unknown name, and a Go
upstream read ``role = admin``. :class:`CaseVariants` refuses such a name in an object the schema
describes, checked against the names declared for that object's place only: a free-form object
(``meta: {type: object}``) may hold ``Type`` or ``TEXT`` as data (``json_names.check_unique_names``
refuses two spellings side by side anywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

from ..json_names import AmbiguousJson
from .schema_references import SAME_PLACE_LIST, SAME_PLACE_MAP, SAME_PLACE_ONE, SchemaReferences, retrieved

_ONE = ("additionalProperties", "unevaluatedProperties", "items", "additionalItems", "unevaluatedItems", "contains",
        "propertyNames", "not", "if", "then", "else", "contentSchema")  # fmt: skip
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_NAMED = ("properties", "dependentRequired", "dependentSchemas", "dependencies")  # their keys are names
_CONTAINERS = (dict, list)

# Where a subschema applies: at its own place (these), or one step into the message (_ANY_NAME, _ANY_ITEM, ...)
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
_ANY_NAME = ("additionalProperties", "unevaluatedProperties")  # a name its own `properties` lacks
_ANY_ITEM = ("additionalItems", "unevaluatedItems", "contains")
_STEPS = frozenset(("properties", "patternProperties", "items", "prefixItems", *_ANY_NAME, *_ANY_ITEM))
MAX_PLACES = 20_000
"""Places (distinct sets of subschemas) a schema may describe before :class:`CaseVariants` checks
every declared name at every depth instead (a schema whose ``allOf``s combine into very many)."""
_MAX_VISITS = 200_000  # subschema visits building the places may take (~0.5 s), or the same


def declared_names(schema: Any, retrieve: Callable[[str], Any]) -> set[str]:
    """Every name ``schema`` declares, at any depth: ``properties``, ``required``, ``dependentRequired``,
    ``dependentSchemas`` (and draft 7's ``dependencies``), in every subschema (``allOf``, ``items``,
    ``$defs``, ...) and in the files its ``$ref`` names (``retrieve``: a ``file:`` URI's document).
    Values (``const``, ``enum``, ``default``, ``examples``) are data, not read."""
    names: set[str] = set()
    pending: list[tuple[Any, str]] = [(schema, "")]
    read: set[str] = set()
    seen: set[int] = set()  # a YAML alias shares a subschema, or makes one contain itself
    while pending:
        node, base = pending.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        names |= _names_here(node)
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
                if uri.startswith("file://") and uri not in read:
                    read.add(uri)
                    pending.append((retrieved(retrieve, uri), uri))
    return names


def _names_here(node: dict[str, Any]) -> set[str]:
    """The names one subschema declares for the object it applies to."""
    names = set(_strings(node.get("required")))
    for keyword in _NAMED:
        if isinstance(node.get(keyword), dict):
            names.update(name for name in node[keyword] if isinstance(name, str))
    for keyword in ("dependentRequired", "dependencies"):  # a name: the names it requires
        if isinstance(node.get(keyword), dict):
            for required in node[keyword].values():
                names.update(_strings(required))
    return names


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _follow(references: SchemaReferences, node: dict[str, Any], keyword: str) -> list[Any]:
    """The subschemas ``node[keyword]`` may lead to (a ``$dynamicRef``: every same-named
    ``$dynamicAnchor`` too, whichever the dynamic scope picks); none for a document not read."""
    reference = node[keyword]
    found = [references.resolve(node, reference)]
    fragment = reference.partition("#")[2]
    if keyword == "$dynamicRef" and not fragment.startswith("/"):
        found += references.dynamic.get(unquote(fragment), [])
    return found


class _Place:
    """A place of a message and the names declared for the object there; where a step into it leads.

    ``named`` maps a property name to its place (None: free-form there), ``other`` is any other
    name's, ``items`` any item's (an array's items share one place)."""

    __slots__ = ("exact", "folded", "items", "named", "other")

    def __init__(self, names: Iterable[str]) -> None:
        self.exact = frozenset(names)
        self.folded = frozenset(name.casefold() for name in self.exact)
        self.named: dict[str, _Place | None] = {}
        self.other: _Place | None = None
        self.items: _Place | None = None

    def steps(self) -> Iterator[_Place | None]:
        yield from self.named.values()
        yield self.other
        yield self.items


class _TooManyPlaces(Exception):
    """Past :data:`MAX_PLACES` or ``_MAX_VISITS``."""


class _Places:
    """Builds the places ``schema`` describes from its root, each set of subschemas once (a
    recursive schema leads back to a place already built)."""

    def __init__(self, schema: Any, retrieve: Callable[[str], Any]) -> None:
        self.references = SchemaReferences(schema, retrieve)
        self.built: dict[frozenset[int], _Place] = {}
        self.pending: list[tuple[_Place, list[dict[str, Any]]]] = []
        self.visits = 0
        self.read: dict[int, tuple[list[dict[str, Any]], frozenset[str], bool]] = {}  # per subschema
        self.root = self.place([schema])
        while self.pending:
            place, here = self.pending.pop()
            self._step(place, here)

    def place(self, seeds: list[Any]) -> _Place | None:
        here = self._same_place(seeds)
        if not any(self.read[i][2] for i in here):
            return None  # free-form, or a value that is no object or array (`{type: string}`)
        key = frozenset(here)
        found = self.built.get(key)
        if found is None:
            if len(self.built) >= MAX_PLACES:
                raise _TooManyPlaces
            found = self.built[key] = _Place(frozenset().union(*(self.read[i][1] for i in here)))
            self.pending.append((found, list(here.values())))
        return found

    def _same_place(self, seeds: list[Any]) -> dict[int, dict[str, Any]]:
        """``seeds`` and every subschema they apply without stepping into the message."""
        here: dict[int, dict[str, Any]] = {}
        pending = [seed for seed in seeds if isinstance(seed, dict)]  # true, false: no name
        while pending:
            node = pending.pop()
            if id(node) not in here:
                here[id(node)] = node
                self.visits += 1
                if self.visits > _MAX_VISITS:
                    raise _TooManyPlaces
                pending += self._read(node)[0]
        return here

    def _read(self, node: dict[str, Any]) -> tuple[list[dict[str, Any]], frozenset[str], bool]:
        """The subschemas ``node`` applies at its own place, the names it declares, and whether it
        describes an object or an array at all (with names, or with subschemas a step into them)."""
        found = self.read.get(id(node))
        if found is None:
            applies = [node.get(keyword) for keyword in SAME_PLACE_ONE]
            for keyword in SAME_PLACE_LIST:
                applies += node[keyword] if isinstance(node.get(keyword), list) else []
            for keyword in SAME_PLACE_MAP:
                applies += node[keyword].values() if isinstance(node.get(keyword), dict) else []
            for keyword in _REFS:
                applies += _follow(self.references, node, keyword) if isinstance(node.get(keyword), str) else []
            names = frozenset(_names_here(node))
            found = (
                [child for child in applies if isinstance(child, dict)],
                names,
                bool(names or _STEPS & node.keys()),
            )
            self.read[id(node)] = found
        return found

    def _step(self, place: _Place, here: list[dict[str, Any]]) -> None:
        # patternProperties apply to every name here: matching their patterns per message would cost
        # more than the few names they make a case variant of
        any_name = [child for node in here for child in _mapping(node.get("patternProperties")).values()]
        by_name: dict[str, list[Any]] = {}
        for node in here:
            for name, child in _mapping(node.get("properties")).items():
                by_name.setdefault(name, []).append(child)
        lacking = [(_mapping(node.get("properties")), node.get(k)) for node in here for k in _ANY_NAME]
        lacking = [(properties, schema) for properties, schema in lacking if isinstance(schema, dict)]
        for name, children in by_name.items():  # a subschema's own property, else its schema for others
            others = [schema for properties, schema in lacking if name not in properties]
            place.named[name] = self.place(any_name + children + others)
        place.other = self.place(any_name + [node.get(k) for node in here for k in _ANY_NAME])
        items: list[Any] = [node.get(keyword) for node in here for keyword in _ANY_ITEM]
        for node in here:
            items += [*_listed(node.get("prefixItems")), *_listed(node.get("items"))]
        place.items = self.place(items)


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _prune(root: _Place) -> _Place | None:
    """Drop the steps that lead to no declared name (free-form below); None when the whole message is."""
    places: list[_Place] = []
    seen: set[int] = set()
    pending = [root]
    while pending:
        place = pending.pop()
        if id(place) not in seen:
            seen.add(id(place))
            places.append(place)
            pending += [child for child in place.steps() if child is not None]
    leads_to: dict[int, list[_Place]] = {}  # place -> the places stepping into it
    for place in places:
        for child in place.steps():
            if child is not None:
                leads_to.setdefault(id(child), []).append(place)
    live = {id(place) for place in places if place.exact}
    pending = [place for place in places if place.exact]
    while pending:
        for parent in leads_to.get(id(pending.pop()), []):
            if id(parent) not in live:
                live.add(id(parent))
                pending.append(parent)
    for place in places:
        place.other = place.other if id(place.other) in live else None
        place.items = place.items if id(place.items) in live else None
        live_named = {name: child if id(child) in live else None for name, child in place.named.items()}
        place.named = {name: child for name, child in live_named.items() if child is not place.other}
    return root if id(root) in live else None


class CaseVariants:
    """Refuses a message holding, in an object the schema describes, a name that is one declared for
    that object's place in another case (``casefold``, as ``check_unique_names`` compares: it folds
    the long s, U+017F, and the Kelvin sign as Go does).

    Per message, a walk of the objects and arrays on the schema's described places only; per name
    there, a set lookup, and a ``casefold`` for a name not spelled as declared."""

    __slots__ = ("flat", "root")

    def __init__(self, root: _Place) -> None:
        self.root = root
        self.flat = root.exact if not root.named and root.other is None else None
        """The names a schema of one level declares (no walk: the message's own names only), else None."""

    @classmethod
    def for_schema(cls, schema: Any, retrieve: Callable[[str], Any]) -> CaseVariants | None:
        """The check for ``schema`` (``retrieve``: a ``file:`` URI's document), or None when it
        declares no name: nothing to do per message."""
        try:
            root = _prune(_Places(schema, retrieve).root or _Place(()))
        except _TooManyPlaces:  # every declared name, at every depth: refuses more, never less
            root = _Place(declared_names(schema, retrieve))
            root.other = root.items = root
            root = root if root.exact else None
        return cls(root) if root is not None else None

    def check(self, value: Any) -> None:
        """Raise :class:`AmbiguousJson` when an object on a described place of ``value`` holds such a name.

        Raises:
            AmbiguousJson: a name the schema declares there, in another case.
        """
        flat = self.flat
        if flat is not None and isinstance(value, dict):  # one level: no walk
            # (issuperset: a set lookup per name, without the keys view <= makes; no names declared: none to fold)
            if flat and not flat.issuperset(value):
                _names_as_declared(value, self.root)
            return
        root = self.root
        pending: list[tuple[Any, _Place]] = [(value, root)]
        while pending:  # not recursive: a message may nest deeper than Python's stack goes
            node, place = pending.pop()
            if isinstance(node, dict):
                if place.folded and not place.exact.issuperset(node):  # (all spelled as declared: nothing to fold)
                    _names_as_declared(node, place)
                named, other = place.named, place.other
                if not named and other is None:
                    continue
                for name, child in node.items():
                    if isinstance(child, _CONTAINERS):
                        below = named.get(name, other)
                        if below is not None:
                            pending.append((child, below))
            elif isinstance(node, list) and place.items is not None:
                items = place.items
                pending += [(child, items) for child in node if isinstance(child, _CONTAINERS)]


def _names_as_declared(node: dict[str, Any], place: _Place) -> None:
    """Raise :class:`AmbiguousJson` when one of ``node``'s names is one declared at ``place`` in another case."""
    exact, folded = place.exact, place.folded
    for name in node:
        if name not in exact and name.casefold() in folded:
            raise AmbiguousJson("a name is one the schema declares, in another case")


__all__ = ["CaseVariants", "declared_names"]
