"""Cookies the gateway reads are the gateway's: no upstream's answer sets them on the shared origin.

Every API shares the gateway's origin, and a browser sends a cookie set by one API's answer with
every other API's handshake. A ``validate-jwt`` that reads its token from a cookie
(``token: [{cookie: access_token}]``), a limit keyed by ``{cookie.tenant}``, a ``choose`` on
``{cookie.plan}`` decide on what any upstream of any API could write: one backend's 101 or refusal
with ``Set-Cookie: access_token=<its own token>; Path=/`` signed the browser in to another API as the
backend's account (its messages sent to an account of the backend's choosing), or, beside the
user's own token, had every handshake of that API refused 400 ``token_ambiguous``. A ``Set-Cookie``
naming a cookie any policy of the configuration reads (:func:`read_cookie_names`, folded as policies
fold names) is dropped from every answer (:func:`kept_cookies`), on every connector; others pass (a
backend's affinity cookie). An API's ``response_cookies`` narrows that to the cookies it names
(``[]``: none), for an operator who trusts a backend with no more of the origin than that; it never
widens it: a cookie a policy reads is dropped even when listed, so that whoever may change an API (a
management token holder whose upstream hosts are restricted) cannot hand its backend another API's
credential cookie.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._types import Headers
from ..param_names import fold_cookie_name

_REFERENCE = re.compile(r"\{\s*cookie\.([^{}|]+?)\s*(?:\|[^{}]*)?\}")
"""A template's cookie reference (``{cookie.session}``, ``{cookie.tenant|none}``); ``{{`` is removed first."""


def read_cookie_names(document: object) -> frozenset[str]:
    """The folded names of the cookies a configuration (as plain data) reads: every token place
    ``{cookie: name}``, every condition's ``{ref: cookie.name}`` and every ``{cookie.name}`` a template
    anywhere in it refers to."""
    names: set[str] = set()
    _walk(document, names)
    return frozenset(fold_cookie_name(name) for name in names if name.strip())


def _walk(document: object, names: set[str]) -> None:
    if isinstance(document, dict):
        for key, item in document.items():
            if key == "cookie" and isinstance(item, str):
                names.add(item)
            elif key == "ref" and isinstance(item, str) and item.strip().startswith("cookie."):
                names.add(item.strip().removeprefix("cookie."))  # a choose condition's {ref: cookie.plan}
            else:
                _walk(item, names)
    elif isinstance(document, list):
        for item in document:
            _walk(item, names)
    elif isinstance(document, str) and "cookie." in document:
        names.update(match[1] for match in _REFERENCE.finditer(document.replace("{{", "")))


def set_cookie_name(value: bytes) -> str:
    """The name the browser's ``Cookie`` header will carry for a ``Set-Cookie`` of ``value``, folded.

    RFC 6265bis §5.7: the name is what precedes the first ``=`` of the part before the first ``;``; a
    part without ``=`` is a cookie with no name, and a cookie with no name is sent as its value alone,
    so ``=access_token=X`` (or ``access_token``) reaches the server as ``access_token=X``."""
    pair = value.decode("latin-1").split(";", 1)[0]
    name, equals, rest = pair.partition("=")
    if not equals or not name.strip(" \t"):
        name = (rest if equals else pair).partition("=")[0]
    return fold_cookie_name(name.strip(" \t"))


def kept_cookies(
    headers: Headers, read: frozenset[str], allowed: frozenset[str] | None = None
) -> tuple[Headers, list[str]]:
    """``headers`` (ASGI, lower-case names) without a ``Set-Cookie`` of a cookie in ``read`` or not in
    ``allowed`` (``None``: any); and the folded names dropped. ``headers`` itself when none is."""
    if (allowed is None and not read) or not _any_set_cookie(headers):
        return headers, []
    kept: Headers = []
    dropped: list[str] = []
    for name, value in headers:
        if name == b"set-cookie" and not _may_set(cookie := set_cookie_name(value), read, allowed):
            dropped.append(cookie)
        else:
            kept.append((name, value))
    return (kept, dropped) if dropped else (headers, [])


def drop_reason(cookie: str, read: frozenset[str]) -> str:
    """Why :func:`kept_cookies` dropped ``cookie`` (folded), as ``ws_gateway.cookies.changed`` counts it: a
    policy reads it (dropped whatever ``response_cookies`` lists), or the API's ``response_cookies`` leaves it out."""
    return "read_by_policy" if cookie in read else "not_in_response_cookies"


def _may_set(cookie: str, read: frozenset[str], allowed: frozenset[str] | None) -> bool:
    return cookie not in read and (allowed is None or cookie in allowed)


def _any_set_cookie(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name == b"set-cookie" for name, _ in headers)


__all__ = ["drop_reason", "kept_cookies", "read_cookie_names", "set_cookie_name"]
