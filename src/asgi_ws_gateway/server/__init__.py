"""Serving with uvicorn: the gateway's own protocol classes and the ``run`` command's server.

``uvicorn --ws asgi_ws_gateway.server:GatewayWebSocketProtocol --http asgi_ws_gateway.server:GatewayHTTPProtocol``
names the classes exported here; ``--loop asgi_ws_gateway.server:tls_bounded_loop`` bounds a TLS
handshake and close when uvicorn terminates TLS itself (``--ssl-keyfile``, ``--ssl-certfile``).

The classes are imported when first read (:mod:`.._lazy`): ``run``'s own modules here (:mod:`.serving`, the
supervisor) do not import the protocols, the relay and the gateway, which ``run --workers N``'s supervisor
does not serve with (docs/performance.md, "Start-up").
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .http import GatewayH11Protocol, GatewayHTTPProtocol
    from .tls_loop import tls_bounded_loop
    from .websocket import GatewayWebSocketProtocol, PassthroughWebSocketProtocol

if not TYPE_CHECKING:  # imported when first read: ``run --workers N``'s supervisor serves no connection
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "GatewayH11Protocol": ".http",
            "GatewayHTTPProtocol": ".http",
            "tls_bounded_loop": ".tls_loop",
            "GatewayWebSocketProtocol": ".websocket",
            "PassthroughWebSocketProtocol": ".websocket",
        },
    )

__all__ = [
    "GatewayH11Protocol",
    "GatewayHTTPProtocol",
    "GatewayWebSocketProtocol",
    "PassthroughWebSocketProtocol",
    "tls_bounded_loop",
]
