"""Processes the bench starts: pinned, waited for on their port, and measured from the outside.

CPU time and RSS are read for the whole process tree (nginx's master and worker, uvicorn's
supervisor and workers), so a path is charged for everything it runs; CPU time from each process's
CPU-time clock (:mod:`.cpu_clock`), to the nanosecond, not psutil's 10 ms ticks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

from .cpu_clock import process_cpu_seconds

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    """Return once ``port`` accepts a TCP connection; raise if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening\n{tail}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                if _listens(process.pid, port):  # not another process that took the port first
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:g} s ({process.args!r})")


def _listens(pid: int, port: int) -> bool:
    """Whether ``pid`` or a descendant listens on ``port``. A port free a moment ago may be bound first by
    another process (a test's server, another path started at once): that one answering proves nothing."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for proc in tree:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def taken(exc: RuntimeError) -> bool:
    """Whether a start failed because another process bound its port first (start again on another)."""
    return "address already in use" in str(exc).lower()  # (uvicorn writes it in lower case, Python's errno text not)


class Service:
    """A server process started for the bench, stopped on exit from the ``with`` block.

    Args:
        name: how results and logs call it.
        argv: the command (already prefixed with ``taskset`` if it is to be pinned).
        port: the port it listens on; :meth:`start` waits until it accepts connections.
        log: file that receives its stdout and stderr.
        env: extra environment variables.
    """

    def __init__(
        self, name: str, argv: Sequence[str], *, port: int, log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def start(self, timeout: float = 20.0) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self._ps = psutil.Process(self.process.pid)
        wait_for_port(self.port, self.process, timeout, self.log)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    def _tree(self) -> list[psutil.Process]:
        if self._ps is None:
            raise RuntimeError(f"{self.name} is not started")
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the process and its descendants."""
        total = 0.0
        for proc in self._tree():
            precise = process_cpu_seconds(proc.pid)
            if precise is not None:
                total += precise
                continue
            try:
                times = proc.cpu_times()  # in clock ticks: what a C library without the clock leaves
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the process and its descendants, in bytes."""
        total = 0
        for proc in self._tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, then SIGKILL after ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def __enter__(self) -> Service:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["HOST", "Service", "free_port", "wait_for_port"]
