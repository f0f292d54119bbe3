"""A gateway with its management API under real uvicorn, in this process, for the management tests.

The standalone gateway as a process (``standalone``) is in ``processes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement, ManagementClient
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.servers import UvicornServer, WSImpl, free_port
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
        return self.server.url("" if self.management.port is not None else "/_gateway", scheme="http")

    def http(self, token: str | None = TOKEN) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.AsyncClient(base_url=self.base + "/", headers=headers, trust_env=False, timeout=10)

    def client(self) -> ManagementClient:
        return ManagementClient(self.base, token=TOKEN)


@contextmanager
def managed_gateway(config: dict[str, Any], state: Path, **options: Any) -> Iterator[Managed]:
    """The standalone gateway for ``config`` behind ``GatewayManagement`` (a file store at ``state``).

    ``ws``: uvicorn's WebSocket implementation (``support.gateway.PASSTHROUGH``: the gateway's protocol,
    which splices); ``http``: its HTTP one; the other options go to ``GatewayManagement``.

    With ``port=0`` the management API answers on the server's own (free) port, at its root. uvicorn
    does not rewrite the client from forwarding headers, as under ``run``: ``trusted_proxies`` decide;
    ``proxy_headers=True`` is uvicorn's own default (``X-Forwarded-For`` from 127.0.0.1 believed).
    """
    gateway = WebSocketGateway(not_found, config=config)
    ws: WSImpl = options.pop("ws", "websockets-sansio")
    server_options = {"proxy_headers": options.pop("proxy_headers", False), "http": options.pop("http", "auto")}
    options.setdefault("admin_token", TOKEN)
    port = options.get("port")
    if port == 0:
        port = options["port"] = free_port()
    management = GatewayManagement(gateway, store=FileStore(state), **options)
    with UvicornServer(management, ws=ws, lifespan="on", port=port or 0, **server_options) as server:
        yield Managed(server, management, gateway, state)
