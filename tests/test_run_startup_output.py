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
import time
from collections.abc import Callable
from pathlib import Path

from asgi_ws_gateway.server.startup_output import SHOWN_HEAD, SHOWN_TAIL
from support.configs import build_config, write_config
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


def _gateway(tmp_path: Path, upstream_server: UpstreamServer, stdout_log: Path | None = None) -> GatewayProcess:
    (tmp_path / "chatty_plugin.py").write_text(PLUGIN)
    config = write_config(tmp_path, build_config(upstream_server, path="/echo", plugins=["chatty_plugin"]))
    return GatewayProcess(
        [str(config)], cwd=tmp_path, workers=2, log=tmp_path / "run.log", stdout_log=stdout_log, log_level="info"
    )


async def test_a_replacements_standard_output_is_held_with_its_standard_error(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Standard output to a file of its own: the plugin's line is shown with the first failure, not again
    with the same failure at the try after (it came out at each try, ahead of the lines held)."""
    out = tmp_path / "run.out"
    log = tmp_path / "run.log"
    gateway = _gateway(tmp_path, upstream_server, stdout_log=out)
    async with gateway:
        await _until(lambda: log.read_text().count("Application startup complete.") == 2, log)
        (tmp_path / "broken").touch()
        os.kill(min(_serving_workers(gateway)), signal.SIGKILL)
        await _until(lambda: STILL_FAILING in log.read_text(), log)  # the try again, 10 s later
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
