"""Ctrl+C (SIGINT to every process of the group) while ``run --workers 2``'s workers are still starting.

Each worker still importing the gateway printed a KeyboardInterrupt traceback, 30 lines apiece, the two
interleaved, for an interrupt the operator meant. Now a worker starts with SIGINT ignored until its server
takes SIGINT over; its supervisor, which got the same Ctrl+C, stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.configs import build_config, write_config
from support.servers import children, free_port
from support.upstream import UpstreamServer


def _spawned(pid: int) -> list[int]:
    """The supervisor's workers (not multiprocessing's resource tracker), while they start."""
    found = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--port",
               str(free_port()), "--log-level", "info"]  # fmt: skip
    with log.open("wb") as output:
        # A session of its own: the signal goes to its group, as a terminal's Ctrl+C does, not to the tests'.
        process = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=output, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(_spawned(process.pid)) < 2:  # started, and importing the gateway for a second or so
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    assert "Received SIGINT, exiting." in text, text
    assert "Application startup complete." not in text, text  # it came while they started
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert code == 0, text
