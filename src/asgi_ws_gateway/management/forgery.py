"""Refuse a state-changing management request that a web page could have forged (CSRF).

An ``auth`` that trusts an ambient credential (a cookie, a client certificate, an SSO proxy in front)
admits whatever the admin's browser sends, and a page on any site can make it send a request that
needs no CORS preflight: a form post, or ``fetch(url, {mode: "no-cors", body: new Blob([json])})``,
which has no ``Content-Type`` at all. So every change (any method but GET, HEAD and OPTIONS):

* must be typed ``application/json`` (415 otherwise), body or not: a page cannot send that type to
  another origin without a preflight, and the API answers none. A DELETE without a body is exempt:
  a page cannot send DELETE to another origin unpreflighted either;
* is refused (403) when the browser says it came from elsewhere: ``Sec-Fetch-Site`` ``cross-site``
  or ``same-site``, or an ``Origin`` other than the API's own (its ``Host``, any scheme: a proxy in
  front may end TLS). Scripts send neither header.

It runs before ``auth``, so a forged request never counts against the lockout of refused credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from ..config import shorten
from .errors import Forbidden, UnsupportedMediaType
from .head import has_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_not_forged(request: Request) -> None:
    """Raise :class:`Forbidden` or :class:`UnsupportedMediaType` for a change a page could have forged."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        raise Forbidden(f"a {site} request cannot change the management API (Sec-Fetch-Site)")
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, request.headers.get("host", "")):
        raise Forbidden("a request from another origin cannot change the management API (Origin)")
    if request.method != "DELETE" or has_body(request):
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            shown = f"typed {shorten(media_type, 40)}" if media_type else "untyped"
            raise UnsupportedMediaType(
                f"a {request.method} request {shown}: send Content-Type: application/json (with or without a body)"
            )


def _same_origin(origin: str, host: str) -> bool:
    """``origin`` (``https://gw.example:8443``) names the host and port of ``host`` (the Host header)."""
    try:
        given = urlsplit(origin)
        port = given.port or _DEFAULT_PORTS.get(given.scheme)
        own = urlsplit(f"//{host}")
        own_port = own.port or _DEFAULT_PORTS.get(given.scheme)
    except ValueError:  # a port that is not a number, a malformed IPv6 literal
        return False
    if given.scheme not in _DEFAULT_PORTS or not given.hostname or given.path or own.path:
        return False  # "null" (a sandboxed frame, a file), another scheme
    return (given.hostname, port) == (own.hostname, own_port)


__all__ = ["SAFE_METHODS", "check_not_forged"]
