"""Serving with uvicorn: the gateway's own protocol classes and the ``run`` command's server.

``uvicorn --ws asgi_ws_gateway.server:GatewayWebSocketProtocol --http asgi_ws_gateway.server:GatewayHTTPProtocol``
names the classes exported here; ``--loop asgi_ws_gateway.server:tls_bounded_loop`` bounds a TLS
handshake and close when uvicorn terminates TLS itself (``--ssl-keyfile``, ``--ssl-certfile``).
"""

from .http import GatewayH11Protocol, GatewayHTTPProtocol
from .tls_loop import tls_bounded_loop
from .websocket import GatewayWebSocketProtocol, PassthroughWebSocketProtocol

__all__ = [
    "GatewayH11Protocol",
    "GatewayHTTPProtocol",
    "GatewayWebSocketProtocol",
    "PassthroughWebSocketProtocol",
    "tls_bounded_loop",
]
