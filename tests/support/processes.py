"""Server commands as real subprocesses.

``GatewayProcess``: ``asgi-ws-gateway run`` with uvicorn workers, and which worker holds a socket.
``standalone``: ``asgi-ws-gateway run --management ...``, ready once its management API answers.
``ServerProcess``: any server command (``asgi-ws-gateway run``, ``uvicorn app:app``), its output captured::

    with ServerProcess(["-m", "asgi_ws_gateway", "run", str(config)], port=port) as server:
        server.wait_ready()
        ...
    code = server.returncode            # after a SIGTERM at exit
    everything = server.output()        # stdout + stderr, every line the process wrote

``cli``: the command line as a process. ``main_in_process`` and ``in_process_cli``: its ``cli.main`` in this process,
for tests of what a command answers (a process's start was most of such a call's time).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx2
import pytest

from asgi_ws_gateway.management import ManagementAPIError, ManagementClient

from .configs import build_config, write_config
from .management import TOKEN
from .servers import children, free_port, listens

__all__ = [
    "EXE",
    "Cli",
    "GatewayProcess",
    "ServerProcess",
    "Standalone",
    "cli_env",
    "in_process_cli",
    "main_in_process",
    "standalone",
]

EXE = Path(sys.executable).parent / "asgi-ws-gateway"


class GatewayProcess:
    """``asgi-ws-gateway run ARGS --port P`` started in ``cwd``; use with ``async with``.

    Entering waits (up to ``start_timeout`` seconds) until ``workers`` worker processes live and
    the port accepts connections; leaving sends SIGTERM and waits.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        workers: int,
        start_timeout: float = 60.0,  # the product gives a worker as long (WORKER_START_GRACE)
        open_files: tuple[int, int] | None = None,
        log: Path | None = None,
        stdout_log: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.port = free_port()
        self.run_args = [*args]
        self.open_files = open_files  # the supervisor's (soft, hard) open-file limit
        self.log = log  # where its output goes (default: this process's)
        self.stdout_log = stdout_log  # where its standard output goes instead, if not with the rest in log
        # One worker is served by the supervisor itself: uvicorn forks worker processes only for two or more.
        self.expected_workers = workers if workers > 1 else 0
        self.start_timeout = start_timeout
        self.workers_given, self.log_level = workers, log_level
        self.args = self._command()
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        return [str(EXE), "run", *self.run_args, "--port", str(self.port), "--workers", str(self.workers_given),
                "--log-level", self.log_level]  # fmt: skip

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> subprocess.Popen[bytes]:
        """Start the supervisor (without this process's ASGI_WS_GATEWAY_* settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASGI_WS_GATEWAY_")}
        args = self.args
        if self.open_files is not None:
            # util-linux's prlimit sets the limit and execs the gateway (same pid). Not a preexec_fn: Python
            # run in a forked child of this process can abort there (gRPC's fork handlers, when a test's
            # OTLP receiver runs in it).
            args = ["prlimit", "--nofile={}:{}".format(*self.open_files), *args]
        output = None if self.log is None else self.log.open("ab")
        stdout = output if self.stdout_log is None else self.stdout_log.open("ab")
        try:
            self.process = subprocess.Popen(args, cwd=self.cwd, env=env, stdout=stdout, stderr=output)
        finally:
            for file in {output, stdout} - {None}:
                assert file is not None
                file.close()  # the child has its own copy
        return self.process

    async def __aenter__(self) -> GatewayProcess:
        for attempt in range(PORT_ATTEMPTS):
            self.process = self.start()
            deadline = time.monotonic() + self.start_timeout
            try:
                while (
                    len(self.workers()) < self.expected_workers
                    or not listens(self.process.pid, self.port)
                    or not await _answers(self.port)
                ):
                    if self.process.poll() is not None and _taken(self.port) and attempt + 1 < PORT_ATTEMPTS:
                        break  # its free port was bound by another test worker's server first: another port
                    assert self.process.poll() is None, f"the gateway exited with {self.process.returncode}"
                    assert time.monotonic() < deadline, "the gateway did not start"
                    await asyncio.sleep(0.2)
                else:
                    return self
            except BaseException:
                self.stop()
                raise
            self.port = free_port()
            self.args = self._command()
        raise AssertionError("unreachable")  # the last attempt returned or raised

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    async def astop(self) -> int | None:
        """:meth:`stop` without blocking the event loop: peers served on it (a test's own upstream) answer
        the gateway's closing handshakes at shutdown, instead of being waited for until SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            while self.process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a process, not an event
                await asyncio.sleep(0.02)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        return None if self.process is None else self.process.returncode

    def workers(self) -> set[int]:
        """Pids of the live worker processes (children of the supervisor)."""
        assert self.process is not None
        return set(children(self.process.pid))

    def owner(self, client_port: int) -> int:
        """Pid of the worker holding the server side of the connection from ``client_port``."""
        inodes: dict[int, int] = {}
        for pid in self.workers():
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[int(target[8:-1])] = pid
            except OSError:
                continue
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local_port, remote_port = int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)
            if local_port == self.port and remote_port == client_port and int(parts[9]) in inodes:
                return inodes[int(parts[9])]
        raise LookupError(f"no worker holds the connection from port {client_port}")

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 15 s); the exit status (``None`` if it never started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return None if self.process is None else self.process.returncode

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended (after leaving the ``async with``)."""
        return None if self.process is None else self.process.returncode


async def _answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


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

    def wait_ready(self, timeout: float = 60) -> None:  # a loaded CI machine: 30 s was missed
        """Wait until the port accepts connections; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            assert code is None, f"the server exited with {code}:\n{self.output()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    if listens(self.process.pid, self.port):  # not another server that took the port
                        return
            except OSError:
                pass
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

    def wait_for_line(self, text: str, *, times: int = 1, timeout: float = 30) -> None:
        """Wait until ``text`` appears ``times`` times in the output; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < times:
            assert self.process.poll() is None, f"the process exited with {self.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.stop()
        self._dir.cleanup()


PORT_ATTEMPTS = 3
"""Ports a server is started on before its failure to bind one is its test's failure."""


def _taken(port: int) -> bool:
    """Whether another socket holds ``port`` as a server would bind it (``SO_REUSEADDR``, as uvicorn's): a
    free port is free when it is chosen, not when a server binds it a second later."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def ready_server(
    command: Callable[[int], Sequence[str]], *, attempts: int = 3, cwd: Path | None = None,
    env: dict[str, str] | None = None, timeout: float = 30,
) -> ServerProcess:  # fmt: skip
    """``ServerProcess(command(port))`` on a free port, ready (within ``timeout`` seconds); on another port when
    that one was taken.

    A free port is free when it is chosen, not when the server binds it a second later: a server
    started meanwhile by the other test worker may take it (``Address already in use``). A server
    that fails for any other reason fails here, its output in the message.
    """
    for attempt in range(attempts):
        port = free_port()
        server = ServerProcess(command(port), port=port, cwd=cwd, env=env)
        try:
            server.wait_ready(timeout)
        except AssertionError:
            taken = "Address already in use" in server.output()
            server.__exit__(None, None, None)
            if taken and attempt + 1 < attempts:
                continue
            raise
        return server
    raise AssertionError("unreachable")  # the last attempt returned or raised


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for the command line: this checkout's package first, the admin token set."""
    # no empty entry: Python reads one as the working directory (tests/test_attack_local_import_path.py)
    paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("ASGI_WS_GATEWAY_URL", None)
    return {**env, "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN, **extra}


async def cli(*args: str, stdin: str | None = None, **env: str) -> tuple[int, str, str]:
    """Run ``asgi-ws-gateway ARGS`` (``env``: more variables; ``stdin``: its input, else none); returns
    (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(EXE), *args, stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(**env),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate(None if stdin is None else stdin.encode())
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


Cli = Callable[..., Awaitable[tuple[int, str, str]]]


def _served(*args: object, **kwargs: object) -> int:
    raise AssertionError("main_in_process: the command went on to serve")


def main_in_process(*args: str) -> tuple[int, str, str]:
    """``asgi-ws-gateway ARGS`` (a command that serves nothing: ``check``, a refusal) answered by ``cli.main`` in
    this process: (exit code, stdout, stderr). The interpreter's start and imports were most of such a call's time.
    What the process would write to stderr is here: a WARNING or worse logged with no handler configured (Python's
    last resort in a process) goes to its stderr too. A command that would serve fails the test at once (it would
    serve in this process until the test's timeout)."""
    from asgi_ws_gateway.cli import main
    from asgi_ws_gateway.server import serving

    out, err = io.StringIO(), io.StringIO()
    last_resort = logging.StreamHandler(err)
    last_resort.setLevel(logging.WARNING)
    path = list(sys.path)  # main puts the working directory first, as uvicorn does
    environ = dict(os.environ)  # run sets its workers' variables before some of its refusals
    logging.getLogger().addHandler(last_resort)
    serve, serving.serve = serving.serve, _served
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # --help, a usage error
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        serving.serve = serve
        logging.getLogger().removeHandler(last_resort)
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(environ)
    return code, out.getvalue(), err.getvalue()


def in_process_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """:func:`cli` answered by ``cli.main`` in this process, in a thread (it runs an event loop of its own; the
    test's servers run in this one): the interpreter's start and imports were most of a command's time. For a
    test of what a command answers, not of the console script's wiring (a call or two by :func:`cli` keeps that).
    Without ``stdin``; ``env`` set for the one call; a traceback is an exception here."""
    from asgi_ws_gateway.cli import main

    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the working directory first, as uvicorn does
    monkeypatch.delenv("ASGI_WS_GATEWAY_URL", raising=False)  # the environment cli_env gives a process

    def exit_code(args: list[str]) -> int:
        try:
            return main(args)
        except SystemExit as exc:  # --help, a usage error
            return exc.code if isinstance(exc.code, int) else 1

    async def run(*args: str, **env: str) -> tuple[int, str, str]:
        with monkeypatch.context() as scoped:
            for name, value in {"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN, **env}.items():
                scoped.setenv(name, value)
            capsys.readouterr()
            async with asyncio.timeout(60):
                code = await asyncio.to_thread(exit_code, list(args))
            out, err = capsys.readouterr()
        return code, out, err

    return run


@dataclass
class Standalone:
    client: ManagementClient
    port: int
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_gateway"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def traceback_free_gateway(directory: Path) -> AsyncIterator[GatewayProcess]:
    """One ``run`` worker on the default test config (``support.configs.build_config``), logging at INFO into
    ``directory``; its log holds no traceback when it stops."""
    config = write_config(directory, build_config())
    log = directory / "gateway.log"
    async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
        yield process
    assert "Traceback" not in log.read_text()


@contextlib.asynccontextmanager
async def standalone(
    config: Path, *args: str, workers: int = 1, management_port: int | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[Standalone]:
    """``asgi-ws-gateway run CONFIG --management /_gateway ...`` (or ``--management-port``), once ready."""
    port = free_port()
    where = ["--management-port", str(management_port)] if management_port else ["--management", "/_gateway"]
    process = await asyncio.create_subprocess_exec(
        str(EXE), "run", str(config), "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        *where, *args, cwd=config.parent, env=cli_env(**(env or {})),
    )  # fmt: skip
    base = f"http://127.0.0.1:{management_port}" if management_port else f"http://127.0.0.1:{port}/_gateway"
    client = ManagementClient(base, token=TOKEN)
    try:
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(httpx2.TransportError, ManagementAPIError):
                    if await client.ready():
                        break
                assert process.returncode is None, "the gateway exited"
                await asyncio.sleep(0.1)
        yield Standalone(client, port, process)
    finally:
        await client.aclose()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await process.wait()
