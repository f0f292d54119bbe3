"""A gateway with its management API under real uvicorn, for the management tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

import asgi_ws_gateway
from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement, ManagementAPIError, ManagementClient
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.servers import UvicornServer, free_port
from support.upstream import UpstreamServer

TOKEN = "test-admin-token"


def api(name: str, path: str, upstream: UpstreamServer, **fields: Any) -> dict[str, Any]:
    return api_entry(upstream, name=name, path=path, **fields)


@dataclass
class Managed:
    server: UvicornServer
    management: GatewayManagement
    gateway: WebSocketGateway
    state: Path

    def url(self, path: str) -> str:
        return self.server.url(path)

    @property
    def base(self) -> str:
        return self.server.url("/_gateway", scheme="http")

    def http(self, token: str | None = TOKEN) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.AsyncClient(base_url=self.base + "/", headers=headers, trust_env=False, timeout=10)

    def client(self) -> ManagementClient:
        return ManagementClient(self.base, token=TOKEN)


@contextmanager
def managed_gateway(config: dict[str, Any], state: Path, **options: Any) -> Iterator[Managed]:
    """The standalone gateway for ``config`` behind ``GatewayManagement`` (a file store at ``state``)."""
    gateway = WebSocketGateway(not_found, config=config)
    options.setdefault("admin_token", TOKEN)
    management = GatewayManagement(gateway, store=FileStore(state), **options)
    with UvicornServer(management, lifespan="on") as server:
        yield Managed(server, management, gateway, state)


SRC = Path(asgi_ws_gateway.__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "asgi-ws-gateway"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for the command line: this checkout's package first, the admin token set."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("ASGI_WS_GATEWAY_URL", None)
    return {**env, "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN, **extra}


@dataclass
class Standalone:
    client: ManagementClient
    port: int
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_gateway"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def standalone(
    config: Path, *args: str, workers: int = 1, management_port: int | None = None
) -> AsyncIterator[Standalone]:
    """``asgi-ws-gateway run CONFIG --management /_gateway ...`` (or ``--management-port``), once ready."""
    port = free_port()
    where = ["--management-port", str(management_port)] if management_port else ["--management", "/_gateway"]
    process = await asyncio.create_subprocess_exec(
        str(EXE), "run", str(config), "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        *where, *args, cwd=config.parent, env=cli_env(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{management_port}" if management_port else f"http://127.0.0.1:{port}/_gateway"
    client = ManagementClient(base, token=TOKEN)
    try:
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(httpx2.TransportError, ManagementAPIError):
                    if await client.ready():
                        break
                assert process.returncode is None, "the gateway exited"
                await asyncio.sleep(0.1)
        yield Standalone(client, port, process)
    finally:
        await client.aclose()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await process.wait()
