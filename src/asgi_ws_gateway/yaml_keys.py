"""YAML that means what it says: no key twice in one mapping.

YAML requires the keys of a mapping to be unique, but PyYAML keeps the last value of a repeated key
without a word: a second ``policies:`` written further down an API replaced the first, and its
``validate-jwt`` with it, while ``check`` said the file was valid. :func:`safe_load` reads as
``yaml.safe_load`` does and refuses that.

Keys are compared as YAML reads them (``on`` and ``true`` are both ``True``, ``1`` and ``0x1`` both
``1``). Keys a merge (``<<: *defaults``) brings in may be overridden by the mapping's own: that is
what merges are for.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .json_names import shown

_MERGE = "tag:yaml.org,2002:merge"


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


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing a key written twice in one mapping.

    Raises:
        DuplicateKey: a key twice in one mapping (the first, in the order of the text).
        yaml.YAMLError: not YAML, as ``yaml.safe_load`` raises it.
        RecursionError: nested deeper than PyYAML goes.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicates(loader, node)
        if duplicates:
            raise min(duplicates, key=lambda found: (found.line, found.column))
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _duplicates(loader: yaml.SafeLoader, root: Node) -> list[DuplicateKey]:
    """Every key written twice in a mapping of the document under ``root``.

    Each node is visited once: an alias shares its anchor's node, so a file of aliases of aliases
    (an "alias bomb") is walked in the time it takes to read it."""
    found = []
    visited: set[int] = set()
    pending: list[tuple[Node, str]] = [(root, "")]
    while pending:
        node, path = pending.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, SequenceNode):
            pending += [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            seen: dict[Any, ScalarNode] = {}
            for key, value in node.value:
                if key.tag == _MERGE and isinstance(key, ScalarNode):
                    # merged-in keys may be overridden here; two merge keys are one key twice
                    name: Any = _MERGE
                    pending.append((value, path))
                elif isinstance(key, ScalarNode):
                    name = loader.construct_object(key)
                    pending.append((value, f"{path}.{key.value}" if path else key.value))
                else:
                    continue  # a sequence or mapping as a key: unhashable, which construction refuses
                first = seen.setdefault(name, key)
                if first is not key:
                    found.append(DuplicateKey(f"{path}.{key.value}" if path else key.value, key, first))
    return found


__all__ = ["DuplicateKey", "safe_load"]
