"""``asgi-ws-gateway run --workers 2``: a SIGHUP that changes ``telemetry.access_log`` changes the lines' format
in every worker, not only what each writes.

uvicorn replaces each worker on SIGHUP and the new one reads the file again, but the workers' logging is
configured once, from the format the file named at start: after text -> json each JSON object was written
behind uvicorn's ``INFO:     `` prefix (no line parsed), and after json -> text the text lines lost theirs.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from support.clients import connect
from support.configs import build_config, write_config
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer


def _access_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.stdout().splitlines() if "WebSocket /echo" in line or '"/echo"' in line]


async def _connections_logged(server: ServerProcess, count: int) -> list[str]:
    """``count`` connections more, each to whichever worker takes it; their access lines."""
    before = len(_access_lines(server))
    for _ in range(count):
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
    async with asyncio.timeout(15):
        while len(_access_lines(server)) < before + count:  # noqa: ASYNC110 - another process's output
            await asyncio.sleep(0.05)
    return _access_lines(server)[before:]


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.parametrize(("first", "then"), [("text", "json"), ("json", "text")])
async def test_a_reload_that_changes_the_access_log_format_changes_every_workers_lines(
    tmp_path: Path, upstream_server: UpstreamServer, first: str, then: str
) -> None:
    document = build_config(upstream_server, path="/echo", telemetry={"access_log": first})
    config = write_config(tmp_path, document)
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--log-level", "info"]
    with ready_server(lambda port: [*command, "--port", str(port)]) as server:
        server.wait_for_line("Application startup complete.", times=2)
        for line in await _connections_logged(server, 4):
            assert _is_json(line) == (first == "json"), line
        write_config(tmp_path, {**document, "telemetry": {"access_log": then}})
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_line("Application startup complete.", times=4, timeout=60)  # both workers replaced
        server.wait_for_line("Finished server process", times=2, timeout=60)
        for line in await _connections_logged(server, 4):
            if then == "json":
                assert _is_json(line), line
            else:
                assert line.startswith("INFO:     127.0.0.1:"), line
        assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
