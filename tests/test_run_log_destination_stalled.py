"""``run`` whose log destination takes nothing: a log collector stalled, ``run ... | sleep 1000``.

uvicorn's handlers wrote each line in the event loop's thread: once the pipe held 64 KiB (about 350
access lines) the next write blocked, and the whole process with it: no handshake answered (351 of 3,000
connections served, then none), and a SIGTERM never acted on. Now lines wait in a bounded queue for a
writer thread, and are dropped, counted, when it is full (:mod:`asgi_ws_gateway.server.log_writer`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from asgi_ws_gateway.server import log_writer
from support.clients import connect
from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

CONNECTIONS = 800
"""Access lines (about 200 bytes each) well past a pipe's 64 KiB."""


class _Reader:
    """Reads the pipe at ``path`` once :meth:`start` is called; until then nobody does (it is only open)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open, so the gateway's open for writing returns
        self.data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.set_blocking(self.fd, True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk

    def close(self) -> None:
        if self._thread.ident is not None:
            self._thread.join(10)
        os.close(self.fd)


async def _echo(url: str) -> None:
    async with asyncio.timeout(10):  # a stalled process answers none
        async with await connect(url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_log_pipe_nobody_reads_does_not_stop_serving(
    tmp_path: Path, upstream_server: UpstreamServer, workers: int
) -> None:
    config = write_config(tmp_path, build_config(upstream_server, path="/echo"))
    reader = _Reader(tmp_path / "log.fifo")
    gateway = GatewayProcess([str(config)], cwd=tmp_path, workers=workers, log=tmp_path / "log.fifo", log_level="info")
    try:
        async with gateway:
            for _ in range(CONNECTIONS):
                await _echo(gateway.url("/echo"))
            reader.start()  # the collector is back
            await _echo(gateway.url("/echo"))
            code = await gateway.astop()
    finally:
        reader.close()
    output = reader.data.decode()
    assert code == 0, output[-3000:]
    assert output.count('"WebSocket /echo" 101 echo closed by client') == CONNECTIONS + 1, output[-3000:]
    assert "Finished server process" in output, output[-3000:]


def test_lines_a_full_pipe_does_not_take_are_dropped_counted_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue full: each line dropped is counted, and the first that finds room again is preceded by a
    line saying how many were lost; none blocks the thread that logs."""
    monkeypatch.setattr(log_writer, "QUEUE_LINES", 10)
    read, write = os.pipe()
    stream = open(write, "w")  # noqa: SIM115  (closed below, with the handler)
    handler = log_writer.UnblockingStreamHandler(stream)
    logger = logging_logger(handler)
    emitted = 200  # 1 KiB lines: 64 fill the pipe, 10 the queue
    for number in range(emitted):
        logger.warning("line %d %s", number, "x" * 1000)
    assert handler.dropped > 0
    received = bytearray()
    draining = threading.Thread(target=lambda: _drain(read, received), daemon=True)
    draining.start()
    deadline = time.monotonic() + 10
    while not _written_all(handler) and time.monotonic() < deadline:
        time.sleep(0.01)
    logger.warning("after the stall")
    handler.flush()
    handler.close()
    stream.close()
    draining.join(10)
    lines = received.decode().splitlines()
    notices = [line for line in lines if "log line(s) dropped" in line]
    assert len(notices) == 1, notices
    dropped = int(notices[0].split()[1])
    assert len(lines) - 2 + dropped == emitted, (len(lines), dropped)
    assert lines[-2] == notices[0] and lines[-1] == "after the stall"


def logging_logger(handler: log_writer.UnblockingStreamHandler) -> logging.Logger:
    logger = logging.getLogger(f"test.log_writer.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk
    os.close(fd)


def _written_all(handler: log_writer.UnblockingStreamHandler) -> bool:
    return handler._lines.unfinished_tasks == 0
