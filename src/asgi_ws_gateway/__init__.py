"""asgi_ws_gateway: WebSocket API management as an ASGI middleware."""

from ._version import __version__
from .config import ApiConfig, GatewayConfig, TelemetryConfig, UpstreamConfig
from .errors import (
    ConfigError,
    GatewayError,
    HandshakeDenied,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .management import FileStore, GatewayManagement, ManagementClient, MemoryStore, RedisStore
from .middleware import WebSocketGateway
from .policies.build import load_config
from .relay.stats import RelayStats
from .schema import json_schema

__all__ = [
    "ApiConfig",
    "ConfigError",
    "FileStore",
    "GatewayConfig",
    "GatewayError",
    "GatewayManagement",
    "HandshakeDenied",
    "ManagementClient",
    "MemoryStore",
    "RedisStore",
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
