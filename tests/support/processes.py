"""A server command (``asgi-ws-gateway run``, ``uvicorn app:app``) as a real subprocess, its output captured.

Usage::

    with ServerProcess(["-m", "asgi_ws_gateway", "run", str(config)], port=port) as server:
        server.wait_ready()
        ...
    code = server.returncode            # after a SIGTERM at exit
    everything = server.output()        # stdout + stderr, every line the process wrote
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess"]

SRC = Path(__file__).resolve().parents[2] / "src"


class ServerProcess:
    """``python ARGS...`` with stdout and stderr in files (unbuffered), stopped with SIGTERM.

    Args:
        args: arguments after ``python``.
        port: the port the server listens on (``wait_ready`` connects to it).
        cwd: working directory (default: a fresh temporary one).
        env: extra environment variables.
    """

    def __init__(
        self, args: Sequence[str], *, port: int, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self._dir = tempfile.TemporaryDirectory()
        out = Path(self._dir.name)
        self.stdout_path, self.stderr_path = out / "stdout", out / "stderr"
        path = os.pathsep.join([str(SRC), *sys.path])
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd or out,
                env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdout=stdout,
                stderr=stderr,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the port accepts connections; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            assert code is None, f"the server exited with {code}:\n{self.output()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"the server did not start:\n{self.output()}"
                time.sleep(0.1)

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit status of a process that ends on its own (fails if it is still running after ``timeout``)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (once) and return the exit status; SIGKILL if it does not exit within ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait_exit(timeout)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.stop()
        self._dir.cleanup()
