"""Where an upstream's cookie reaches: the request's host and its API's paths, unless the operator allows more.

A ``Set-Cookie`` an upstream may set (:mod:`.set_cookies`) still chose its own scope, and it passed as
written: ``Domain=.example.com`` had the browser send the cookie to every sibling host under the domain
(another application's, where it fixes a session or passes for a credential); ``Path=/`` (or none: a
browser defaults to the request path's directory, ``/ws`` for ``/ws/chat``) to every other API and page
of the origin; a ``__Host-`` cookie is the origin's by definition (``Path=/``, no ``Domain``), and one
backend set or replaced the origin's own ``__Host-session``. As a reverse proxy that rewrites cookie
scopes does (nginx ``proxy_cookie_domain`` and ``proxy_cookie_path``, Apache
``ProxyPassReverseCookieDomain``), each cookie is narrowed (:func:`scoped_cookies`):

* its ``Domain`` goes (the cookie becomes the request host's alone), unless it names a domain the API's
  ``response_cookie_domains`` lists, or one under it;
* its ``Path`` becomes the API's (:func:`api_cookie_path`), unless the upstream's is within it or listed
  in ``response_cookie_paths``; a ``Path`` with a dot segment, ``%`` or ``\\`` counts as outside;
* a ``__Host-`` cookie is dropped, unless ``/`` is in ``response_cookie_paths``.

The last ``Domain`` and ``Path`` attribute count, as a browser reads them (RFC 6265 §5.3). A browser
ignores an attribute value longer than 1024 octets (RFC 6265bis §5.7, Chromium does): a ``Path`` that
long counts as outside, and a cookie whose path would be (a client's long request path) is dropped, as
the browser's default path, the request path's directory, is wider than it. The path the gateway
writes is percent-encoded past visible ASCII and ``;``: the client's own path (or a ``root_path`` a
mount took from it) ended the attribute at its ``;`` and wrote the next ones (``/x;Path=/;/ws``).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote

from .._types import Headers, Scope
from .set_cookies import set_cookie_name


class CookieScope(NamedTuple):
    """What one answer's cookies may reach: ``path`` (the API's, as the client sees it), and the domains
    and paths the operator allowed beyond it."""

    path: str
    domains: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()


class Narrowed(NamedTuple):
    """A cookie :func:`scoped_cookies` changed: its folded name, what it asked for (``Domain=...``,
    ``Path=...``, ``__Host-``), and why, one of :data:`REASONS` per thing asked (``ws_gateway.cookies.changed``)."""

    name: str
    asked: str
    reasons: tuple[str, ...] = ()


REASONS = ("host_prefix_dropped", "api_path_too_long", "domain_removed", "path_narrowed")
"""Why :func:`scoped_cookies` changed a cookie: a ``__Host-`` cookie dropped, its ``Domain`` removed, its
``Path`` held to the API's."""


def api_cookie_path(template: str) -> str | None:
    """The path an API's cookies are scoped to: its path's leading literal segments (``/ws/chat`` itself,
    ``/ws/rooms`` of ``/ws/rooms/{room}``), as a browser sends them (an API's path is written decoded:
    ``/ws/café`` is ``/ws/caf%C3%A9``; ``/ws/€`` was a 500, not Latin-1, and a ``;`` ended the attribute);
    None when its first segment holds a placeholder (the request's own path is used then: :func:`cookie_scope`)."""
    literal: list[str] = []
    for segment in template.split("/")[1:]:
        if "{" in segment:
            break
        literal.append(segment)
    else:
        return _encoded(template)
    return _encoded("/" + "/".join(literal)) if literal else None


def cookie_scope(scope: Scope, api_path: str | None, domains: frozenset[str], paths: frozenset[str]) -> CookieScope:
    """The :class:`CookieScope` of an answer to ``scope``'s handshake: ``api_path`` (:func:`api_cookie_path`)
    under the application's ``root_path``, or the path the client sent when it is None."""
    if api_path is None:
        raw = scope.get("raw_path")
        sent = raw.decode("latin-1").partition("?")[0] if isinstance(raw, bytes) else None
        path = _written(sent) if sent is not None else _encoded(scope.get("path"))
    else:
        root = scope.get("root_path")
        path = (_encoded(root).rstrip("/") if isinstance(root, str) else "") + api_path
    return CookieScope(path or "/", domains, paths)


def _encoded(path: object) -> str:
    """A decoded path (an API's, ``path``, ``root_path``) as a browser sends it (the URL standard's path
    percent-encode set), and ``;`` encoded (it ends an attribute)."""
    return quote(path, safe="/:@!$&'()*+,=~[]|^") if isinstance(path, str) else "/"


def _written(raw_path: str) -> str:
    """A raw path (latin-1) as it may stand in a ``Path`` attribute: each octet but visible ASCII and ``;``
    percent-encoded (a browser sends ``;`` as it is: the cookie then misses that path, narrower still)."""
    return _NOT_IN_PATH.sub(lambda found: f"%{ord(found[0]):02X}", raw_path)


_NOT_IN_PATH = re.compile(r"[^!-:<-~]")


def scoped_cookies(headers: Headers, scope: CookieScope) -> tuple[Headers, list[Narrowed]]:
    """``headers`` (ASGI, lower-case names) with each ``Set-Cookie`` held to ``scope`` (a ``__Host-`` one
    dropped unless ``/`` is allowed); and the cookies an upstream asked more for. ``headers`` itself when
    no ``Set-Cookie`` changed. A cookie without a ``Path`` gets the API's without being counted: that is
    the usual affinity cookie, not an upstream asking for more."""
    if not any(name == b"set-cookie" for name, _ in headers):
        return headers, []
    out: Headers = []
    narrowed: list[Narrowed] = []
    changed = False
    for name, value in headers:
        if name == b"set-cookie":
            kept, asked, reasons = _narrowed(value, scope)
            if asked:
                narrowed.append(Narrowed(set_cookie_name(value), asked, reasons))
            changed = changed or kept is not value
            if kept is None:
                continue
            value = kept
        out.append((name, value))
    return (out, narrowed) if changed else (headers, [])


def _narrowed(value: bytes, scope: CookieScope) -> tuple[bytes | None, str, tuple[str, ...]]:
    """``value`` held to ``scope`` (itself when it was; None: dropped), what it asked for beyond it, and why
    (:data:`REASONS`)."""
    pair, *attributes = value.decode("latin-1").split(";")
    kept: list[str] = []
    domain: str | None = None
    path: str | None = None
    for attribute in attributes:
        key, _, setting = attribute.partition("=")
        key = key.strip(" \t").lower()
        if key == "domain":
            domain = setting.strip(" \t")
        elif key == "path":
            path = setting.strip(" \t")
        else:
            kept.append(attribute)
    if set_cookie_name(value).startswith("__host-") and "/" not in scope.paths:
        return None, "__Host-", ("host_prefix_dropped",)
    asked: list[str] = []
    reasons: list[str] = []
    same = _last_only(attributes)
    if domain is not None and not _allowed_domain(_domain_key(domain), scope.domains):
        if domain.strip("."):  # an empty Domain is ignored by a browser: removed, not reported
            asked.append(f"Domain={domain}")
            reasons.append("domain_removed")
        domain, same = None, False
    wanted = path if path is not None and path.startswith("/") else None  # else the browser's default
    if wanted is not None and not _within(wanted, scope):
        asked.append(f"Path={wanted}")
        reasons.append("path_narrowed")
        wanted = None
    if wanted is None and len(scope.path) > _MAX_ATTRIBUTE:
        # the browser would ignore the API's path: its default is wider
        return None, f"a path of {len(scope.path)} octets", ("api_path_too_long",)
    if same and wanted is not None and not asked:
        return value, "", ()
    written = [pair.rstrip(" \t"), *(attribute.rstrip(" \t") for attribute in kept)]
    if domain is not None:
        written.append(f" Domain={domain}")
    written.append(f" Path={wanted if wanted is not None else scope.path}")
    return ";".join(written).encode("latin-1"), ", ".join(asked), tuple(reasons)


def _domain_key(domain: str) -> str:
    """A ``Domain`` attribute as a browser reads it: without a leading dot, lower case."""
    return domain.removeprefix(".").lower()


def _allowed_domain(domain: str, allowed: frozenset[str]) -> bool:
    """Whether ``domain`` is one of ``allowed`` or under one (``eu.example.com`` reaches fewer hosts than
    ``example.com``)."""
    return domain in allowed or any(domain.endswith("." + parent) for parent in allowed)


def _within(path: str, scope: CookieScope) -> bool:
    """Whether a cookie's ``path`` reaches only ``scope.path`` and below it (RFC 6265 §5.1.4's path-match
    read the other way), or is one the operator allowed."""
    if len(path) > _MAX_ATTRIBUTE:
        return False  # ignored by a browser, which then uses the request path's directory
    if path in scope.paths:
        return True
    if _UNCLEAR.search(path):  # a browser may read it otherwise than as written
        return False
    base = scope.path.rstrip("/")
    return path == scope.path or path.startswith(base + "/")


_MAX_ATTRIBUTE = 1024
"""The longest attribute value (octets) a browser reads; a longer one is ignored (RFC 6265bis §5.7)."""
_UNCLEAR = re.compile(r"%|\\|(?:^|/)\.\.?(?:/|$)")
"""A cookie path that a browser, or a server behind it, may read as another path: percent-encoded, with
a backslash, or with a dot segment (``/ws/chat/../bank``)."""


def _last_only(attributes: list[str]) -> bool:
    """Whether ``attributes`` name ``Domain`` and ``Path`` once each at most (rewritten otherwise: the
    last counts, and a reader that takes the first would read another scope)."""
    keys = [attribute.partition("=")[0].strip(" \t").lower() for attribute in attributes]
    return keys.count("domain") <= 1 and keys.count("path") <= 1


__all__ = ["REASONS", "CookieScope", "Narrowed", "api_cookie_path", "cookie_scope", "scoped_cookies"]
