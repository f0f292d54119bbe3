"""An in-process (``asgi:``) upstream app's own ASGI lifespan, run by the gateway as a server would run it.

Before, the gateway never ran it: a Starlette app that set its state (a database pool) in its lifespan
found it missing at its first connection, under ``asgi-ws-gateway run`` and under ``uvicorn app:app``
with the middleware alike. Real processes; what the apps did is recorded to a file.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.server.serving import EXIT_START_FAILED
from support.clients import connect
from support.configs import write_config
from support.management import TOKEN
from support.processes import ServerProcess, ready_server
from support.servers import free_port

RUN = ["-m", "asgi_ws_gateway", "run"]
STOPPED = (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises SIGTERM

UPSTREAMS = '''
import contextlib
import os

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "record.txt")


def record(line):
    with open(RECORD, "a") as f:
        f.write(line + "\\n")


async def echo_state(websocket):
    await websocket.accept()
    await websocket.send_text(getattr(websocket.state, "greeting", "no state"))
    record("connection open")
    try:
        await websocket.receive_text()
    finally:
        record("connection closed")


@contextlib.asynccontextmanager
async def lifespan(app):
    record("startup")
    yield {"greeting": "hello from the lifespan"}
    record("shutdown")


app = Starlette(routes=[WebSocketRoute("/ws/state", echo_state), WebSocketRoute("/ws/again", echo_state)],
                lifespan=lifespan)


@contextlib.asynccontextmanager
async def failing_lifespan(app):
    raise RuntimeError("no database today")
    yield


failing = Starlette(routes=[WebSocketRoute("/ws/state", echo_state)], lifespan=failing_lifespan)


async def no_lifespan(scope, receive, send):
    """As Django's ASGI handler: a lifespan scope raises."""
    if scope["type"] != "websocket":
        raise ValueError("Django can only handle ASGI/HTTP connections, not %s." % scope["type"])
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "served"})
    await receive()
'''

MIDDLEWARE_APP = """
from starlette.applications import Starlette

from asgi_ws_gateway import WebSocketGateway

app = WebSocketGateway(Starlette(), config="gateway.yaml")
"""


def _config(tmp_path: Path, *upstreams: str) -> Path:
    (tmp_path / "upstreams.py").write_text(UPSTREAMS)
    (tmp_path / "middleware_app.py").write_text(MIDDLEWARE_APP)
    apis = [{"name": f"api{i}", "path": path, "upstreams": [url]} for i, (path, url) in enumerate(
        zip(("/ws/state", "/ws/again"), upstreams, strict=False))]  # fmt: skip
    return write_config(tmp_path, {"apis": apis})


def _command(server: str) -> Callable[[int], list[str]]:
    if server == "run":
        return lambda port: [*RUN, "gateway.yaml", "--log-level", "info", "--port", str(port)]
    if server == "run --management":  # the management API starts first, and is stopped when the start-up fails
        return lambda port: [*RUN, "gateway.yaml", "--management", "/_gateway", "--port", str(port)]
    return lambda port: ["-m", "uvicorn", "middleware_app:app", "--port", str(port), "--log-level", "info"]


def _record(tmp_path: Path) -> list[str]:
    path = tmp_path / "record.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("server", ["run", "uvicorn"])
async def test_the_apps_lifespan_state_reaches_its_connections(tmp_path: Path, server: str) -> None:
    """The app's lifespan state is in its connection's scope; an app two APIs use starts once, and shuts
    down after its connections were closed."""
    _config(tmp_path, "asgi:upstreams:app", "asgi:upstreams:app")
    with ready_server(_command(server), cwd=tmp_path) as gateway:
        async with await connect(f"ws://127.0.0.1:{gateway.port}/ws/state") as ws:
            assert await ws.recv() == "hello from the lifespan"  # before: "no state"
            async with await connect(f"ws://127.0.0.1:{gateway.port}/ws/again") as again:
                assert await again.recv() == "hello from the lifespan"
                # In a thread: the clients answer the gateway's closing handshakes meanwhile.
                assert await asyncio.to_thread(gateway.stop, signal.SIGTERM) in STOPPED
        output = gateway.output()
    assert _record(tmp_path) == [
        "startup", "connection open", "connection open", "connection closed", "connection closed", "shutdown"
    ], output  # fmt: skip


@pytest.mark.parametrize("server", ["run", "uvicorn"])
async def test_an_app_without_lifespan_support_is_served(tmp_path: Path, server: str) -> None:
    """An app that raises on the lifespan scope (as Django's handler does) is served without one."""
    _config(tmp_path, "asgi:upstreams:no_lifespan")
    with ready_server(_command(server), cwd=tmp_path) as gateway:
        async with await connect(f"ws://127.0.0.1:{gateway.port}/ws/state") as ws:
            assert await ws.recv() == "served"
        assert gateway.stop(signal.SIGTERM) in STOPPED
        output = gateway.output()
    if server == "run":  # uvicorn's own logging configuration shows only its loggers' INFO lines
        assert "in-process upstream asgi:upstreams:no_lifespan (API api0) does not support lifespan" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("server", ["run", "run --management", "uvicorn"])
def test_a_failed_startup_stops_the_gateway_naming_the_api_and_app(tmp_path: Path, server: str) -> None:
    """``lifespan.startup.failed`` from an in-process app fails the start-up: ``run`` exits 7 (uvicorn 3)."""
    _config(tmp_path, "asgi:upstreams:failing")
    port = free_port()
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN, "ASGI_WS_GATEWAY_STATE": str(tmp_path / "state.json")}
    with ServerProcess(_command(server)(port), port=port, cwd=tmp_path, env=env) as gateway:
        code = gateway.wait_exit()
        output = gateway.output()
    assert code == (3 if server == "uvicorn" else EXIT_START_FAILED), output
    assert "API api0: in-process upstream asgi:upstreams:failing failed its lifespan start-up" in output, output
    assert "no database today" in output, output
