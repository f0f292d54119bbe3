"""``run --workers 2`` whose workers take longer to start than uvicorn's 5 s health check.

A spawned worker answers the supervisor's health checks only once its interpreter has imported the
gateway; on a loaded machine that took more than 5 s. uvicorn's supervisor then killed each worker
as hung, again and again ("Child process [n] died"), and a SIGHUP's restart gave up on its
replacement ("was not ready in time") and kept the old workers: their clients were never told 1012.
Here every worker's interpreter sleeps 3 s before it can answer (a ``sitecustomize`` on the path), past a
health check of 2 s (``--timeout-worker-healthcheck``): the default's 7 s past 5 s, at less than half the wait
(each of the four workers started sleeps it).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from support.clients import connect
from support.configs import build_config, write_config
from support.processes import SRC, ready_server
from support.upstream import UpstreamServer

_SLOW_START = """
import sys
import time

if "--multiprocessing-fork" in sys.argv:  # a worker spawned by uvicorn's supervisor, not the supervisor
    time.sleep(3)
"""


async def test_workers_slower_to_start_than_the_health_check_serve_and_restart(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_SLOW_START)
    path = write_config(tmp_path, build_config(upstream_server, api={"passthrough": False}))
    python_path = os.pathsep.join([str(tmp_path / "site"), str(SRC), os.environ.get("PYTHONPATH", "")])
    command = ["-m", "asgi_ws_gateway", "run", str(path), "--log-level", "info", "--workers", "2",
               "--timeout-worker-healthcheck", "2"]  # fmt: skip
    with ready_server(lambda port: [*command, "--port", str(port)], env={"PYTHONPATH": python_path}) as server:
        server.wait_for_line("Application startup complete.", times=2, timeout=90)
        clients = [await connect(f"ws://127.0.0.1:{server.port}/ws/echo") for _ in range(4)]
        for ws in clients:
            await ws.send("before")
            assert await ws.recv() == "before"
        server.process.send_signal(signal.SIGHUP)  # each worker replaced, the new one ready first
        await asyncio.wait([asyncio.ensure_future(ws.wait_closed()) for ws in clients], timeout=60)
        assert [ws.close_code for ws in clients] == [1012] * 4, server.output()
        async with await connect(f"ws://127.0.0.1:{server.port}/ws/echo") as fresh:
            await fresh.send("after")
            assert await fresh.recv() == "after"
        output = server.output()
        assert "died" not in output and "not ready in time" not in output, output
        assert server.stop(signal.SIGTERM) == 0, server.output()
