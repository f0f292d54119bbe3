"""The public surface is exactly what __all__ says."""

from __future__ import annotations

import asgi_ws_gateway


def test_all_is_the_public_surface() -> None:
    assert sorted(asgi_ws_gateway.__all__) == [
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
    for name in asgi_ws_gateway.__all__:
        assert hasattr(asgi_ws_gateway, name)


def test_management_names_resolve() -> None:
    import asgi_ws_gateway.management as management

    for name in management.__all__:
        assert getattr(management, name) is not None
