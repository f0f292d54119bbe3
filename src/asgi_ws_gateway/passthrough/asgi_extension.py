"""The ASGI extension through which a server offers passthrough and the gateway takes it: its keys,
the contract between the gateway's WebSocket protocol and the middleware, apart from the splice that
uses it (the server imports these, not the splice)."""

from __future__ import annotations

EXTENSION = "asgi_ws_gateway.passthrough"
"""The ``scope["extensions"]`` key a server that supports passthrough sets."""
ACCEPT = "asgi_ws_gateway.passthrough.accept"
"""The ASGI message type that accepts the client and hands its transport to a protocol."""
MAX_SIZE = "asgi_ws_gateway.max_size"
"""A key of a ``websocket.accept`` message sent under such a server: the largest message the server
reads from this client (it inflates no more of a compressed one), when smaller than its ws_max_size."""
CLOSE_TIMEOUT = "asgi_ws_gateway.close_timeout"
"""A key of such a ``websocket.accept``: seconds the server waits for the client's close frame after
sending its own before it closes the connection (uvicorn's protocol waits 10 s, whatever the API says)."""
PING_INTERVAL = "asgi_ws_gateway.ping_interval"
"""A key of such a ``websocket.accept``: seconds between the server's keepalive pings to this client,
the API's ``ping_interval``, in place of uvicorn's ``ws_ping_interval``; None: no pings, and no stall
rule (as on the splice). Sent with :data:`PING_TIMEOUT`: one without the other is ignored."""
PING_TIMEOUT = "asgi_ws_gateway.ping_timeout"
"""A key of such a ``websocket.accept``: seconds a keepalive ping's pong may take, and the stall rule's
window (the client must take in some of what waits for it within each: :mod:`..progress`), the API's
``ping_timeout``, in place of uvicorn's ``ws_ping_timeout``; None: no pong deadline, and no stall rule."""
ON_SHUTDOWN = "asgi_ws_gateway.on_shutdown"
"""A key of such a ``websocket.accept``: a callable the server calls with the ``websocket.disconnect`` it
queued when it shut down (SIGTERM) and sent the client its 1012. An application waiting elsewhere reads
that disconnect late: the relay's client pump held in a send to an upstream that reads nothing read it only
when the upstream's keepalive failed, past the server's graceful timeout."""
NO_COMPRESSION = "asgi_ws_gateway.no_compression"
"""A key of such a ``websocket.accept``: True: the server answers the client without the permessage-deflate
it negotiated (reads and writes its messages uncompressed). The relay sets it when its upstream leg has no
compression: what a client sent compressed went on inflated, ~1,000 times its wire bytes of zeros."""
TAKEN_IN = "taken_in"
"""A key of the extension's value (``scope["extensions"][EXTENSION]``): a callable, a count that grows as the
client takes in what is sent to it (:func:`..progress.taken_in` of its transport): the relay's close wait
looks at it, as the splice's looks at its sides (it cut a slow reader's backlog at ``close_timeout``)."""
STOPPED = "asgi_ws_gateway.stopped"
"""A ``scope["extensions"]`` key the gateway's protocol sets, before it cancels the application's handshake,
to why (``CLIENT_GONE``, ``SHUTDOWN_REFUSAL``): the cancellation's own message may be replaced on its way
(anyio's cancel scopes, which httpx's connects run in, raise a ``CancelledError`` of their own)."""


__all__ = [
    "ACCEPT", "CLOSE_TIMEOUT", "EXTENSION", "MAX_SIZE", "NO_COMPRESSION", "ON_SHUTDOWN", "PING_INTERVAL",
    "PING_TIMEOUT", "STOPPED", "TAKEN_IN",
]  # fmt: skip
