"""``python -m example_app [--port N]``: serve the example on 127.0.0.1 (port: ``--port``, ``$PORT`` or 8000)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import uvicorn

from .main import DEV_ADMIN_TOKEN, MANAGEMENT_PATH, admin_token

HOST = "127.0.0.1"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m example_app", description="Run the asgi-ws-gateway example.")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8000")), help="(default: $PORT or 8000)"
    )
    args = parser.parse_args(argv)
    # uvicorn configures only its own loggers: show the gateway's (one access line per connection) too.
    logging.basicConfig(format="%(levelname)-9s %(name)s: %(message)s")
    logging.getLogger("asgi_ws_gateway").setLevel(logging.INFO)
    print(f"asgi-ws-gateway example: open http://{HOST}:{args.port}/ in a browser", flush=True)
    print(f"management API and test console: http://{HOST}:{args.port}{MANAGEMENT_PATH}/console", flush=True)
    print(
        f"live console (charts, connections, refusals): http://{HOST}:{args.port}{MANAGEMENT_PATH}/console/live",
        flush=True,
    )
    if admin_token() == DEV_ADMIN_TOKEN:  # only the public development default is ever printed
        print(f"admin token: {DEV_ADMIN_TOKEN} (set ASGI_WS_GATEWAY_ADMIN_TOKEN to choose one)", flush=True)
    # Served as docs/security.md recommends for `uvicorn app:app`: the gateway's protocols (handshake
    # limits, the fast path, no ERROR line per refusal) and no client address taken from headers.
    uvicorn.run(
        "example_app.main:app",
        host=HOST,
        port=args.port,
        ws="asgi_ws_gateway.server:GatewayWebSocketProtocol",
        http="asgi_ws_gateway.server:GatewayHTTPProtocol",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
