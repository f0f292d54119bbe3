"""``run --workers 2``: a worker that dies while the file is being edited (invalid) is the one lost.

uvicorn replaces a dead worker with a new one, which reads the file again; when that one failed its
start-up, uvicorn's supervisor stopped the whole gateway: the worker still serving was terminated with
its connections, and ``run`` exited 7 ("could not start serving") after serving all along. Now the
other worker serves on, the log says so once, and the place is filled again (after
``REPLACEMENT_RETRY`` seconds, then twice the last wait, or at a SIGHUP) once the file is valid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from support.clients import connect
from support.configs import build_config, write_config
from support.plugins import sooner_retry
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

REPLACEMENT_FAILED = "replacing one that died, failed to start; 1 worker(s) go on serving"


def _client_port(ws: ClientConnection) -> int:
    port: int = ws.transport.get_extra_info("sockname")[1]
    return port


def _serving_workers(gateway: GatewayProcess) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    return {pid for pid in gateway.workers() if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _text(log: Path) -> str:
    return log.read_text()


async def _until(check: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, _text(log)
        await asyncio.sleep(0.1)


async def _echoes(ws: ClientConnection, text: str) -> None:
    await ws.send(text)
    assert await ws.recv() == text


async def test_a_dead_workers_replacement_that_cannot_start_leaves_the_other_worker_serving(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    valid = config.read_text()
    log = tmp_path / "run.log"
    gateway = GatewayProcess([str(config)], cwd=tmp_path, workers=2, log=log, log_level="info")
    async with gateway:
        await _until(lambda: _text(log).count("Application startup complete.") == 2, log)
        async with await connect(gateway.url("/echo")) as kept:
            survivor = gateway.owner(_client_port(kept))
            os.kill(survivor, signal.SIGSTOP)  # the next handshake can only be taken by the other worker
            try:
                async with await connect(gateway.url("/echo")) as other:
                    victim = gateway.owner(_client_port(other))
            finally:
                os.kill(survivor, signal.SIGCONT)
            config.write_text("apis: [\n")  # an edit half done
            os.kill(victim, signal.SIGKILL)
            await _until(lambda: REPLACEMENT_FAILED in _text(log), log)

            assert gateway.process is not None and gateway.process.poll() is None, _text(log)
            await _echoes(kept, "still served")
            async with await connect(gateway.url("/echo")) as new:
                await _echoes(new, "new client")

            config.write_text(valid)
            os.kill(gateway.process.pid, signal.SIGHUP)  # the restart fills the vacant place
            await _until(lambda: len(_serving_workers(gateway)) == 2 and survivor not in gateway.workers(), log)
        code = await gateway.astop()
    output = _text(log)
    assert code == 0, output
    assert f"ERROR:    Child process [{victim}] died (killed by SIGKILL): its connections were dropped" in output
    assert output.count(REPLACEMENT_FAILED) == 1, output
    assert "stopping the parent process" not in output


STILL_FAILING = "replacing one that died, still fails to start (2 tries; its output is shown again when it changes)"


async def _replacement_fails_twice(
    tmp_path: Path, upstream_server: UpstreamServer, first: str, then: str, *, retry: float | None = None
) -> str:
    """``run --workers 2``'s output once a dead worker's replacement failed with the file ``first``, and its
    try again 10 s later (``retry`` seconds: :func:`~support.plugins.sooner_retry`) with the file ``then``."""
    document = build_config(upstream_server, path="/echo")
    if retry is not None:
        document["plugins"] = [sooner_retry(tmp_path, retry)]
    config = write_config(tmp_path, document)
    log = tmp_path / "run.log"
    gateway = GatewayProcess([str(config)], cwd=tmp_path, workers=2, log=log, log_level="info")
    async with gateway:
        await _until(lambda: _text(log).count("Application startup complete.") == 2, log)
        config.write_text(first)
        os.kill(min(_serving_workers(gateway)), signal.SIGKILL)
        await _until(lambda: REPLACEMENT_FAILED in _text(log), log)
        config.write_text(then)
        # The try again: said in a line of its own now, as the first failure was before.
        await _until(lambda: STILL_FAILING in _text(log) or _text(log).count(REPLACEMENT_FAILED) == 2, log)
        assert await gateway.astop() == 0, _text(log)
    return _text(log)


async def test_a_replacement_failing_again_the_same_way_says_so_in_one_line(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """The worker's start-up output (the file's problems, uvicorn's lines) is shown at the first failure
    only; the try again is one line, and the next is twice as far (it printed the same block every 10 s).
    (The first wait 2 s here: the file is the same at each try, so nothing needs the product's 10 s.)"""
    output = await _replacement_fails_twice(tmp_path, upstream_server, "apis: [\n", "apis: [\n", retry=2.0)
    assert output.count("not valid YAML") == 1, output
    assert output.count("Application startup failed. Exiting.") == 1, output
    assert output.count("Started server process") == 3, output  # the two workers, the first replacement
    assert output.count(REPLACEMENT_FAILED) == 1, output
    assert output.count(STILL_FAILING) == 1 and "tried again in 4 s" in output, output


async def test_a_replacement_failing_again_another_way_shows_the_new_problems(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """A file edited again, still invalid: what its worker says is new, so it is shown whole. (The product's
    10 s before the try again: the file is edited once the first failure is read from the log, before it.)"""
    output = await _replacement_fails_twice(tmp_path, upstream_server, "apis: [\n", "apis: 5\n")
    assert output.count("not valid YAML") == 1, output
    assert output.count("apis: Input should be a valid list (got 5)") == 1, output
    assert output.count("Application startup failed. Exiting.") == 2, output
    assert output.count(STILL_FAILING) == 1, output


HANGING_APP = """
import asyncio
import os

HANG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hang")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        while os.path.exists(HANG):  # a database the start-up waits on, down
            await asyncio.sleep(0.1)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
"""


def _two_workers_of_a_hanging_app(tmp_path: Path) -> tuple[GatewayProcess, Path]:
    """``run --workers 2`` (not started) of an in-process app whose lifespan start-up hangs while the file
    ``hang`` exists, and its log."""
    (tmp_path / "hanging.py").write_text(HANGING_APP)
    config = write_config(tmp_path, {"apis": [{"name": "api0", "path": "/ws", "upstreams": ["asgi:hanging:app"]}]})
    log = tmp_path / "run.log"
    return GatewayProcess([str(config)], cwd=tmp_path, workers=2, log=log, log_level="info"), log


async def test_a_replacement_whose_start_up_hangs_shows_what_it_says(tmp_path: Path) -> None:
    """A dead worker's replacement whose in-process app's lifespan start-up hangs: its output (the WARNING
    that the gateway waits for the app) was held in a file for as long as it hung, and nothing said why
    the place served no one. Now a start-up's output is held ``HOLD_LIMIT`` seconds at most."""
    gateway, log = _two_workers_of_a_hanging_app(tmp_path)
    async with gateway:
        await _until(lambda: _text(log).count("Application startup complete.") == 2, log)
        (tmp_path / "hang").touch()
        try:
            os.kill(min(_serving_workers(gateway)), signal.SIGKILL)
            await _until(lambda: "has not answered its lifespan start-up" in _text(log), log)
        finally:  # a worker hung in its start-up outlives the stop of its supervisor
            (tmp_path / "hang").unlink()
        await _until(lambda: _text(log).count("Application startup complete.") == 3, log)
        assert await gateway.astop() == 0, _text(log)
    output = _text(log)
    assert output.count("has not answered its lifespan start-up") == 1, output
    assert output.count("Waiting for application startup.") == 3, output  # shown once: not again at the release


async def test_a_replacement_killed_before_it_served_is_said_to_have_dropped_no_connection(tmp_path: Path) -> None:
    """A dead worker's replacement killed in its start-up (the OOM killer, as its app loads): the supervisor
    said "its connections were dropped" of a worker that never served one."""
    gateway, log = _two_workers_of_a_hanging_app(tmp_path)
    async with gateway:
        await _until(lambda: _text(log).count("Application startup complete.") == 2, log)
        first = _serving_workers(gateway)
        (tmp_path / "hang").touch()  # the replacement stays in its start-up
        try:
            served = min(first)
            os.kill(served, signal.SIGKILL)
            await _until(lambda: len(_serving_workers(gateway) - first) == 1, log)
            (starting,) = _serving_workers(gateway) - first
            os.kill(starting, signal.SIGKILL)
            await _until(lambda: f"Child process [{starting}] died" in _text(log), log)
        finally:
            (tmp_path / "hang").unlink()
        await _until(lambda: _text(log).count("Application startup complete.") == 3, log)
        assert await gateway.astop() == 0, _text(log)
    output = _text(log)
    assert f"Child process [{served}] died (killed by SIGKILL): its connections were dropped" in output, output
    assert (
        f"ERROR:    Child process [{starting}] died (killed by SIGKILL): it was still starting and had served no "
        "connection; starting another" in output
    ), output
