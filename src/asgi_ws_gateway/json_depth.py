"""How deep a JSON value nests, counted without recursion.

Parsers accept documents nested far deeper than the code that walks them afterwards: Python's
``json`` some hundreds of levels, orjson 1,024, while orjson writes at most 254 and jsonschema-rs
describes an error at most ~255 levels deep, and a recursive walk stops at the interpreter's
recursion limit. What a client or a token sends is checked here before such a walk fails on it.
"""

from __future__ import annotations

from collections.abc import Iterable


def nests_deeper(value: object, limit: int) -> bool:
    """Whether ``value``'s dicts and lists nest more than ``limit`` levels (a dict or list is one)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


__all__ = ["nests_deeper"]
