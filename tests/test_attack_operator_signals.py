"""The operator's signals to ``asgi-ws-gateway run``: SIGHUP, which an operator sends expecting a
reload (and a closing terminal sends), must not end a serving gateway without a word.

Before, its default action killed the one-process gateway at once (status -1, ``Hangup``): every
client and upstream saw the TCP connection drop without a close frame (1006), leases stayed held
until they expired and telemetry was never flushed.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml

from asgi_ws_gateway.server.serving import EXIT_FORCED, HANGUP_IGNORED
from support.clients import connect
from support.configs import build_config, write_config
from support.processes import ready_server
from support.upstream import SilentUpstream, UpstreamServer


async def test_sighup_keeps_serving_open_and_new_connections_and_says_so(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    with ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)]) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line(f"WARNING:  {HANGUP_IGNORED}")
            await ws.send("after")
            assert await ws.recv() == "after"
            async with await connect(f"ws://127.0.0.1:{server.port}/echo") as second:
                await second.send("new")
                assert await second.recv() == "new"
            # In a thread: this loop answers the drain's close frame (blocked, it held the stop for close_timeout).
            assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
        assert ws.close_code == 1012  # the drain SIGTERM asks for, with its close frame
        assert server.output().count("SIGHUP ignored") == 1


async def test_sighup_with_an_invalid_file_keeps_the_workers_and_names_the_problem(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """With workers uvicorn replaces each on SIGHUP; the new one reads the file again. An edited file that
    is now invalid raised from the worker's factory: a 30-line traceback, the field path at its end."""
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--log-level", "info"]
    with ready_server(lambda port: [*command, "--port", str(port)]) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.wait_for_line("Application startup complete.", times=2)  # both workers read the file
            config.write_text(config.read_text() + "bogus: 1\n")
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line("aborting the restart", timeout=30)
            await ws.send("after")
            assert await ws.recv() == "after"
            code = await asyncio.to_thread(server.stop, signal.SIGTERM)  # this loop answers the drain's close
        output = server.output()
    assert code == 0, output
    assert f"ERROR:    invalid gateway configuration in {config} (1 problem(s)):\n  bogus: unknown field\n" in output
    assert "failed to start; keeping worker" in output  # uvicorn's "was not ready in time" of a failed start-up
    assert "not ready in time" not in output
    assert "Traceback" not in output


async def test_a_second_sigint_during_the_drain_is_not_reported_as_a_graceful_exit(tmp_path: Path) -> None:
    """Ctrl+C twice while the drain waits for an upstream that never answers the close: uvicorn cuts the
    connections and skips the gateway's shutdown. The exit status said 0, "graceful shutdown"."""
    async with SilentUpstream() as upstream:
        api = {"name": "silent", "path": "/silent", "upstreams": [f"ws://127.0.0.1:{upstream.port}/"],
               "close_timeout": 30}  # fmt: skip
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({"apis": [api]}))
        command = ["-m", "asgi_ws_gateway", "run", str(config), "--log-level", "info"]
        with ready_server(lambda port: [*command, "--port", str(port)]) as server:
            async with await connect(f"ws://127.0.0.1:{server.port}/silent"):
                server.process.send_signal(signal.SIGTERM)
                server.wait_for_line("Waiting for connections to close")
                assert server.stop(signal.SIGINT) == EXIT_FORCED
            assert "WARNING:  forced to quit before the drain finished: 1 connection(s) cut" in server.output()
