"""An ASGI application in this process as an upstream: the same semantics, no network hop.

The connector: the app's scope made from the upstream request as a server would give it, the handshake
within ``connect_timeout``. The connection and the rules it keeps are ``inprocess_connection``'s; what
the app may send is checked by ``inprocess_messages``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from .._types import ASGIApp, Scope
from ..config.apis import ApiConfig, UpstreamConfig
from ..errors import UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from .base import UpstreamConnection, UpstreamRequest
from .inprocess_connection import InProcessConnection
from .inprocess_lifespan import AppLifespans
from .response_head import MAX_HEAD


class InProcessConnector:
    """Runs an ASGI app per connection as the upstream.

    Args:
        max_head: bytes of head the app's accept or refusal may carry, as a network upstream's answer
            (:func:`~asgi_ws_gateway.upstream.head_limits.head_limit`).
        lifespans: the gateway's in-process apps' lifespans: the state the app's start-up left goes
            into each of its connections' scope (default: none, the server's state only).
    """

    def __init__(
        self, api: ApiConfig, upstream: UpstreamConfig, *, max_head: int = MAX_HEAD,
        lifespans: AppLifespans | None = None,
    ) -> None:  # fmt: skip
        self.api = api
        self._max_head = max_head
        self._lifespans = lifespans
        self.app: ASGIApp = upstream.app
        self.label = upstream.label

    async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
        own = self._lifespans.state_of(self.app) if self._lifespans is not None else None
        connection = InProcessConnection(self.app, _app_scope(request, own), self.api, max_head=self._max_head)
        try:
            async with asyncio.timeout(self.api.connect_timeout):
                await connection.handshake()
        except UpstreamRejected:
            connection.reap()  # it refused: it ends in its own time (close_timeout at most), not the client's
            raise
        except TimeoutError:
            await connection.abort()
            raise UpstreamTimeout(
                f"{self.label} did not complete the handshake in {self.api.connect_timeout:g} s"
            ) from None
        except UpstreamUnreachable:
            await connection.abort()  # an app that accepted what the gateway refuses must not wait for ever
            raise
        except asyncio.CancelledError:
            # The client left, or the server stops: as a network upstream's connection is closed under it.
            connection.abandon()
            raise
        return connection


_SERVER_KEYS = ("type", "asgi", "http_version", "scheme", "server", "client")
"""What the app's scope takes from the client's as is: the connection, as the server saw it. Nothing
else: keys a middleware outside the gateway added (``user``, ``session``, ``path_params``) were
decided on the client's request, before the policies, and the server's ``root_path`` is not the
app's (its path is the whole upstream path, as a network upstream's server would give it)."""


def _app_scope(request: UpstreamRequest, own_state: dict[str, object] | None = None) -> Scope:
    path, _, query = request.url.partition("?")
    client = request.scope
    scope = {key: client[key] for key in _SERVER_KEYS if key in client}
    # The app is served by the same server, at the address the client named: it gets the client's
    # Host as sent, as an HTTP request must carry one (RFC 9112 §3.2) and as it routes by it (Starlette's
    # Host). Checked (handshake.host_header): exactly one, a host name or an IP with an optional port,
    # so the app reads the host the policies' {request.hostname} names (docs/security.md).
    host = [(name, value) for name, value in client.get("headers", ()) if name.lower() == b"host"][:1]
    scope.update(
        root_path="",
        # The lifespan state, a copy as servers give each connection: the app's own start-up's over the
        # server's (what the application the gateway wraps set, which such apps read before they had their own).
        state={**(client.get("state") or {}), **(own_state or {})},
        # ASGI's path is decoded; upstream.checks refused encoded separators and dot segments, so
        # decoding cannot change the path's shape.
        path=unquote(path),
        raw_path=path.encode("latin-1"),
        query_string=query.encode("latin-1"),
        headers=host + [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers],
        subprotocols=list(request.subprotocols),
        extensions={"websocket.http.response": {}},
    )
    return scope


__all__ = ["InProcessConnector"]
