"""The gateway added to a FastAPI app served by plain ``uvicorn app:app`` (a real subprocess).

Issue 11 item 9 (an invalid configuration stops start-up under uvicorn's default options) and, for
``uvicorn app:app`` users, issue 10 items 1 and 3 (the proxy-header warning, redacted uvicorn logs).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.processes import ServerProcess, ready_server
from support.servers import free_port
from support.upstream import UpstreamServer

APP = """
from fastapi import FastAPI
from asgi_ws_gateway import WebSocketGateway

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


app.add_middleware(WebSocketGateway, config="gateway.yaml")
"""

INVALID: dict[str, tuple[str | None, str]] = {
    "missing file": (None, "cannot read file"),
    "YAML typo": ("apis:\n  - name: x\n    path: /x\n   upstreams: [ws://a/]\n", "not valid YAML"),
    "invalid field": (yaml.safe_dump({"apis": [{"name": "x", "path": "/x", "upstreams": ["http://a/"]}]}),
                      "apis[0].upstreams[0]"),
    "unknown field": (yaml.safe_dump({"apis": [{"name": "x", "path": "/x", "upstreams": ["ws://a/"], "tiemout": 1}]}),
                      "apis[0].tiemout"),
}  # fmt: skip


def _uvicorn(tmp: Path, config: str | None, *extra: str) -> ServerProcess:
    """uvicorn serving the app, started (for a test of how it stops)."""
    _write(tmp, config)
    port = free_port()
    return ServerProcess(["-m", "uvicorn", "app:app", "--port", str(port), *extra], port=port, cwd=tmp)


def _uvicorn_ready(tmp: Path, config: str | None, *extra: str) -> ServerProcess:
    """uvicorn serving the app, ready (on another port if the first one was taken meanwhile)."""
    _write(tmp, config)
    return ready_server(lambda port: ["-m", "uvicorn", "app:app", "--port", str(port), *extra], cwd=tmp)


def _write(tmp: Path, config: str | None) -> None:
    (tmp / "app.py").write_text(APP)
    if config is not None:
        (tmp / "gateway.yaml").write_text(config)


@pytest.mark.parametrize("case", INVALID)
def test_invalid_config_stops_uvicorn_start_up(tmp_path: Path, case: str) -> None:
    """Default options (lifespan auto): uvicorn exits non-zero, promptly, and stderr names the problem."""
    config, expected = INVALID[case]
    with _uvicorn(tmp_path, config) as server:
        assert server.wait_exit(timeout=30) != 0
        stderr = server.stderr()
    assert expected in stderr
    assert "invalid gateway configuration in " in stderr
    assert "Application startup failed. Exiting." in stderr
    assert "Application startup complete" not in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("lifespan", ["on", "auto"])
def test_explicit_lifespan_settings_stop_too(tmp_path: Path, lifespan: str) -> None:
    """``--lifespan on`` and ``auto`` both end start-up on an invalid field."""
    config, expected = INVALID["invalid field"]
    with _uvicorn(tmp_path, config, "--lifespan", lifespan) as server:
        assert server.wait_exit(timeout=30) != 0
        assert expected in server.stderr()


async def test_without_lifespan_every_request_is_refused_and_the_error_logged(tmp_path: Path) -> None:
    """``--lifespan off`` cannot fail start-up: HTTP gets 500, WebSocket 500, and the field path is logged."""
    config, expected = INVALID["invalid field"]
    with _uvicorn_ready(tmp_path, config, "--lifespan", "off") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as http:
            http.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert http.recv(100).startswith(b"HTTP/1.1 500")
        assert (await expect_status(f"ws://127.0.0.1:{server.port}/x"))[0] == 500
        server.stop()
        stderr = server.stderr()
    assert "every request is refused: invalid gateway configuration in gateway.yaml" in stderr
    assert expected in stderr
    assert stderr.count(expected) == 1  # once, not per request
    assert "Traceback" not in stderr


def test_direct_construction_still_raises_config_error() -> None:
    """``WebSocketGateway(app, config=bad)`` raises ConfigError listing the field path, as documented."""
    with pytest.raises(ConfigError) as raised:
        WebSocketGateway(not_found, config={"apis": [{"name": "x", "path": "/x", "upstreams": ["http://a/"]}]})
    assert any(p.startswith("apis[0].upstreams[0]") for p in raised.value.problems)


def test_starlette_middleware_list_fails_start_up_in_process() -> None:
    """``Starlette(middleware=[Middleware(WebSocketGateway, config=bad)])``: start-up fails with the ConfigError."""
    bad: dict[str, Any] = {"apis": [{"name": "x", "path": "/x", "upstreams": ["http://a/"]}]}
    app = Starlette(middleware=[Middleware(WebSocketGateway, config=bad)])
    with pytest.raises(ConfigError, match=r"apis\[0\]\.upstreams\[0\]"), TestClient(app):
        pass


# --- forwarding headers and redaction under plain uvicorn ------------------------------------------


async def test_plain_uvicorn_rewrite_is_warned_once_and_logs_are_redacted(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """uvicorn's default proxy headers rewrite the client: one WARNING; tokens in uvicorn's lines are redacted."""
    config = {"apis": [{"name": "echo", "path": "/echo", "upstreams": [upstream_server.url("/echo")]}]}
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    with _uvicorn_ready(tmp_path, yaml.safe_dump(config), "--log-level", "debug") as server:
        for _ in range(2):
            url = f"ws://127.0.0.1:{server.port}/echo?access_token={secret}&subscription-key=k-{secret[-8:]}"
            async with await connect(url, additional_headers={"X-Forwarded-For": "10.1.2.3"}) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
        server.stop()
        output = server.output()
    assert output.count("the server rewrote the client address from a forwarding header") == 1
    assert "access_token=REDACTED" in output
    assert secret not in output
    assert secret[-8:] not in output


async def test_no_warning_when_uvicorn_keeps_the_peer(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """With ``--no-proxy-headers`` the gateway sees the peer: no warning, and the spoof does not pass ip-filter."""
    api = {"name": "echo", "path": "/echo", "upstreams": [upstream_server.url("/echo")],
           "policies": [{"ip-filter": {"allow": ["10.0.0.0/8"]}}]}  # fmt: skip
    with _uvicorn_ready(tmp_path, yaml.safe_dump({"apis": [api]}), "--no-proxy-headers") as server:
        status, _, _ = await expect_status(
            f"ws://127.0.0.1:{server.port}/echo", additional_headers={"X-Forwarded-For": "10.1.2.3"}
        )
        assert status == 403
        server.stop()
        assert "rewrote the client address" not in server.output()
