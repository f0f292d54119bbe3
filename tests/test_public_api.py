"""The public surface is exactly what __all__ says."""

from __future__ import annotations

import asgi_ws_gateway


def test_all_is_the_public_surface() -> None:
    assert sorted(asgi_ws_gateway.__all__) == [
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
    for name in asgi_ws_gateway.__all__:
        assert hasattr(asgi_ws_gateway, name)


def test_management_names_resolve() -> None:
    import asgi_ws_gateway.management as management

    for name in management.__all__:
        assert getattr(management, name) is not None


def test_management_names_are_exported_from_the_root() -> None:
    """The README's management snippet imports from the package root: the same objects as management's."""
    import asgi_ws_gateway.management as management
    from asgi_ws_gateway import FileStore, GatewayManagement, ManagementClient, MemoryStore, RedisStore

    assert GatewayManagement is management.GatewayManagement
    assert ManagementClient is management.ManagementClient
    assert (FileStore, MemoryStore, RedisStore) == (management.FileStore, management.MemoryStore, management.RedisStore)
