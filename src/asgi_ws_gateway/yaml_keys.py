"""YAML that means what it says: no key twice in one mapping.

YAML requires the keys of a mapping to be unique, but PyYAML keeps the last value of a repeated key
without a word: a second ``policies:`` written further down an API replaced the first, and its
``validate-jwt`` with it, while ``check`` said the file was valid. :func:`safe_load` reads as
``yaml.safe_load`` does and refuses that.

Keys are compared as YAML reads them (``on`` and ``true`` are both ``True``, ``1`` and ``0x1`` both
``1``). Keys a merge (``<<: *defaults``) brings in may be overridden by the mapping's own: that is
what merges are for.

Nor does it take a number YAML's two versions read differently: PyYAML reads YAML 1.1, where
``max_message_size: 010`` is 8 (octal) and ``idle_timeout: 1:30`` is 90 (base 60), while YAML 1.2
readers (and JSON) take ``010`` as 10 and ``1:30`` as text. Such a plain scalar is refused by line
and field path (:class:`AmbiguousNumber`); quoted, it is text.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .json_names import shown

_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"
_NUMBERS = frozenset({_INT, "tag:yaml.org,2002:float"})
_BUILT = frozenset({_INT, "tag:yaml.org,2002:timestamp"})
"""Scalars PyYAML builds with a ``ValueError`` when they cannot be: checked here, each by field path."""
_OCTAL_OR_BASE_60 = re.compile(r"[-+]?0[0-9_]+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
"""YAML 1.1's ``010`` (octal 8) and ``1:30`` (base 60: 90), which YAML 1.2 reads as 10 and as text."""


class DuplicateKey(yaml.MarkedYAMLError):
    """A key written twice in one mapping: ``line`` and ``column`` (from 1; also ``problem_mark``, as
    for PyYAML's own errors) where the second starts, ``path`` the field path of its value
    (``apis[0].policies``), ``key`` the key as written, ``first_line`` the line of the first."""

    def __init__(self, path: str, key: ScalarNode, first: ScalarNode) -> None:
        self.line, self.column = key.start_mark.line + 1, key.start_mark.column + 1
        self.path = path
        self.key = key.value
        self.first_line = first.start_mark.line + 1
        spelled = f", written {shown(first.value)}" if first.value != key.value else ""
        super().__init__(
            problem=f"{path}: the key {shown(key.value)} appears twice in one mapping "
            f"(first on line {self.first_line}{spelled})",
            problem_mark=key.start_mark,
        )


class UnreadableValue(yaml.MarkedYAMLError):
    """A plain scalar PyYAML reads as a type it then cannot build: an integer of more than Python's
    4,300 digits, a timestamp that is no date (``2024-13-45``). Before, a ``ValueError`` traceback."""

    def __init__(self, path: str, node: ScalarNode, why: str) -> None:
        self.line, self.column = node.start_mark.line + 1, node.start_mark.column + 1
        self.path = path or "(top level)"
        super().__init__(problem=f"{self.path}: cannot be read: {why}", problem_mark=node.start_mark)


class AmbiguousNumber(yaml.MarkedYAMLError):
    """A plain number YAML 1.1 and 1.2 read differently (``010``, ``1:30``): ``line``, ``column`` (from 1),
    ``path`` its field path, ``value`` as written."""

    def __init__(self, path: str, node: ScalarNode, read_as: Any) -> None:
        self.line, self.column = node.start_mark.line + 1, node.start_mark.column + 1
        self.path = path or "(top level)"
        self.value = node.value
        super().__init__(
            problem=f"{self.path}: {node.value} is {read_as} to this reader (YAML 1.1: octal or base 60) "
            "but not to YAML 1.2 or JSON: write the number in decimal, or quote it if it is text",
            problem_mark=node.start_mark,
        )


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing a key written twice in one mapping.

    Raises:
        DuplicateKey: a key twice in one mapping (the first, in the order of the text).
        AmbiguousNumber: a plain ``010`` or ``1:30`` (if it comes before any repeated key).
        UnreadableValue: an integer or timestamp PyYAML cannot build (the same).
        yaml.YAMLError: not YAML, as ``yaml.safe_load`` raises it.
        RecursionError: nested deeper than PyYAML goes.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _problems(loader, node)
        if problems:
            raise min(problems, key=lambda found: (found.line, found.column))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _problems(loader: yaml.SafeLoader, root: Node) -> list[DuplicateKey | AmbiguousNumber | UnreadableValue]:
    """Every key written twice in a mapping of the document under ``root``, and every ambiguous number.

    Each node is visited once: an alias shares its anchor's node, so a file of aliases of aliases
    (an "alias bomb") is walked in the time it takes to read it."""
    found: list[DuplicateKey | AmbiguousNumber | UnreadableValue] = []
    visited: set[int] = set()
    pending: list[tuple[Node, str]] = [(root, "")]
    while pending:
        node, path = pending.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, ScalarNode):
            if node.tag in _BUILT and (why := _unbuildable(loader, node)):
                found.append(UnreadableValue(path, node, why))
            elif node.style is None and node.tag in _NUMBERS and _OCTAL_OR_BASE_60.fullmatch(node.value):
                found.append(AmbiguousNumber(path, node, loader.construct_object(node)))
        elif isinstance(node, SequenceNode):
            pending += [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            seen: dict[Any, ScalarNode] = {}
            for key, value in node.value:
                if key.tag == _MERGE and isinstance(key, ScalarNode):
                    # merged-in keys may be overridden here; two merge keys are one key twice
                    name: Any = _MERGE
                    pending.append((value, path))
                elif isinstance(key, ScalarNode):
                    if key.tag in _BUILT and (why := _unbuildable(loader, key)):
                        found.append(UnreadableValue(f"{path}.{key.value[:40]}" if path else key.value[:40], key, why))
                        continue
                    name = loader.construct_object(key)
                    pending.append((value, f"{path}.{key.value}" if path else key.value))
                else:
                    continue  # a sequence or mapping as a key: unhashable, which construction refuses
                first = seen.setdefault(name, key)
                if first is not key:
                    found.append(DuplicateKey(f"{path}.{key.value}" if path else key.value, key, first))
    return found


def _unbuildable(loader: yaml.SafeLoader, node: ScalarNode) -> str | None:
    """Why PyYAML cannot build this integer or timestamp, or None."""
    try:
        loader.construct_object(node)
    except ValueError as exc:
        # Python's own text for a long integer quotes nothing but counts; a date's names its field.
        return "an integer too long to read" if node.tag == _INT else str(exc)
    return None


__all__ = ["AmbiguousNumber", "DuplicateKey", "UnreadableValue", "safe_load"]
