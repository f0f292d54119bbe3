"""Serving with uvicorn: the gateway's own protocol classes and the ``run`` command's server.

``uvicorn --ws asgi_ws_gateway.server:GatewayWebSocketProtocol --http asgi_ws_gateway.server:GatewayHTTPProtocol``
names the classes exported here.
"""

from .http import GatewayH11Protocol, GatewayHTTPProtocol
from .websocket import GatewayWebSocketProtocol, PassthroughWebSocketProtocol

__all__ = ["GatewayH11Protocol", "GatewayHTTPProtocol", "GatewayWebSocketProtocol", "PassthroughWebSocketProtocol"]
