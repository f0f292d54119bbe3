"""Warnings for schema keywords that are valid but cost each message a lot of the event loop.

A fractional ``multipleOf`` (``0.01``) is jsonschema-rs's slowest keyword: 1.5-4 µs a number the client
sends, 15-20 µs for a number near ``1e308``, 27-53 µs against a divisor as small as ``1e-300`` (an
integer divisor costs nothing measurable). A 1 MiB message of ``1e308`` repeated held the loop ~3 s.
The gateway keeps jsonschema-rs's check (its verdicts follow neither decimal nor binary arithmetic, so
no check of the gateway's could give the same ones; docs/security.md), and warns where no ``maximum``
and ``minimum`` beside it make such numbers fail at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_VALUES = frozenset({"const", "default", "enum", "examples"})
"""Keywords whose value is data, not a schema: a ``multipleOf`` name in there is nobody's keyword."""

_UPPER = ("maximum", "exclusiveMaximum")
_LOWER = ("minimum", "exclusiveMinimum")


def unbounded_fractional_multiples(schema: Any) -> Iterator[tuple[str | int, ...]]:
    """The paths (within ``schema``) of each fractional ``multipleOf`` without both a maximum and a
    minimum beside it. Iterative: a schema may nest deeply."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            divisor = node.get("multipleOf")
            if (
                type(divisor) is float
                and not divisor.is_integer()
                and not (any(k in node for k in _UPPER) and any(k in node for k in _LOWER))
            ):
                yield (*path, "multipleOf")
            stack.extend((child, (*path, key)) for key, child in node.items() if key not in _VALUES)
        elif isinstance(node, list):
            stack.extend((child, (*path, index)) for index, child in enumerate(node))


FRACTIONAL_MULTIPLE = (
    "a multipleOf that is not an integer costs each number a client sends 1.5-20 microseconds to check "
    "(numbers near 1e308 the most): a 1 MiB message of them holds the event loop for seconds; a maximum and a "
    "minimum beside it make such numbers fail at once (or use integer units: cents, not 0.01)"
)

__all__ = ["FRACTIONAL_MULTIPLE", "unbounded_fractional_multiples"]
