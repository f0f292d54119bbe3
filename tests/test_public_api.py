"""The public surface is exactly what __all__ says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_readme_management_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's management snippet has its imports: executed as is, it builds the app."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "GatewayManagement" in block)
    (tmp_path / "gateway.yaml").write_text("apis: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASGI_WS_GATEWAY_ADMIN_TOKEN", "t")
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert [m.cls.__name__ for m in namespace["app"].user_middleware] == [  # type: ignore[attr-defined]
        "GatewayManagement",
        "WebSocketGateway",
    ]
