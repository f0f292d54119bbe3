"""Path templates and the router that maps a request path to the WebSocket API that owns it.

A template is a path whose segments are literals or ``{name}`` parameters, each parameter matching
exactly one non-empty segment: ``/ws/rooms/{room}`` matches ``/ws/rooms/lobby`` with
``{"room": "lobby"}``. Matching is exact (no prefix matching, no trailing-slash folding), so two
templates overlap only if some path matches both, which configuration loading rejects.

Routing works on the raw (still percent-encoded) path split at its real ``/``: each segment is
decoded exactly once, so ``%2F`` never splits a segment and ``%252e`` stays the text ``%2e``. A
parameter whose decoded value could change the shape of a path it is put into (``.``/``..``, a
``/`` or ``\\``, NUL or another control character, bytes that are not UTF-8) is reported by
:func:`param_problem`; the gateway refuses such a handshake with 400.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import weakref
from collections.abc import Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_to_bytes

from ._types import Scope

T = TypeVar("T")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# Characters no parameter may carry into an upstream path: separators, and C0/C1 controls and DEL
# (NUL and CR/LF among them), which upstreams and logs handle inconsistently.
_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")


class PathTemplateError(ValueError):
    """A path template is malformed."""


class PathTemplate:
    """A parsed path template; ``segments`` holds literals and ``None`` for parameters."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise PathTemplateError(f"'{pattern}' must start with '/'")
        self.pattern = pattern
        self.params: list[str] = []
        self.segments: list[str | None] = []
        for segment in pattern.split("/")[1:]:
            match = _PARAM.match(segment)
            if match:
                name = match.group(1)
                if name in self.params:
                    raise PathTemplateError(f"'{pattern}' repeats parameter '{name}'")
                self.params.append(name)
                self.segments.append(None)
            elif "{" in segment or "}" in segment:
                raise PathTemplateError(f"'{pattern}': a parameter must be a whole segment like {{name}}")
            else:
                self.segments.append(segment)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """Match decoded path segments (see :func:`split_path`); return the parameter values or None."""
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        names = iter(self.params)
        for part, literal in zip(parts, self.segments, strict=True):
            if literal is None:
                if not part:
                    return None
                values[next(names)] = part
            elif part != literal:
                return None
        return values


def decode_segment(raw: bytes) -> str:
    """One raw path segment percent-decoded exactly once; bytes that are not UTF-8 are kept as
    surrogates (``surrogateescape``) so that :func:`param_problem` can refuse them."""
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def split_path(scope_path: str, raw_path: bytes | None) -> list[str]:
    """The request path's segments, split at the ``/`` the client really sent and decoded once.

    ``raw_path`` is the ASGI scope's ``raw_path`` (as received); without it (or when it is not bytes, as
    ASGI has it), ``scope_path`` (already decoded by the server) is split and not decoded again.
    """
    if type(raw_path) is not bytes:  # None, or a server's str: a TypeError below was a 500 and a traceback
        return scope_path.split("/")[1:]
    # find(), not ``in``: bytes.__contains__ tries its argument as an int first, formatting and
    # clearing a TypeError for a bytes one (~2,600 instructions a call, three a handshake).
    if raw_path.find(b"%") == -1 and raw_path.isascii():  # the common case: nothing to decode
        return raw_path.decode("ascii").split("/")[1:]
    return [decode_segment(part) for part in raw_path.split(b"/")[1:]]


def route_target(scope_path: str, raw_path: bytes | None, root_path: str) -> tuple[str, bytes | None]:
    """The ``path`` and ``raw_path`` the application routes on: without the ``root_path`` they start
    with, as Starlette's ``get_route_path`` reads them (uvicorn's ``--root-path`` and a ``Mount`` put
    it before the path). The gateway must own what the application's routes would see: an API at
    ``/ws/chat`` under ``root_path="/api"`` is reached as ``/api/ws/chat``, which the app routes there.

    ``raw_path`` is None when it does not start with ``root_path`` as sent (``/v%31/…`` under
    ``/v1``): the decoded path is then routed alone. A ``path`` without the root path beside a
    ``raw_path`` with it (a mount that took the root off ``path`` alone, as Starlette's did before
    0.33) is read as the raw path less the root path. A ``raw_path`` that is not bytes, or a
    ``root_path`` that is not text (no ASGI server's), is read as absent.
    """
    if type(raw_path) is not bytes:
        raw_path = None
    if not root_path or type(root_path) is not str:
        return scope_path, raw_path
    root = root_path.encode("utf-8", "surrogateescape")
    if not scope_path.startswith(root_path):
        less_root = _less_root(raw_path, root, b"/") if raw_path is not None else None
        return scope_path, raw_path if less_root is None else less_root
    route = scope_path[len(root_path) :]
    if route and route[0] != "/":  # "/apix" is not under "/api"
        return scope_path, raw_path
    return route, _less_root(raw_path, root, b"") if raw_path is not None else None


def _less_root(raw_path: bytes, root: bytes, ends: bytes) -> bytes | None:
    """``raw_path`` less ``root`` when it starts with it as sent, up to a ``/`` (or ``ends``); else None."""
    if raw_path.startswith(root) and raw_path[len(root) : len(root) + 1] in (b"/", ends):
        return raw_path[len(root) :]
    return None


def param_problem(value: str) -> str | None:
    """Why a decoded parameter value cannot go into an upstream path segment, or None if it can."""
    if value in (".", ".."):
        return "is a dot segment"
    if _FORBIDDEN.search(value):
        return "contains a path separator or a control character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8"
    if not value.isascii():
        # An upstream that applies Unicode compatibility folding would read U+FF0E U+FF0E as '..'
        # and U+FF0F as '/'.
        folded = unicodedata.normalize("NFKC", value)
        if folded in (".", "..") or _FORBIDDEN.search(folded):
            return "folds to a dot segment or a separator under Unicode normalization"
    return None


def overlapping(a: PathTemplate, b: PathTemplate) -> bool:
    """True if some path would match both templates."""
    return len(a.segments) == len(b.segments) and all(
        x is None or y is None or x == y for x, y in zip(a.segments, b.segments, strict=True)
    )


class OverlapIndex(Generic[T]):
    """Path templates by their segments (a trie), to find the ones a template overlaps without
    comparing it with every other: what :func:`overlapping` says of each pair, in a few steps per
    segment for paths that share a literal prefix (``/ws/{api}/{room}`` beside 1,000
    ``/ws/chat-1/{room}``), rather than one comparison per template added (500,000 for 1,000 APIs)."""

    def __init__(self) -> None:
        self._roots: dict[int, _Node[T]] = {}  # by segment count: templates of other lengths never overlap

    def add(self, template: PathTemplate, value: T) -> None:
        node = self._roots.setdefault(len(template.segments), _Node())
        for segment in template.segments:
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        node.values.append(value)

    def overlapping(self, template: PathTemplate) -> list[T]:
        """The values of every template added that :func:`overlapping` ``template``, in no set order."""
        root = self._roots.get(len(template.segments))
        nodes = [root] if root is not None else []
        for segment in template.segments:
            if not nodes:
                return []
            following: list[_Node[T]] = []
            for node in nodes:
                if segment is None:  # a parameter meets every segment
                    following.extend(node.children.values())
                    continue
                for key in (segment, None):  # a literal meets itself and a parameter
                    child = node.children.get(key)
                    if child is not None:
                        following.append(child)
            nodes = following
        return [value for node in nodes for value in node.values]


class _Node(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str | None, _Node[T]] = {}  # by literal segment; None: a parameter
        self.values: list[T] = []


class Router(Generic[T]):
    """Maps paths to targets: exact paths by dictionary lookup, templates in declaration order."""

    def __init__(self, routes: Iterable[tuple[str, T]]) -> None:
        self._exact: dict[tuple[str, ...], T] = {}
        self._templates: list[tuple[PathTemplate, T]] = []
        for pattern, target in routes:
            template = PathTemplate(pattern)
            if template.params:
                self._templates.append((template, target))
            else:
                self._exact[tuple(pattern.split("/")[1:])] = target

    def resolve(self, path: str, raw_path: bytes | None = None) -> tuple[T, dict[str, str]] | None:
        """Return the target owning the path and the template's parameter values, or None.

        Args:
            path: the scope's (decoded) ``path``.
            raw_path: the scope's ``raw_path``; when given, routing uses it (see :func:`split_path`).
                Parameter values may then need refusing: check each with :func:`param_problem`.
        """
        parts = split_path(path, raw_path)
        target = self._exact.get(tuple(parts))
        if target is not None:
            return target, {}
        if self._templates:
            for template, candidate in self._templates:
                values = template.match(parts)
                if values is not None:
                    return candidate, values
        return None


Resolved = tuple[tuple[T, dict[str, str]] | None, str | None]
"""The target owning a path and its parameters (None: no target's), and why the path is disguised (None: it is not)."""

_ENCODED_SLASH = "the path is this API's only once its encoded '/' (%2F) is decoded; send it as the API's path"
_CONTROL_IN_PATH = "the path is this API's only without its control characters (such as %0A); send it as the API's path"
_UNTIDY_PATH = (
    "the path is this API's only as routers tidy it (extra '/', dot segments, letter case, a scheme and host,"
    " '#' or '?'); send it as the API's path"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""A control character in a decoded path: a router may read past it (see ``_disguised``)."""
_UNTIDY = re.compile(r"//|/\.|[#?\x00-\x1f\x7f]|/\Z|\A[^/]")
"""What only a path that tidying changes has (case apart): see :func:`_tidy_segments`."""
_SCHEME_AND_HOST = re.compile(r"\A[A-Za-z][A-Za-z0-9+.\-]*:(?://[^/?#]*)?")
"""An absolute-form target's ``scheme:`` and ``//authority``: servers pass ``GET http://h/p`` on as the path."""


def resolve_scope(router: Router[T], scope: Scope) -> Resolved[T]:
    """The target owning a WebSocket ``scope``'s path and its parameters, and, when the path is
    disguised (a target's only as the application reads it, not as the gateway routes), why: the
    gateway refuses such a handshake with 400, neither running it through the API's policies nor
    passing it on. A path the gateway routes is never disguised: the application never sees it."""
    path, raw_path = scope["path"], scope.get("raw_path")
    if type(raw_path) is not bytes:  # ASGI's raw_path is bytes or absent: a server's str is read as absent
        raw_path = None
    # Starlette routes on the path less its root path (uvicorn's --root-path, a Mount): that reading
    # first; the full path still belongs to an API that names it, whatever the app reads.
    route = _root_reading(path, raw_path, scope.get("root_path"))
    if route is not None:
        resolved = router.resolve(*route)
        if resolved is not None:
            return resolved, None
    resolved = router.resolve(path, raw_path)
    if resolved is not None:
        return resolved, None
    if route is not None:
        resolved, disguised = _disguised(router, *route)
        if resolved is not None:
            return resolved, disguised
    return _disguised(router, path, raw_path)


def matched_segments(scope: Scope, pattern: str) -> list[str]:
    """The segments of a WebSocket ``scope``'s path that :func:`resolve_scope` matched to the API at
    ``pattern``: those of the path less its root path when that reading is the API's, else the whole path's.

    What an in-process upstream without a ``path`` of its own is sent: the path the API's policies
    judged. The whole path under ``root_path="/api"`` (``/api/ws/chat``, no root path with it) was
    another path to the app's router than the API's ``/ws/chat``: a catch-all route took it.
    """
    path, raw_path = scope["path"], scope.get("raw_path")
    if type(raw_path) is not bytes:
        raw_path = None
    route = _root_reading(path, raw_path, scope.get("root_path"))
    if route is not None:
        parts = split_path(*route)
        if _template(pattern).match(parts) is not None:
            return parts
    return split_path(path, raw_path)


@functools.lru_cache(maxsize=1024)
def _template(pattern: str) -> PathTemplate:
    return PathTemplate(pattern)


def _root_reading(path: str, raw_path: bytes | None, root_path: str | None) -> tuple[str, bytes | None] | None:
    """The path and raw path less the root path, or None when there is none to remove."""
    if not root_path:
        return None
    route, raw_route = route_target(path, raw_path, root_path)
    if route == path and type(root_path) is str and len(root_path) > 1 and root_path[-1] == "/":
        # Starlette's Mount("/v1") gives a path ending in a newline the root path "/v1/" (its pattern's "$"
        # matches before it): read whole, /v1/ws/chat%0A was no API's and went to the app unrefused.
        route, raw_route = route_target(path, raw_path, root_path[:-1])
    return (route, raw_route) if route != path or raw_route != raw_path else None


def _disguised(router: Router[T], path: str, raw_path: bytes | None) -> Resolved[T]:
    """The target a path no target owns reaches as other routers read it, and why it is refused."""
    if raw_path is not None:
        # The application routes on the decoded path: /ws%2Fchat is /ws/chat to it, a target's
        # path the gateway does not route there (%2F splits no segment). Refused, not passed on.
        resolved = router.resolve(path)
        if resolved is not None:
            return resolved, _ENCODED_SLASH
    if _CONTROL.search(path):
        # Routers read past control characters: Starlette's and FastAPI's route patterns end in
        # ``$``, which matches before a final newline, so /ws/admin%0A is their /ws/admin route.
        resolved = router.resolve(_CONTROL.sub("", path))
        if resolved is not None:
            return resolved, _CONTROL_IN_PATH
    tidy = _tidy_router(router)
    if not tidy.untidy_targets and _UNTIDY.search(path) is None and path.lower() == path:
        return None, None  # tidying changes neither this path nor any target's: the common case
    resolved = tidy.router.resolve(_tidy_path(path))
    return (resolved, _UNTIDY_PATH) if resolved is not None else (None, None)


def _tidy_segments(path: str) -> list[str]:
    """A decoded path's segments as the most forgiving reading of them by some router: an absolute
    form's scheme and host dropped, control characters too, everything from a ``#`` or ``?`` on
    (read as a URL: ``%23``, ``%3F`` decoded), dot segments resolved, empty segments dropped.

    Litestar strips leading and trailing ``/`` and collapses runs of them, Channels' ``URLRouter``
    strips the leading ones (so ``//ws/chat/`` is its ``ws/chat/``), werkzeug (Quart) matches
    ``//ws/chat`` as ``/ws/chat``, BlackSheep folds case and a trailing ``/``, a router that re-reads
    the path as a URL (``urlsplit``) ends it at a ``#`` or ``?``; a Channels ``re_path`` without ``^``
    found its route inside ``http://other/ws/chat``.
    """
    if not path.startswith("/"):
        path = _SCHEME_AND_HOST.sub("", path, count=1)
    path = _CONTROL.sub("", path).partition("#")[0].partition("?")[0]
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return segments


def _tidy_path(path: str) -> str:
    return "/" + "/".join(_tidy_segments(path)).lower()


def _tidy_pattern(pattern: str) -> str:
    """A target's path template tidied as :func:`_tidy_path` tidies a path; parameters kept as named."""
    segments = _tidy_segments(pattern)
    return "/" + "/".join(segment if _PARAM.match(segment) else segment.lower() for segment in segments)


class _TidyRouter(Generic[T]):
    """A router's targets at their tidied paths: where a tidied path leads (see ``_disguised``)."""

    def __init__(self, router: Router[T]) -> None:
        patterns = [("/" + "/".join(key), target) for key, target in router._exact.items()]
        patterns += [(template.pattern, target) for template, target in router._templates]
        tidied = [(_tidy_pattern(pattern), target) for pattern, target in patterns]
        self.router = Router(tidied)
        # A target at '/ws/chat/' or '/WS/chat' is reached by a tidy path ('/ws/chat'): every path
        # that no target owns is then tidied; otherwise only a path that tidying changes.
        self.untidy_targets = any(tidy != pattern for (tidy, _), (pattern, _) in zip(tidied, patterns, strict=True))


_TIDY_ROUTERS: weakref.WeakKeyDictionary[Router[Any], _TidyRouter[Any]] = weakref.WeakKeyDictionary()
"""Built once per router (a reload makes a new one), on its first path that no target owns."""


def _tidy_router(router: Router[T]) -> _TidyRouter[T]:
    tidy = _TIDY_ROUTERS.get(router)
    if tidy is None:
        tidy = _TIDY_ROUTERS[router] = _TidyRouter(router)
    return tidy


__all__ = [
    "OverlapIndex",
    "PathTemplate",
    "PathTemplateError",
    "Router",
    "decode_segment",
    "matched_segments",
    "overlapping",
    "param_problem",
    "resolve_scope",
    "route_target",
    "split_path",
]
