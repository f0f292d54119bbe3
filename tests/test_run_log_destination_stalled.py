"""``run`` whose log destination takes nothing: a log collector stalled, ``run ... | sleep 1000``.

uvicorn's handlers wrote each line in the event loop's thread: once the pipe held 64 KiB (about 350
access lines) the next write blocked, and the whole process with it: no handshake answered (351 of 3,000
connections served, then none), and a SIGTERM never acted on. Now lines wait in a bounded queue for a
writer thread, and are dropped, counted, when it is full (:mod:`asgi_ws_gateway.server.log_writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from asgi_ws_gateway.log_losses import DROPPED_LINES
from asgi_ws_gateway.server import log_writer
from support.clients import connect
from support.configs import build_config, write_config
from support.pipes import StalledPipe
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

CONNECTIONS = 800
"""Access lines (about 200 bytes each) well past a pipe's 64 KiB."""


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
    reader = StalledPipe(tmp_path / "log.fifo")
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
    read, write = _full_pipe()
    stream = open(write, "w")  # noqa: SIM115  (closed below, with the handler)
    handler = log_writer.UnblockingStreamHandler(stream)
    logger = logging_logger(handler)
    emitted = 200  # the pipe full already: one line waits in the writer's write, 10 in the queue
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
    lines = _logged(received)
    assert _numbered_with_gaps_said(lines) == emitted
    assert "log line(s) dropped" in lines[-2] and lines[-1] == "after the stall"


def test_the_lines_dropped_are_said_and_counted_when_nothing_is_logged_after_the_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stall the last thing logged: the line saying how many were dropped waited for a next line, which
    never came; now the writer says it once it has written the queue out. ``ws_gateway.log.dropped`` counts
    each line lost (the line saying so goes to the destination that lost them)."""
    monkeypatch.setattr(log_writer, "QUEUE_LINES", 10)
    counted_before = DROPPED_LINES.value
    read, write = _full_pipe()
    stream = open(write, "w")  # noqa: SIM115  (closed below, with the handler)
    handler = log_writer.UnblockingStreamHandler(stream)
    logger = logging_logger(handler)
    emitted = 200
    for number in range(emitted):
        logger.warning("line %d %s", number, "x" * 1000)
    dropped = DROPPED_LINES.value - counted_before
    assert dropped > 0
    received = bytearray()
    draining = threading.Thread(target=lambda: _drain(read, received), daemon=True)
    draining.start()
    deadline = time.monotonic() + 10
    while _said_dropped(_logged(received)) < dropped and time.monotonic() < deadline:
        time.sleep(0.01)
    handler.close()
    stream.close()
    draining.join(10)
    lines = _logged(received)
    assert "log line(s) dropped" in lines[-1], lines[-3:]  # nothing logged after it: the writer said it
    assert _numbered_with_gaps_said(lines) == emitted
    assert _said_dropped(lines) == dropped


def _full_pipe() -> tuple[int, int]:
    """A pipe (read and write ends) full already of empty lines: its reader stalled before the first line."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    for chunk in (b"\n" * 4096, b"\n"):  # a write of at most PIPE_BUF bytes is all or nothing
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write, chunk)
    os.set_blocking(write, True)
    return read, write


def _logged(received: bytearray) -> list[str]:
    """The lines written after the pipe's empty lines."""
    return received.decode(errors="replace").lstrip("\n").splitlines()


def _numbered_with_gaps_said(lines: list[str]) -> int:
    """How many ``line N`` were logged: each gap in their numbers exactly where a line says how many were
    dropped, and by that many."""
    expected = 0
    for line in lines:
        if "log line(s) dropped" in line:
            expected += int(line.split()[1])
        elif line.startswith("line "):
            assert int(line.split()[1]) == expected, (line[:20], expected)
            expected += 1
    return expected


def logging_logger(handler: log_writer.UnblockingStreamHandler) -> logging.Logger:
    logger = logging.getLogger(f"test.log_writer.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk
    os.close(fd)


def _said_dropped(lines: list[str]) -> int:
    """The lines the output says were dropped."""
    return sum(int(line.split()[1]) for line in lines if "log line(s) dropped" in line)


def _written_all(handler: log_writer.UnblockingStreamHandler) -> bool:
    return handler._lines.unfinished_tasks == 0
