"""The configuration's size limits, and :func:`bounded`, their check on free-form data (a policy's settings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError

MIB = 1024 * 1024
# Size limits: generous for any real configuration, small enough that no request can bloat the
# gateway's memory or state file (docs/security.md lists them).
MAX_NAME = 128  # names and ids
MAX_TEXT = 256  # display names
MAX_URL = 2048  # paths and URLs
MAX_UPSTREAMS = 64
MAX_POLICIES = 64  # per list
MAX_APIS = 1000  # per configuration (file and management API together); products too
MAX_SUBSCRIPTIONS = 100_000
MAX_SETTING = 16384  # characters of one string in a policy's settings (a PEM certificate chain fits)
MAX_ITEMS = 1024  # entries of one list or mapping in a policy's settings
MAX_DEPTH = 16  # nesting of a policy's settings


def bounded(value: Any) -> Any:
    """``value`` (plain data), refused when a string, a list or its nesting exceeds the limits above."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        node, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise PydanticCustomError("limit_depth", "nested deeper than {limit} levels", {"limit": MAX_DEPTH})
        if isinstance(node, str) and len(node) > MAX_SETTING:
            raise PydanticCustomError(
                "limit_length",
                "{where} is longer than {limit} characters",
                {"where": where or "value", "limit": MAX_SETTING},
            )
        if isinstance(node, Mapping | list):
            if len(node) > MAX_ITEMS:
                raise PydanticCustomError(
                    "limit_items",
                    "{where} has more than {limit} entries",
                    {"where": where or "value", "limit": MAX_ITEMS},
                )
            items = node.items() if isinstance(node, Mapping) else enumerate(node)
            for key, child in items:
                if isinstance(key, str) and len(key) > MAX_NAME:
                    raise PydanticCustomError(
                        "limit_length", "a key is longer than {limit} characters", {"limit": MAX_NAME}
                    )
                label = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))
                pending.append((child, label, depth + 1))
    return value


__all__ = [
    "MAX_APIS",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_NAME",
    "MAX_POLICIES",
    "MAX_SETTING",
    "MAX_SUBSCRIPTIONS",
    "MAX_TEXT",
    "MAX_UPSTREAMS",
    "MAX_URL",
    "MIB",
    "bounded",
]
