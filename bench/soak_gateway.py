"""One gateway process for the soak: the standalone gateway under uvicorn, reporting its asyncio task count.

``python -m bench.soak_gateway --config gateway.yaml --port 8001 --stats tasks.txt`` serves the
config like ``asgi-ws-gateway run`` does and rewrites ``--stats`` every second with the number of
asyncio tasks alive in its loop: the one figure that cannot be read from outside the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path

import uvicorn

from asgi_ws_gateway.standalone import create_app

from .system import raise_fd_limit


async def _report_tasks(path: Path) -> None:
    while True:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(str(len(asyncio.all_tasks())))
        os.replace(temporary, path)  # the sampler never reads a half-written file
        await asyncio.sleep(1.0)


async def serve(config: Path, port: int, stats: Path) -> None:
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    reporter = asyncio.create_task(_report_tasks(stats))
    try:
        await server.serve()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.config, args.port, args.stats))


if __name__ == "__main__":
    main()


__all__ = ["serve"]
