"""``run --workers 2``: what a dead worker's replacement writes as it starts, when its start-up fails.

Its start-up output is held until it serves, and its supervisor shows a failure once, not at each try
again (tests/test_run_worker_replacement.py). Only its standard error was held: a plugin's ``print()``
(standard output) came out at every try. And the supervisor read what was held whole: a plugin that wrote
megabytes as it started had them read into its memory and written to the log, at every new failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.server.startup_output import SHOWN_HEAD, SHOWN_TAIL
from support.configs import build_config, write_config
from support.pipes import FILLER, StalledPipe
from support.plugins import sooner_retry
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

REPLACEMENT_FAILED = "replacing one that died, failed to start; 1 worker(s) go on serving"
STILL_FAILING = "still fails to start (2 tries"

PLUGIN = """
import os
import sys

print("the plugin is loading", flush=True)  # standard output, as a plugin's print() goes
if os.path.exists("flood"):
    for line in range(20 * 1024):
        sys.stderr.write(f"line {line} of a plugin's start-up chatter " + "x" * 980 + "\\n")  # 1 KiB a line
    sys.stderr.flush()
if os.path.exists("broken"):
    raise RuntimeError("the plugin cannot load: its dependency is missing")
"""


def _serving_workers(gateway: GatewayProcess) -> set[int]:
    return {pid for pid in gateway.workers() if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _end(log: Path) -> str:
    return log.read_bytes()[-5000:].decode(errors="replace")


async def _until(check: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, _end(log)
        await asyncio.sleep(0.1)


def _gateway(
    tmp_path: Path,
    upstream_server: UpstreamServer,
    stdout_log: Path | None = None,
    log: Path | None = None,
    retry: float | None = None,
) -> GatewayProcess:
    """``run --workers 2`` with the chatty plugin; ``retry``: :func:`~support.plugins.sooner_retry`'s wait."""
    (tmp_path / "chatty_plugin.py").write_text(PLUGIN)
    plugins = ["chatty_plugin"] + ([] if retry is None else [sooner_retry(tmp_path, retry)])
    config = write_config(tmp_path, build_config(upstream_server, path="/echo", plugins=plugins))
    log = tmp_path / "run.log" if log is None else log
    return GatewayProcess([str(config)], cwd=tmp_path, workers=2, log=log, stdout_log=stdout_log, log_level="info")


async def test_a_replacements_standard_output_is_held_with_its_standard_error(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Standard output to a file of its own: the plugin's line is shown with the first failure, not again
    with the same failure at the try after (it came out at each try, ahead of the lines held)."""
    out = tmp_path / "run.out"
    log = tmp_path / "run.log"
    gateway = _gateway(tmp_path, upstream_server, stdout_log=out, retry=2.0)  # the file the same at each try
    async with gateway:
        await _until(lambda: log.read_text().count("Application startup complete.") == 2, log)
        (tmp_path / "broken").touch()
        os.kill(min(_serving_workers(gateway)), signal.SIGKILL)
        await _until(lambda: STILL_FAILING in log.read_text(), log)  # the try again, 2 s later
        assert await gateway.astop() == 0, log.read_text()
    # run itself (it checks the file first), its two workers, the first failure; not the try again
    assert out.read_text().count("the plugin is loading") == 4, out.read_text()
    assert log.read_text().count("the plugin cannot load") == 1, log.read_text()


async def test_a_start_up_that_wrote_megabytes_is_shown_by_its_head_and_tail(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """20 MB written to standard error by a plugin as the replacement started, then its import failed: the
    log shows the first lines (which process, what it started with) and the last (what failed), and says
    how much it left out between them."""
    log = tmp_path / "run.log"
    gateway = _gateway(tmp_path, upstream_server)
    async with gateway:
        await _until(lambda: log.read_text().count("Application startup complete.") == 2, log)
        before = log.stat().st_size
        (tmp_path / "flood").touch()
        (tmp_path / "broken").touch()
        os.kill(min(_serving_workers(gateway)), signal.SIGKILL)
        await _until(lambda: REPLACEMENT_FAILED in log.read_text(), log)
        assert await gateway.astop() == 0
    output = log.read_bytes()
    assert len(output) - before < SHOWN_HEAD + SHOWN_TAIL + 10_000, len(output) - before
    shown = output[before:].decode()
    assert "line 0 of a plugin's start-up chatter" in shown
    assert "line 20479 of a plugin's start-up chatter" in shown  # the tail: the last lines before the failure
    assert "line 10000 of a plugin's start-up chatter" not in shown
    assert "bytes of this worker's start-up output omitted ..." in shown, shown[-3000:]
    assert "the plugin cannot load: its dependency is missing" in shown, shown[-3000:]
    assert shown.count("the plugin is loading") == 1, shown[:3000]


def _writing_to_a_pipe(pid: int) -> bool:
    """Whether a thread of process ``pid`` waits in a write to a pipe (one that takes nothing)."""
    try:
        return any("pipe_write" in (task / "wchan").read_text() for task in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


@pytest.mark.parametrize("replacement", ["serves", "fails"])
async def test_a_log_reader_that_stalled_holds_neither_a_replacement_nor_its_supervisor(
    tmp_path: Path, upstream_server: UpstreamServer, replacement: str
) -> None:
    """A replacement's held start-up output was written by the thread that had it. To a destination that took
    nothing (a log collector stalled), that write held the replacement's event loop before its first connection,
    where it never acted on SIGTERM; or, shown by the supervisor as the replacement failed, the supervisor itself,
    and every signal with it: run never stopped (killed 15 s after its SIGTERM)."""
    pipe = StalledPipe(tmp_path / "log.fifo")
    gateway = _gateway(tmp_path, upstream_server, log=pipe.path)
    try:
        async with gateway:
            first = _serving_workers(gateway)
            pipe.fill()  # the reader stalled long ago: every write to the pipe waits from now on
            if replacement == "fails":
                (tmp_path / "broken").touch()
            os.kill(min(first), signal.SIGKILL)
            new: set[int] = set()
            deadline = time.monotonic() + 60
            while True:  # its output written out: held by a thread of the replacement, or its supervisor's to show
                assert gateway.process is not None and gateway.process.poll() is None
                new |= _serving_workers(gateway) - first
                if replacement == "serves" and any(map(_writing_to_a_pipe, new)):
                    break
                if replacement == "fails" and new and not new & _serving_workers(gateway):
                    break
                assert time.monotonic() < deadline, (replacement, new)
                await asyncio.sleep(0.05)
            gateway.process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(gateway.process.wait, 30)
            except subprocess.TimeoutExpired:
                code = None  # held: let go once the pipe is read (below), then killed as the test ends
    finally:
        pipe.close()  # the reader is back: whatever still waited writes, and ends
    assert code == 0, pipe.data.rpartition(FILLER)[2][-3000:].decode(errors="replace")
