"""asgi_ws_gateway: WebSocket API management as an ASGI middleware."""

from typing import TYPE_CHECKING, Any

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
from .relay.pumps import RelayStats

if TYPE_CHECKING:
    from .management import FileStore, GatewayManagement, ManagementClient, MemoryStore, RedisStore

# The management names load on first use: ``import asgi_ws_gateway`` stays light for the data plane.
_MANAGEMENT = {"FileStore", "GatewayManagement", "ManagementClient", "MemoryStore", "RedisStore"}


def __getattr__(name: str) -> Any:
    if name in _MANAGEMENT:
        from . import management

        return getattr(management, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

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
