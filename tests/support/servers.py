"""Real servers on 127.0.0.1 for end-to-end tests, each in its own thread and event loop.

``UvicornServer`` serves an ASGI app (the gateway, or ``apps.echo_app``) with a chosen WebSocket
implementation; ``UpstreamServer`` (in ``upstream.py``, re-exported here) is the scripted
WebSocket upstream behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import uvicorn
import uvicorn.server

from .upstream import HandshakeRecord, UpstreamServer

__all__ = [
    "WS_IMPLS",
    "CountingListener",
    "HandshakeRecord",
    "UpstreamServer",
    "UvicornFactory",
    "UvicornServer",
    "WSImpl",
    "children",
    "free_port",
    "listens",
    "served_in_thread",
]

WSImpl = Literal["websockets-sansio", "wsproto", "websockets"]
WS_IMPLS: tuple[WSImpl, ...] = ("websockets-sansio", "wsproto")
"""The implementations end-to-end tests run over (``websockets`` is uvicorn's deprecated legacy one)."""

HOST = "127.0.0.1"


_Served = TypeVar("_Served", bound=socketserver.BaseServer)


def served_in_thread(server: _Served) -> Iterator[_Served]:
    """``server`` (a ``socketserver`` server, e.g. an ``http.server`` one) serving on a daemon thread while
    the caller iterates; shut down and closed after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0 directly)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or a child of it) holds a socket listening on TCP ``port``.

    A port that merely answers proves nothing: ``free_port`` hands out a port that was free a moment
    ago, and a server of the other test worker may bind it first. A test then talked to that server,
    and stopped its own before it had written a line (a CI run's empty output)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    listening.add(f"socket:[{fields[9]}]")
    for holder in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in listening for fd in Path(f"/proc/{holder}/fd").iterdir()):
                return True
    return False


def children(pid: int) -> list[int]:
    """Pids of the live (not zombie) children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


class _PromptPauses:
    """``asyncio`` as ``uvicorn.server`` sees it in the tests: the same, but no sleep there lasts over 5 ms.

    uvicorn's shutdown pauses 0.1 s after asking each connection to close, then polls every 0.1 s
    until they have: each stop of a server cost 0.1 s at least, and a run of the suite stops a few
    thousand. The shutdown still waits for the same things, in the same order, within the same
    ``timeout_graceful_shutdown``; it only notices sooner. (Its main loop is :class:`_PromptServer`'s.)
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(min(delay, 0.005), result)


uvicorn.server.asyncio = _PromptPauses()  # type: ignore[attr-defined, assignment]


class _PromptServer(uvicorn.Server):
    """uvicorn's server, whose main loop sees ``should_exit`` as soon as :meth:`wake` is called.

    uvicorn checks the flag on a 0.1 s tick; hundreds of servers stop per test run, so waiting for
    the tick adds up. Only the wait between ticks changes: the shutdown itself is uvicorn's own.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _woken: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    def wake(self) -> None:
        """Make the main loop check ``should_exit`` now (from any thread)."""
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to wake
                loop.call_soon_threadsafe(woken.set)


class UvicornServer:
    """A real uvicorn server for ``app`` on 127.0.0.1, running in a background thread.

    The listening socket is bound before the thread starts, so ``port`` is valid at once and there
    is no race for the port. Usage::

        with UvicornServer(echo_app, ws="wsproto") as server:
            url = server.url("/ws")

    Args:
        app: Any ASGI 3 application.
        ws: uvicorn's WebSocket implementation.
        lifespan: uvicorn's ``lifespan`` setting (``"auto"``, ``"on"`` or ``"off"``).
        timeout_graceful_shutdown: Seconds ``stop()`` lets open connections and tasks finish before
            uvicorn cancels them; ``None`` waits forever. Default 2.
        port: A port to listen on (default: a free one). A stopped server's port can be given to a
            new one: the socket is bound with ``SO_REUSEADDR``, as uvicorn binds its own.
        **config: Further ``uvicorn.Config`` keyword arguments (``ws_max_size``, ...).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        ws: WSImpl = "websockets-sansio",
        lifespan: Literal["auto", "on", "off"] = "auto",
        timeout_graceful_shutdown: int | None = 2,
        port: int = 0,
        **config: Any,
    ) -> None:
        self._sock = socket.socket()
        if port:  # only then: with port 0 the kernel could hand two such sockets one port
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port))
        self._port: int = self._sock.getsockname()[1]
        options: dict[str, Any] = {"log_level": "warning", "log_config": None, **config}
        self.config = uvicorn.Config(
            app,
            host=HOST,
            port=self._port,
            ws=ws,
            lifespan=lifespan,
            timeout_graceful_shutdown=timeout_graceful_shutdown,
            **options,
        )
        self.server = _PromptServer(self.config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._port

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        """Return ``scheme://127.0.0.1:port`` + ``path``."""
        return f"{scheme}://{HOST}:{self._port}{path}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once uvicorn reports ``started``.

        Raises:
            RuntimeError: If uvicorn failed or did not start within ``timeout`` seconds.
        """
        if self._thread is not None:
            raise RuntimeError("UvicornServer.start() called twice")
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on port {self._port}") from self._error
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit (as on SIGTERM) and join its thread; force exit after ``timeout`` s."""
        thread, self._thread = self._thread, None
        if thread is None:
            self._sock.close()
            return
        self.server.should_exit = True
        self.server.wake()
        grace = self.config.timeout_graceful_shutdown or 0.0
        thread.join(timeout + grace)
        if thread.is_alive():
            self.server.force_exit = True
            thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"uvicorn on port {self._port} did not stop")

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit on lifespan failure must not vanish silently.
            self._error = exc
        finally:
            self._sock.close()

    def __enter__(self) -> UvicornServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class UvicornFactory(Protocol):
    """Type of the ``uvicorn_server`` fixture: start ``app`` and return the running server."""

    def __call__(self, app: Callable[..., Awaitable[None]], *, ws: WSImpl = ..., **config: Any) -> UvicornServer: ...


class CountingListener:
    """A TCP listener that counts the connections it accepts (and closes them): what a connect reached."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family)
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            peer.close()

    def close(self) -> None:
        self.socket.close()
        self._thread.join(5)
