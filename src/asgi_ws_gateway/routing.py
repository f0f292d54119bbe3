"""Path templates and the router that maps a request path to the WebSocket API that owns it.

A template is a path whose segments are literals or ``{name}`` parameters, each parameter matching
exactly one non-empty segment: ``/ws/rooms/{room}`` matches ``/ws/rooms/lobby`` with
``{"room": "lobby"}``. Matching is exact (no prefix matching, no trailing-slash folding), so two
templates overlap only if some path matches both, which configuration loading rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TemplateError(ValueError):
    """A path template is malformed."""


class PathTemplate:
    """A parsed path template; ``segments`` holds literals and ``None`` for parameters."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise TemplateError(f"'{pattern}' must start with '/'")
        self.pattern = pattern
        self.params: list[str] = []
        self.segments: list[str | None] = []
        for segment in pattern.split("/")[1:]:
            match = _PARAM.match(segment)
            if match:
                name = match.group(1)
                if name in self.params:
                    raise TemplateError(f"'{pattern}' repeats parameter '{name}'")
                self.params.append(name)
                self.segments.append(None)
            elif "{" in segment or "}" in segment:
                raise TemplateError(f"'{pattern}': a parameter must be a whole segment like {{name}}")
            else:
                self.segments.append(segment)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """Match pre-split path segments; return parameter values (percent-decoded) or None."""
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        names = iter(self.params)
        for part, literal in zip(parts, self.segments, strict=True):
            if literal is None:
                if not part:
                    return None
                values[next(names)] = unquote(part)
            elif part != literal:
                return None
        return values


def overlapping(a: PathTemplate, b: PathTemplate) -> bool:
    """True if some path would match both templates."""
    return len(a.segments) == len(b.segments) and all(
        x is None or y is None or x == y for x, y in zip(a.segments, b.segments, strict=True)
    )


class Router(Generic[T]):
    """Maps paths to targets: exact paths by dictionary lookup, templates in declaration order."""

    def __init__(self, routes: Iterable[tuple[str, T]]) -> None:
        self._exact: dict[str, T] = {}
        self._templates: list[tuple[PathTemplate, T]] = []
        for pattern, target in routes:
            template = PathTemplate(pattern)
            if template.params:
                self._templates.append((template, target))
            else:
                self._exact[pattern] = target

    def resolve(self, path: str) -> tuple[T, dict[str, str]] | None:
        """Return the target owning ``path`` and the template's parameter values, or None."""
        target = self._exact.get(path)
        if target is not None:
            return target, {}
        if self._templates:
            parts = path.split("/")[1:]
            for template, candidate in self._templates:
                values = template.match(parts)
                if values is not None:
                    return candidate, values
        return None


__all__ = ["PathTemplate", "Router", "TemplateError", "overlapping"]
