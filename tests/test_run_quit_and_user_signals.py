"""SIGQUIT, SIGUSR1 and SIGUSR2 sent to ``asgi-ws-gateway run`` (:mod:`asgi_ws_gateway.server.other_signals`).

Before: one process died of SIGQUIT (a core dump, every client 1006, no line) and of SIGUSR1 (logrotate's
``postrotate`` for nginx) at once; ``--workers 2``'s supervisor logged them at DEBUG and did nothing, and
SIGQUIT to the whole group (Ctrl+\\) killed every worker, their clients cut, and the supervisor started others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.server.other_signals import QUIT_AS_STOP
from asgi_ws_gateway.server.serving import WORKER_START_GRACE
from support.clients import connect
from support.configs import build_config, write_config
from support.pipes import FILLER, StalledPipe
from support.processes import SRC, ServerProcess, ready_server
from support.servers import children, free_port
from support.upstream import UpstreamServer


def _send(server: ServerProcess, sig: int, *, group: bool) -> None:
    """``sig`` to the supervisor, or to it and its workers (a terminal's Ctrl+\\, ``kill -- -PGID``)."""
    for pid in [server.process.pid, *(children(server.process.pid) if group else [])]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def _serving(tmp_path: Path, upstream_server: UpstreamServer, workers: int) -> Iterator[ServerProcess]:
    """``run --workers N`` proxying /echo to ``upstream_server``, every worker started.

    Waited for as long as the supervisor waits for a worker's start (``WORKER_START_GRACE``): the port listens
    only once the first worker serves (the supervisor binds it, a worker listens), and under ``-n 2`` on a
    loaded host the supervisor's start and two workers' took past 30 s (4 of 20 runs: "the server did not
    start", the supervisor's two lines its whole output)."""
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", str(workers), "--log-level", "info"]
    with ready_server(lambda port: [*command, "--port", str(port)], timeout=WORKER_START_GRACE) as server:
        server.wait_for_line("Application startup complete.", times=workers, timeout=WORKER_START_GRACE)
        yield server


@pytest.mark.parametrize(("workers", "group"), [(1, False), (2, False), (2, True)], ids=["one", "supervisor", "group"])
async def test_sigquit_drains_and_exits_0(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int, group: bool
) -> None:
    with _serving(tmp_path, upstream_server, workers) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            _send(server, signal.SIGQUIT, group=group)
            async with asyncio.timeout(30):
                await ws.wait_closed()
            code = await asyncio.to_thread(server.process.wait, 30)
        output = server.output()
    assert ws.close_code == 1012, output  # the drain's close frame, not a dropped connection (1006)
    assert code == 0, output
    assert output.count(QUIT_AS_STOP) == 1, output
    assert "died" not in output, output


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigusr1_and_sigusr2_are_ignored_with_a_line(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int
) -> None:
    with _serving(tmp_path, upstream_server, workers) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                _send(server, sig, group=True)
                server.wait_for_line(f"WARNING:  {sig.name} ignored: run has no log file to reopen")
            await ws.send("after")
            assert await ws.recv() == "after"
            code = await asyncio.to_thread(server.stop, signal.SIGTERM)
        output = server.output()
    assert code == 0, output
    assert output.count("SIGUSR1 ignored") == 1, output  # the supervisor's line, not one per worker too
    assert "died" not in output, output


_HOLDING_PLUGIN = """
import os
import time

open("loading", "w").close()
while os.path.exists("hold"):  # run's start-up held here, as a slow import or a large file holds it
    time.sleep(0.05)
"""


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_while_run_starts_is_ignored_with_a_line(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int
) -> None:
    """A closing terminal, or a reload sent just after a start: SIGHUP's default action ended run (exit 129,
    nothing said) while it loaded its file."""
    (tmp_path / "holding_plugin.py").write_text(_HOLDING_PLUGIN)
    config = write_config(tmp_path, build_config(upstream_server, path="/echo", plugins=["holding_plugin"]))
    (tmp_path / "hold").touch()
    port = free_port()
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", str(workers), "--log-level", "info",
               "--port", str(port)]  # fmt: skip
    with ServerProcess(command, port=port, cwd=tmp_path) as server:
        deadline = time.monotonic() + 30
        while not (tmp_path / "loading").exists():
            assert server.process.poll() is None and time.monotonic() < deadline, server.output()
            await asyncio.sleep(0.05)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_line("SIGHUP ignored: run is still starting")
        (tmp_path / "hold").unlink()
        server.wait_ready()
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("served")
            assert await ws.recv() == "served"
        code = await asyncio.to_thread(server.stop, signal.SIGTERM)
    assert code == 0, server.output()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighups_while_run_starts_wait_for_no_stalled_stderr(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int
) -> None:
    """Two SIGHUPs while run starts, its stderr a pipe whose reader stalled: the handler wrote its line there
    itself, and the start-up (the main thread, in the handler) waited for the reader; it never served. Now
    the lines wait in the log writer's queue, run serves, and they are written once the reader is back."""
    (tmp_path / "holding_plugin.py").write_text(_HOLDING_PLUGIN)
    config = write_config(tmp_path, build_config(upstream_server, path="/echo", plugins=["holding_plugin"]))
    (tmp_path / "hold").touch()
    stderr = StalledPipe(tmp_path / "stderr.fifo")
    stderr.fill()
    port = free_port()
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", str(workers), "--log-level", "info",
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path]), "PYTHONUNBUFFERED": "1"}
    with (tmp_path / "stdout").open("wb") as out, stderr.path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=tmp_path, env=env, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "loading").exists():
            assert process.returncode is None and time.monotonic() < deadline, "run ended or hung before its plugin"
            await asyncio.sleep(0.05)
        for _ in range(2):
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.2)  # two signals, not one pending twice
        (tmp_path / "hold").unlink()
        async with asyncio.timeout(30):  # serves, its stderr still stalled
            while True:
                with contextlib.suppress(OSError):
                    async with await connect(f"ws://127.0.0.1:{port}/echo") as ws:
                        await ws.send("served")
                        assert await ws.recv() == "served"
                        break
                assert process.returncode is None, "run ended"
                await asyncio.sleep(0.1)
        stderr.start()  # the reader is back
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
    output = stderr.data.rpartition(FILLER)[2].decode(errors="replace")
    assert output.count("SIGHUP ignored: run is still starting") == 2, output
    assert "Traceback" not in output, output
