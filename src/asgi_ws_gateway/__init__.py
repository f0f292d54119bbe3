"""asgi_ws_gateway: WebSocket API management as an ASGI middleware.

The names below are imported when first read (:mod:`._lazy`): ``import asgi_ws_gateway`` and its
light submodules (the management command line) do not load the whole gateway.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
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

if not TYPE_CHECKING:  # type checkers read the imports above (an unknown name stays an error)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            **dict.fromkeys(["ApiConfig", "GatewayConfig", "TelemetryConfig", "UpstreamConfig"], ".config"),
            **dict.fromkeys(
                [
                    "ConfigError",
                    "GatewayError",
                    "HandshakeDenied",
                    "UpstreamError",
                    "UpstreamRejected",
                    "UpstreamTimeout",
                    "UpstreamUnreachable",
                ],
                ".errors",
            ),
            **dict.fromkeys(
                ["FileStore", "GatewayManagement", "ManagementClient", "MemoryStore", "RedisStore"], ".management"
            ),
            "WebSocketGateway": ".middleware",
            "load_config": ".policies.build",
            "RelayStats": ".relay.stats",
            "json_schema": ".schema",
        },
    )

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
