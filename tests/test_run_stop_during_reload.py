"""SIGTERM while ``run --workers 2`` replaces its workers on SIGHUP.

uvicorn's supervisor queues a signal and acts on it at the next turn of its loop, and a SIGHUP's restart is
one turn: it went on starting a new worker and draining an old one, in turn, for every worker, and only
then stopped them all (12 s for two idle workers; up to a minute a worker on a loaded host), past the 30 s
after which an orchestrator sends SIGKILL. Now the restart ends as the stop comes.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from support.clients import connect
from support.configs import build_config, write_config
from support.processes import ready_server
from support.upstream import UpstreamServer


async def test_sigterm_during_a_restart_stops_without_replacing_every_worker_first(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--log-level", "info"]
    with ready_server(lambda port: [*command, "--port", str(port)]) as server:
        server.wait_for_line("Application startup complete.", times=2)
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line("Received SIGHUP, restarting processes.")
            server.process.send_signal(signal.SIGTERM)  # as the first new worker starts
            async with asyncio.timeout(30):
                await ws.wait_closed()
            code = await asyncio.to_thread(server.process.wait, 30)
        output = server.output()
    assert code == 0, output
    assert ws.close_code == 1012, output
    # The two workers it started with, and the first new one stopped as it started (before or after its
    # "Started" line): not a second new one too.
    assert output.count("Started server process") in {2, 3}, output
    assert "ERROR" not in output, output
