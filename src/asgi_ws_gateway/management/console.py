"""The test console: a plain HTML/JS page served by the management app (no build step).

``GET <mount>/console`` serves the page; it calls the management API (``apis``) relative to its own
URL with the admin token typed in (or given in the URL fragment, which never reaches a server:
``console#token=...&api=echo&connect=1&send=hello``), and connects to the chosen API from the browser.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_STATIC = resources.files(__package__) / "static"
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _file(name: str, media_type: str) -> Route:
    content = (_STATIC / name).read_bytes()

    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=_HEADERS)

    return Route(f"/console/{name}" if name != "console.html" else "/console", serve)


def routes() -> list[Route]:
    return [_file("console.html", "text/html; charset=utf-8"), _file("console.js", "text/javascript; charset=utf-8")]


__all__ = ["routes"]
