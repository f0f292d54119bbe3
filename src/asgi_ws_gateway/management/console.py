"""The test console: a plain HTML/JS page served by the management app (no build step).

``GET <mount>/console`` serves the page; it calls the management API (``apis``) relative to its own
URL with the admin token typed in (or given in the URL fragment, which never reaches a server:
``console#token=...&api=echo&connect=1&send=hello``), and connects to the chosen API from the browser.

``GET <mount>/console/live`` is the live page: charts of the gateway's counters (``metrics/series``),
the open connections with send and kick, and the recent refusals (``console/live#token=...&poll=2``).
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_STATIC = resources.files(__package__) / "static"
_HEADERS = {
    "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    # The pages hold the admin token: no other site may frame them (clickjacking; the gateway's own
    # origin may), and they run only their own script (styles inline); the test console may connect
    # to any WebSocket URL.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "SAMEORIGIN",
}  # fmt: skip


def _file(name: str, media_type: str, path: str | None = None) -> Route:
    content = (_STATIC / name).read_bytes()

    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=_HEADERS)

    return Route(path or f"/console/{name}", serve)


def routes() -> list[Route]:
    html, js = "text/html; charset=utf-8", "text/javascript; charset=utf-8"
    return [
        _file("console.html", html, "/console"),
        _file("console.js", js),
        _file("live.html", html, "/console/live"),
        _file("live.js", js),
    ]


__all__ = ["routes"]
