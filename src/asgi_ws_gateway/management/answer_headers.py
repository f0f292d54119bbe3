"""Headers every management answer carries: its JSON is never read as a page a browser runs.

The answers hold client-chosen text (a refusal's ``detail``, a connection's ``client`` and ``subject``,
an API's ``display_name``: ``<img onerror=...>``); under an ``auth`` that trusts the network a browser
navigated to ``/_gateway/refusals`` gets them with no token. ``nosniff`` keeps the declared JSON
type, and a policy that loads and runs nothing holds should a browser render it anyway. ``no-store``:
they are the gateway's live state for an admin (client addresses, token subjects, the whole
configuration), which a browser's disk cache kept, and a cache in front of a gateway whose ``auth``
asks no token served to whoever asked next. The console pages set their own policy and caching
(:mod:`.console`), kept as they are.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NOTHING_RUNS = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; sandbox")
_NO_STORE = (b"cache-control", b"no-store")


class AnswerHeaders:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` and, where an answer sets none, a
    Content-Security-Policy under which nothing loads, runs or frames it and ``Cache-Control: no-store``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [header for header in (_NOSNIFF, _NOTHING_RUNS, _NO_STORE) if header[0] not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["AnswerHeaders"]
