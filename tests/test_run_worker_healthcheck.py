"""``run --timeout-worker-healthcheck``: uvicorn's ``timeout_worker_healthcheck`` (its supervisor replaces a
started worker that does not answer a health check within it), which ``run`` did not offer (exit 2)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.cli import main
from asgi_ws_gateway.server import serving
from support.clients import connect
from support.configs import build_config, write_config
from support.processes import ready_server
from support.upstream import UpstreamServer


@pytest.mark.parametrize(("given", "seconds"), [((), 5), (("--timeout-worker-healthcheck", "30"), 30)])
def test_run_gives_uvicorn_the_worker_healthcheck_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: tuple[str, ...], seconds: int
) -> None:
    config = write_config(tmp_path, build_config())
    options: dict[str, Any] = {}

    def serve(app: str, uvicorn_options: dict[str, Any], **_: object) -> int:
        options.update(uvicorn_options)
        return 0

    monkeypatch.setattr(serving, "serve", serve)
    assert main(["run", str(config), "--workers", "2", *given]) == 0
    assert options["timeout_worker_healthcheck"] == seconds  # uvicorn's default when not given


async def test_run_with_a_worker_healthcheck_timeout_serves(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--timeout-worker-healthcheck", "30"]
    with ready_server(lambda port: [*command, "--port", str(port)]) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
