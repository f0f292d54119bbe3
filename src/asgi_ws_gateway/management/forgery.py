"""Refuse a management request that a web page could have forged (CSRF) or sent by another name
(DNS rebinding).

An ``auth`` that trusts an ambient credential (a cookie, a client certificate, an SSO proxy in front,
the client's address) admits whatever the admin's browser sends, and a page on any site can make it
send a request that needs no CORS preflight: a form post, an ``<img>``, or ``fetch(url, {mode:
"no-cors", body: new Blob([json])})``, which has no ``Content-Type`` at all. So every request to a
protected route:

* is refused (403) when the browser says it came from elsewhere: ``Sec-Fetch-Site`` ``cross-site``
  or ``same-site``, or an ``Origin`` other than the API's own (its ``Host``, any scheme: a proxy in
  front may end TLS). Scripts send neither header. A read too: a page's ``<img>`` or ``no-cors``
  GETs, each a refused credential, locked the admin's address out;

and every change (any method but GET, HEAD and OPTIONS) must be typed ``application/json`` (415
otherwise), body or not: a page cannot send that type to another origin without a preflight, and the
API answers none. A DELETE without a body is exempt: a page cannot send DELETE to another origin
unpreflighted either. These run before ``auth``, so a forged request never counts against the
lockout of refused credentials.

A page can also make its own name point at the gateway's address (DNS rebinding): then its requests
are same-origin to the browser, ``Origin`` and ``Host`` agree, the page reads the answers, and over
plain HTTP a browser marks nothing (``Sec-Fetch-*`` goes to secure origins only; a same-origin GET has
no ``Origin``). Its ``Host`` is the page's name, though: :class:`HostCheck` answers a request only
when its ``Host`` is an IP address, ``localhost``, or a name the operator allowed
(``management.allowed_hosts``): 421 otherwise, on every route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config.hosts import Host, host_matches, parse_host
from ..config.problems import shorten
from ..forwarded import parse_reported_ip
from ..handshake.host_header import hostname, split_host
from ..redact import printable
from ..wire_numbers import parse_port
from .errors import BadRequest, Forbidden, ManagementError, MisdirectedRequest, UnsupportedMediaType, problem
from .head import has_body

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_not_forged(request: Request) -> None:
    """Raise :class:`Forbidden` or :class:`UnsupportedMediaType` for a request a page could have forged."""
    site = request.headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        raise Forbidden(f"a {site} request cannot use the management API (Sec-Fetch-Site)")
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, request.headers.get("host", "")):
        raise Forbidden("a request from another origin cannot use the management API (Origin)")
    if request.method in SAFE_METHODS:
        return
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


class HostCheck:
    """ASGI middleware: a request is answered only under a ``Host`` the management API knows.

    Known: an IP address, ``localhost`` (and ``*.localhost``, which browsers resolve to loopback), and
    the ``allowed`` patterns (``gw.example.com``, ``*.example.com``, ``*``: any). A request without
    ``Host`` (HTTP/1.0) is answered: no browser sends one.
    """

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed: set[Host] = {parse_host(entry) for entry in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = Headers(scope=scope).getlist("host")
            host = hosts[0] if hosts else None
            if len(hosts) > 1:  # RFC 9112 §3.2, as for a handshake: this read the first, a proxy may the last
                refused: ManagementError | None = BadRequest(
                    f"the request has {len(hosts)} Host headers; exactly one is allowed"
                )
            else:
                refused = None if host is None else self._refusal(host)
            if refused is not None:
                logger.info(
                    "management %s refused: %d Host %s", printable(scope["path"]), refused.status, printable(host or "")
                )
                await problem(refused.status, refused.title, refused.detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, host: str) -> ManagementError | None:
        parts = _host_and_port(host)
        if parts is None:
            return BadRequest("the Host header is not host[:port]")
        name, port = parts
        if name == "localhost" or name.endswith(".localhost") or parse_reported_ip(name) is not None:
            return None
        if host_matches(self.allowed, name, port):
            return None
        return MisdirectedRequest(
            f"this management API does not answer to the name '{shorten(host, 80)}': add it to "
            "management.allowed_hosts if it is yours"
        )


def _host_and_port(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header's host, spelled one way (:func:`~asgi_ws_gateway.handshake.host_header.hostname`:
    lower case, no trailing dot, IPv6 in brackets), and its port; None when it is not ``host[:port]``.

    The host is one a client sends, read by the handshake's own parser
    (:func:`~asgi_ws_gateway.handshake.host_header.split_host`): ``urlsplit`` took ``[::1]evil`` and
    ``[::1]x:80`` for ``[::1]``, ``a,b`` and ``a;b`` for names and ``user@name`` for ``name``. The port
    is RFC 3986's, 0 to 65535 in at most 5 ASCII digits, empty (``gw:``) or with leading zeros, as
    before (:func:`~asgi_ws_gateway.wire_numbers.parse_port`).
    """
    value = value.strip(" \t")
    end = value.find("]") + 1 if value.startswith("[") else len(value.partition(":")[0])
    host, rest = value[:end], value[end:]
    if split_host(host) is None or (rest and rest[0] != ":"):
        return None
    port = parse_port(rest[1:]) if len(rest) > 1 else None
    if len(rest) > 1 and port is None:
        return None
    return hostname(host), port


__all__ = ["SAFE_METHODS", "HostCheck", "check_not_forged"]
