"""Render docs/management-console-live.png: the live console watching real traffic.

A session on 127.0.0.1: an echo upstream (``websockets``), the gateway and its management API
under uvicorn (samples every 0.5 s), and clients that open connections, send messages at a
changing rate, get refused (an expired JWT, a dead backend) and close. Then headless Chromium
takes a screenshot of ``/_gateway/console/live``. Needs Debian's chromium.

Usage: ``python scripts/console_picture.py [docs/management-console-live.png]``
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jwt
import uvicorn
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from asgi_ws_gateway import WebSocketGateway  # noqa: E402
from asgi_ws_gateway.management import GatewayManagement  # noqa: E402
from asgi_ws_gateway.standalone import not_found  # noqa: E402

HOST = "127.0.0.1"
ADMIN = "picture-admin-token"
SECRET = "a-picture-secret-of-at-least-32-bytes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def upstream(port: int, ready: threading.Event) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, HOST, port):
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


def traffic(base: str, seconds: float) -> list[object]:
    """Connections that talk at a rising then falling rate, refusals, closes; returns the ones left open."""
    kept: list[object] = []
    expired = jwt.encode({"sub": "mallory", "exp": 1}, SECRET, algorithm="HS256")
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        step += 1
        with connect(f"{base}/ws/echo") as ws:
            for _ in range(1 + (step % 12)):
                ws.send("tick " * step)
                ws.recv()
        if step % 20 == 0:
            ws = connect(
                f"{base}/ws/chat",
                additional_headers={
                    "Authorization": "Bearer "
                    + jwt.encode({"sub": f"user-{step}", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
                },
            )
            ws.send("hello")
            ws.recv()
            kept.append(ws)
        for url, headers in ((f"{base}/ws/chat", {"Authorization": f"Bearer {expired}"}), (f"{base}/ws/dead", {})):
            if step % 4 == 0:
                with contextlib.suppress(InvalidStatus):  # refused: what the picture shows
                    connect(url, additional_headers=headers).close()
        time.sleep(0.15)
    return kept


def main(out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "needs chromium (scripts/install-chromium.sh)"
    up_port, port = free_port(), free_port()
    ready = threading.Event()
    threading.Thread(target=upstream, args=(up_port, ready), daemon=True).start()
    ready.wait(5)
    config = {"apis": [
        {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{up_port}/"]},
        {"name": "chat", "path": "/ws/chat", "upstreams": [f"ws://{HOST}:{up_port}/"],
         "policies": [{"validate-jwt": {"algorithms": ["HS256"], "secret": SECRET}}]},
        {"name": "dead", "path": "/ws/dead", "upstreams": [f"ws://{HOST}:1/"]},
    ]}  # fmt: skip
    app = GatewayManagement(WebSocketGateway(not_found, config=config), admin_token=ADMIN, sample_interval=0.5)
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    kept = traffic(f"ws://{HOST}:{port}", 25)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--window-size=1280,1750", "--virtual-time-budget=3000",
             f"--screenshot={out.resolve()}", f"http://{HOST}:{port}/_gateway/console/live#token={ADMIN}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    for ws in kept:
        ws.close()  # type: ignore[attr-defined]
    server.should_exit = True
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "management-console-live.png"))
