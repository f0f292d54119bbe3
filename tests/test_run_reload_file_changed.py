"""A reload that fails leaves ``ws_gateway.config.file_changed`` at 1 until the file is what the workers serve.

A real ``asgi-ws-gateway run --workers 2`` exporting its metrics to a real OTLP receiver. Its file is made
invalid, then deleted, each followed by a SIGHUP: each time the old workers serve on, and the log says so
in one ERROR naming the problem (its field path) and one line that the restart was aborted. Before, that
was all: no metric told an operator that the running configuration was not the file's. Now the workers'
gauge is 1 from the edit until the file holds the bytes they serve again, and a reload that works gives
workers reporting 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from asgi_ws_gateway.config import served_file
from asgi_ws_gateway.loading import read_regular_file
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import ServerProcess, ready_server
from support.signals import exporting_to
from support.upstream import UpstreamServer

CHANGED = n.CONFIG_FILE_CHANGED.name


def _next_value(receiver: OtlpReceiver, value: int, timeout: float = 30) -> None:
    """Wait for a point of ``ws_gateway.config.file_changed`` with ``value`` exported from now on."""
    seen = len(receiver.points())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        points = receiver.points()
        if any(p.metric == CHANGED and p.value == value for p in points[seen:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {CHANGED} point of {value} in {timeout} s")


async def _echo(server: ServerProcess) -> None:
    async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_a_failed_reload_is_a_gauge_until_the_file_is_the_served_one(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    served = config.read_bytes()
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--workers", "2", "--log-level", "info"]
    with (
        OtlpReceiver() as receiver,
        ready_server(lambda port: [*command, "--port", str(port)], env=exporting_to(receiver)) as server,
    ):
        await asyncio.to_thread(server.wait_for_line, "Application startup complete.", times=2)
        await asyncio.to_thread(_next_value, receiver, 0)

        config.write_bytes(served + b"bogus: 1\n")  # an edit that fails validation
        await asyncio.to_thread(_next_value, receiver, 1)  # edited, not reloaded: already not the file's
        server.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for_line, "aborting the restart")
        await asyncio.to_thread(_next_value, receiver, 1)
        await _echo(server)  # the old workers serve on

        config.unlink()  # deleted
        server.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(server.wait_for_line, "aborting the restart", times=2)
        await asyncio.to_thread(_next_value, receiver, 1)
        await _echo(server)

        config.write_bytes(served)  # the file the workers serve again
        await asyncio.to_thread(_next_value, receiver, 0)
        config.write_bytes(served + b"# reloaded\n")  # valid, other bytes
        await asyncio.to_thread(_next_value, receiver, 1)
        server.process.send_signal(signal.SIGHUP)  # a reload that works: new workers, reading this file
        await asyncio.to_thread(server.wait_for_line, "Application startup complete.", times=4)
        await asyncio.to_thread(_next_value, receiver, 0)
        await _echo(server)
        assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0, server.output()
        output = server.output()
    # One ERROR naming the problem per failed reload, and one that it was aborted: not one per worker.
    assert output.count("ERROR:    invalid gateway configuration") == 2, output
    assert output.count("bogus: unknown field") == 1, output
    assert output.count("cannot read file") == 1, output
    assert output.count("aborting the restart") == 2, output


def test_the_file_is_read_again_only_when_its_stat_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection costs a ``stat``: the file is read again (and hashed) only when its inode, size or times moved."""
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"apis: []\n")
    reads: list[Path] = []

    def counted(file: Path) -> bytes:
        reads.append(file)
        return read_regular_file(file)

    monkeypatch.setattr(served_file, "read_regular_file", counted)
    served = served_file.ServedFile(path, served_file.digest(path.read_bytes()))
    assert [served.changed() for _ in range(3)] == [False, False, False]
    assert len(reads) == 1
    path.write_bytes(b"apis: [] \n")
    assert served.changed() and served.changed()
    assert len(reads) == 2
    path.unlink()
    assert served.changed()
    path.write_bytes(b"apis: []\n")
    assert not served.changed()
    assert len(reads) == 3
