"""The example's FastAPI app: a console page over HTTP, and the gateway's WebSocket APIs.

``WebSocketGateway`` owns the paths in ``gateway.yaml`` (``/ws/echo`` and ``/ws/chat/{room}``);
every other request reaches FastAPI untouched. Run it with ``python -m example_app``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from asgi_ws_gateway import GatewayConfig, WebSocketGateway

HERE = Path(__file__).parent
CONFIG = HERE / "gateway.yaml"
INDEX = HERE / "static" / "index.html"


def create_app(config: GatewayConfig | Path = CONFIG) -> FastAPI:
    """Build the example app with its own gateway."""
    app = FastAPI(title="asgi-ws-gateway example")
    app.add_middleware(WebSocketGateway, config=config)

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

__all__ = ["CONFIG", "INDEX", "app", "create_app"]
