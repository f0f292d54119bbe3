"""The example's FastAPI app: a console page over HTTP, and the gateway's WebSocket APIs.

``WebSocketGateway`` owns the paths in ``gateway.yaml`` (``/ws/echo`` and ``/ws/chat/{room}``);
every other request reaches FastAPI untouched. ``GatewayManagement`` serves the management API and
its test console at ``/_gateway`` (admin token: ``$ASGI_WS_GATEWAY_ADMIN_TOKEN``, else a development
default). Changes made through it are kept in memory, or in the file ``$ASGI_WS_GATEWAY_STATE``.
Run it with ``python -m example_app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from asgi_ws_gateway import GatewayConfig, WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement
from asgi_ws_gateway.management.admin_auth import EXAMPLE_ADMIN_TOKEN

HERE = Path(__file__).parent
CONFIG = HERE / "gateway.yaml"
INDEX = HERE / "static" / "index.html"
MANAGEMENT_PATH = "/_gateway"
DEV_ADMIN_TOKEN = EXAMPLE_ADMIN_TOKEN
"""The admin token when ``$ASGI_WS_GATEWAY_ADMIN_TOKEN`` is not set: for trying the example only."""


def admin_token() -> str:
    return os.environ.get("ASGI_WS_GATEWAY_ADMIN_TOKEN") or DEV_ADMIN_TOKEN


def create_app(config: GatewayConfig | Path = CONFIG) -> FastAPI:
    """Build the example app with its own gateway and management API."""
    app = FastAPI(title="asgi-ws-gateway example")
    app.add_middleware(WebSocketGateway, config=config)
    state = os.environ.get("ASGI_WS_GATEWAY_STATE")
    app.add_middleware(GatewayManagement, path=MANAGEMENT_PATH, admin_token=admin_token(),
                       store=FileStore(state) if state else None)  # fmt: skip

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The console page: connect to an API, send messages, watch both directions."""
        return FileResponse(INDEX, media_type="text/html")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    return app


app = create_app()

__all__ = ["CONFIG", "DEV_ADMIN_TOKEN", "INDEX", "MANAGEMENT_PATH", "admin_token", "app", "create_app"]
