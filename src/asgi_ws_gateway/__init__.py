"""asgi_ws_gateway: WebSocket API management as an ASGI middleware."""

from .config import ApiConfig, GatewayConfig, TelemetryConfig, UpstreamConfig, json_schema, load_config
from .errors import (
    ConfigError,
    GatewayError,
    HandshakeDenied,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .middleware import WebSocketGateway
from .relay import RelayStats

__version__ = "0.1.0"

__all__ = [
    "ApiConfig",
    "ConfigError",
    "GatewayConfig",
    "GatewayError",
    "HandshakeDenied",
    "RelayStats",
    "TelemetryConfig",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "WebSocketGateway",
    "__version__",
    "json_schema",
    "load_config",
]
