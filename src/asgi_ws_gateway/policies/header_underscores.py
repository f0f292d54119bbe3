"""Policy settings that read a request header with an underscore in its name, which
``handshake_limits.headers_with_underscores: drop`` (the default) keeps from every request: the warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import Loc

_HEADER_REFERENCE = re.compile(r"\{\s*header\.([^}\s]*_[^}\s]*)\s*\}")
"""A template's ``{header.name}`` whose name has an underscore."""
WRITES_HEADER = frozenset({"set-header", "remove-header"})
"""Policies whose ``header`` is one they write upstream, not one they read from the client."""


def underscored_header_reads(settings: Any, field: tuple[str | int, ...] = ()) -> list[tuple[Loc, str]]:
    """Where policy ``settings`` read a request header whose name has an underscore (a ``header`` or
    ``headers`` setting, a ``{header.name}`` reference): dropped from requests by default."""
    found: list[tuple[Loc, str]] = []
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            if key in ("header", "headers") and isinstance(value, str | list):
                names = [value] if isinstance(value, str) else value
                for j, name in enumerate(names):
                    if isinstance(name, str) and "_" in name:
                        found.append(((*field, key) if isinstance(value, str) else (*field, key, j), name))
            else:
                found += underscored_header_reads(value, (*field, key))
    elif isinstance(settings, list):
        for j, item in enumerate(settings):
            found += underscored_header_reads(item, (*field, j))
    elif isinstance(settings, str):
        found += [(field, match.group(1)) for match in _HEADER_REFERENCE.finditer(settings)]
    return found


def underscore_warning(name: str) -> str:
    return (f"the request header {name!r} has an underscore in its name: with handshake_limits."
            "headers_with_underscores: drop (the default) no request carries it to the policies; use its "
            "'-' spelling, or set headers_with_underscores: forward")  # fmt: skip


__all__ = ["WRITES_HEADER", "underscore_warning", "underscored_header_reads"]
