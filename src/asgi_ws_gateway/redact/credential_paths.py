"""Path segments that hold a credential because the configuration says so: an API path's parameter
named as one (``/ws/{api_key}``, Binance's ``/ws/{listenKey}``), or an upstream URL's segment that a
template fills with a credential (``/feed/{token}``, ``/v1/{header.x-api-key}``).

Such a value has no shape the other patterns know (an opaque key is not a JWT, nor ``token=...``):
only the template tells. :func:`credential_path_templates` finds these templates in a configuration,
and :class:`CredentialPaths` redacts, in any text, each segment of a path that one of them fills with
a credential. A path matches a template as routing does, segment for segment to its end, from its
start (``/ws/k``, ``ws://host/ws/k``) or, for a template whose first segment is a literal, from any
of its first segments (the path under a ``root_path``); a segment that holds a credential and more
(``key-{token}``) is redacted whole. When no template matches a path whole, a credential that ends
one after a literal segment runs to the path's end (logs write a path decoded: a key's ``%2F`` splits
it). Literal segments match in any letter case (``/FEED/k1`` is refused as the ``/feed/{listenKey}``
API's and logged), and a quote or angle bracket inside a path (``/feed/"k1``, a value the client
chose) does not end it: only one that a blank, the text's end or punctuation follows does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from .credential_names import REDACTED, SENSITIVE_HEADERS, is_credential_name, is_credential_parameter

ANY = "\x00any"
"""A segment a template fills with a value that is no credential."""
SECRET = "\x00secret"
"""A segment a template fills (at least in part) with a credential."""

Segments = tuple[str, ...]
"""A template's path segments: literals (decoded), ``ANY`` and ``SECRET``."""

MAX_ROOT_DEPTH = 8
"""Segments before a template's first literal that a path may have (a ``root_path``'s): more are not
tried, so that each path costs at most this many walks of the templates."""

_MAX_MARKS = 32

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_URL_START = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
# A path in text: where a line, a quoted field or a value starts, optionally with its URL's scheme and
# authority; it runs to the query, the fragment, a blank, or a quote or angle bracket that ends it (a
# blank, the end or punctuation after it: '/a/b', "/a/b" 101, <"/a/b">): one inside (/feed/"k1, a
# client's segment, JSON's \") is the path's, or the rest of the segment was left in clear.
# Possessive: each run read once.
_PATH_IN_TEXT = re.compile(
    r"""(?:^|(?<=[\s"'(\[=<,]))(?:[A-Za-z][A-Za-z0-9+.-]*+://[^/\s?#"'<>]*+)?"""
    r"""(/(?:[^\s?#"'<>]++|["'<>](?![\s"'<>,;:)\]}]|\Z))*+)"""
)


def credential_path_templates(document: object, headers: Iterable[str] = ()) -> set[Segments]:
    """The paths in a configuration (as plain data) that carry a credential in a segment: every string
    that is a path (``/...``) or a URL with a template reference in its path. A reference is a
    credential's as :func:`is_credential_reference` reads it, ``headers`` adding the configuration's
    token headers."""
    sensitive = SENSITIVE_HEADERS | {header.lower() for header in headers}
    found: set[Segments] = set()
    for text in _strings(document):
        if "{" in text and (segments := _template_segments(text, sensitive)) is not None:
            found.add(segments)
    return found


def is_credential_reference(reference: str, headers: frozenset[str] | set[str] = SENSITIVE_HEADERS) -> bool:
    """Whether a path template's reference fills in a credential: a bare ``{name}`` (a path parameter)
    or ``path.name``/``jwt.name``/``cookie.name``/``var.name`` named as one, ``query.name`` a
    credential parameter, ``header.name`` a credential header."""
    namespace, dot, key = reference.partition("|")[0].strip().partition(".")
    if not dot:
        return is_credential_name(namespace)
    if namespace == "header":
        return key.lower() in headers or is_credential_name(key)
    if namespace == "query":
        return is_credential_parameter(key)
    return is_credential_name(key)


def _strings(document: object) -> Iterator[str]:
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _template_segments(text: str, headers: frozenset[str] | set[str]) -> Segments | None:
    start = _URL_START.match(text)
    path = text[start.end() :] if start else text
    if not path.startswith("/"):
        return None
    path = re.split(r"[?#]", path, maxsplit=1)[0]  # a query's values are all redacted already
    segments: list[str] = []
    secrets = False
    for segment in path.split("/")[1:]:
        references = [m[1] for m in _PLACEHOLDER.finditer(segment) if m[1] is not None]
        if any(is_credential_reference(reference, headers) for reference in references):
            secrets = True
            segments.append(SECRET)
        elif references:
            segments.append(ANY)
        else:
            segments.append(unquote(segment.replace("{{", "{").replace("}}", "}")))
    return tuple(segments) if secrets else None


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    any: _Node | None = None
    secret: _Node | None = None
    ends: bool = False
    """Whether a template ends here: a path that ends here too has the secrets on the way redacted."""


class CredentialPaths:
    """Redacts the credential segments of paths that match one of a set of templates, in any text.

    Matching walks a tree of the templates' segments, each node at most once per starting segment:
    linear in the path's segments for a given set of templates, however many share a prefix.
    """

    def __init__(self, templates: Iterable[Segments]) -> None:
        self._root = _Node()
        for segments in templates:
            node = self._root
            for segment in segments:
                if segment == ANY:
                    node.any = node = node.any or _Node()
                elif segment == SECRET:
                    node.secret = node = node.secret or _Node()
                else:  # any letter case: the gateway refuses /FEED/k1 as /feed/{listenKey}'s, and logs it
                    node = node.literal.setdefault(segment.lower(), _Node())
            node.ends = True
        # What a matching path must hold, unless percent-encoded: "/" and a first literal segment, when
        # every template starts with one (a few: each is a search of every text). Most lines then cost
        # a few substring searches, not a scan for paths.
        roots = self._root.literal
        plain = self._root.any is None and self._root.secret is None and len(roots) <= _MAX_MARKS
        self._marks: tuple[str, ...] | None = tuple(f"/{literal}" for literal in roots) if plain else None

    def redact(self, text: str) -> str:
        """``text`` with each credential segment of a matching path written ``REDACTED``."""
        if "/" not in text:
            return text
        if self._marks is not None and "%" not in text:
            lower = text.lower()
            if not any(mark in lower for mark in self._marks):
                return text
        return _PATH_IN_TEXT.sub(self._redacted_path, text)

    def _redacted_path(self, match: re.Match[str]) -> str:
        whole, path_start = match[0], match.start(1) - match.start()
        if whole.endswith(",") and match.end() < len(match.string):  # "backend %s, subject": punctuation
            return self._redacted_path_text(whole[:-1], path_start) + ","
        return self._redacted_path_text(whole, path_start)

    def _redacted_path_text(self, whole: str, path_start: int) -> str:
        segments = whole[path_start + 1 :].split("/")
        found = _Found()
        starts = 0
        for first in range(len(segments)):
            # From the path's start any template; from a later segment (under a root_path: a few deep)
            # only those that begin with a literal. Bounded: each start costs a template's depth.
            if first == 0:
                self._walk(segments, first, found)
            elif unquote(segments[first]).lower() in self._root.literal:
                self._walk(segments, first, found)
                starts += 1
                if starts == MAX_ROOT_DEPTH:
                    break
        secret = found.whole if found.matched else found.cut
        if not secret:
            return whole
        return whole[: path_start + 1] + "/".join(REDACTED if i in secret and s else s for i, s in enumerate(segments))

    def _walk(self, segments: list[str], first: int, found: _Found) -> None:
        # Iterative: a template may have any number of segments, and this runs inside log filters.
        # Each entry: a node, the next segment, the credential segments on the way, and whether a literal
        # segment was (a template starting with parameters would otherwise take every path as cut).
        stack: list[tuple[_Node, int, tuple[int, ...], bool]] = [(self._root, first, (), False)]
        while stack:
            node, index, taken, literal = stack.pop()
            if index == len(segments):
                if node.ends:  # the whole path, as routing matches it (exactly: no prefix, no trailing "/")
                    found.matched = True
                    found.whole.update(taken)
                continue
            segment = segments[index]
            if (child := node.literal.get((unquote(segment) if "%" in segment else segment).lower())) is not None:
                stack.append((child, index + 1, taken, True))
            if index == first and first > 0:
                continue  # from a later segment, only templates that begin with a literal
            if node.any is not None:  # an empty value too (a missing header's, in a rewrite)
                stack.append((node.any, index + 1, taken, literal))
            if (after := node.secret) is not None:
                held = (*taken, index) if segment else taken
                stack.append((after, index + 1, held, literal))
                if after.ends and literal and index < found.cut_from:
                    # Should no template match whole, a credential ending one may run to the path's end.
                    found.cut_from = index
                    found.cut = {*held, *range(index, len(segments))}


@dataclass
class _Found:
    """What the templates found in one path: the credential segments of those that match it whole, else
    those of a template cut short, its last credential running to the path's end (a decoded ``%2F``)."""

    matched: bool = False
    whole: set[int] = field(default_factory=set)
    cut_from: int = sys.maxsize
    cut: set[int] = field(default_factory=set)


__all__ = ["ANY", "SECRET", "CredentialPaths", "Segments", "credential_path_templates", "is_credential_reference"]
