"""Redis for tests: the shared server's URL with a unique key prefix, private servers to stop at will,
and a proxy that makes Redis's answers late."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.state.redis import RedisState

from .servers import listens

__all__ = [
    "SHARED_REDIS",
    "STORES",
    "DelayingProxy",
    "RedisServer",
    "redis_available",
    "redis_state",
    "shared_prefix",
    "unique_prefix",
]

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def redis_available(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _answers(port: int) -> bool:
    """Whether a server on ``port`` answers at all (with PONG, or that it wants a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def unique_prefix() -> str:
    """A key namespace no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def shared_prefix() -> AsyncIterator[tuple[Redis, str]]:
    """A client of the shared Redis (strings decoded) and a prefix of its own; the prefix's keys deleted after."""
    client = Redis.from_url(SHARED_REDIS, decode_responses=True)
    prefix = unique_prefix()
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_state() -> AsyncIterator[RedisState]:
    """The shared Redis as the gateway's limit store, under a prefix of its own; its keys deleted after."""
    store = RedisState(SHARED_REDIS, prefix=unique_prefix())
    try:
        yield store
    finally:
        client = Redis.from_url(SHARED_REDIS)
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.aclose()


class RedisServer:
    """A private ``redis-server`` on a free port (nothing saved to disk); ``stop()`` kills it, ``start()`` again.

    ``args``: more of ``redis-server``'s options (e.g. ``--requirepass``, ``--unixsocket``).
    """

    def __init__(self, *args: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self._process = subprocess.Popen(
            # --dir: a replica's full sync writes an RDB file even with --save "": never into the checkout
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (_answers(self.port) and listens(self._process.pid, self.port)):  # its own, not another's
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class DelayingProxy:
    """A TCP proxy on a free port to a Redis server whose answers each wait ``delay`` seconds.

    Requests go through at once, so Redis runs a command when it is sent and only the answer is
    late: a latency spike as a client sees it. ``delay`` (default 0) may be changed at any time;
    data already waiting keeps the delay it was given. ``settle()`` waits until every answer Redis
    has given is through, so a delay set next applies to later commands only. Runs in its own thread
    and event loop::

        with DelayingProxy() as proxy:
            proxy.delay = 1.0  # a store with timeout 0.5 gives up before Redis's answer arrives
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self.target = (host, port)
        self.delay = 0.0
        self.port = 0
        self._last_traffic = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="redis-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        pipes: set[asyncio.Task[None]] = set()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool) -> None:
            try:
                while data := await reader.read(65536):
                    self._last_traffic = time.monotonic()
                    if delayed and self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
                    self._last_traffic = time.monotonic()
            except OSError:
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                redis_reader, redis_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            for direction in (pipe(reader, redis_writer, False), pipe(redis_reader, writer, True)):
                task = asyncio.create_task(direction)
                pipes.add(task)  # referenced until done: a pending task is otherwise collectable
                task.add_done_callback(pipes.discard)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def settle(self, quiet: float = 0.3) -> None:
        """Return once nothing has passed either way for ``quiet`` seconds.

        Redis answers within a millisecond of running a command; a client that saw a command's
        effect (a lease gone) may still be waiting for its answer, which a delay set now would hold
        back: a timeout, and a store that then stops calling Redis for a while.
        """
        async with asyncio.timeout(10):
            while (idle := time.monotonic() - self._last_traffic) < quiet:  # noqa: ASYNC110 - another thread's clock
                await asyncio.sleep(quiet - idle)

    def __enter__(self) -> DelayingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Redis proxy did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)


STORES = [
    pytest.param({"type": "memory"}, id="memory"),
    pytest.param(
        {"type": "redis", "url": SHARED_REDIS},
        id="redis",
        marks=pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379"),
    ),
]
"""The limit stores as a ``store`` parameter: the memory store, and the shared Redis when it answers (give
each test's Redis store a ``prefix`` of its own: :func:`unique_prefix`)."""


@contextlib.contextmanager
def failover_pair(directory: Path) -> Iterator[tuple[RedisServer, RedisServer, DelayingProxy]]:
    """A master, the server that will take over from it, and a proxy standing for their shared address
    (a DNS name, a virtual IP), now the master's. The replica loads what its master sends in memory, and
    any file either writes is in ``directory``."""
    with (
        RedisServer("--dir", str(directory), "--repl-diskless-load", "swapdb") as old,
        RedisServer("--dir", str(directory), "--repl-diskless-sync-delay", "0") as new,
        DelayingProxy(port=old.port) as proxy,
    ):
        yield old, new, proxy


async def fail_over(old: RedisServer, new: RedisServer, proxy: DelayingProxy) -> None:
    """The address moves to ``new``; ``old`` becomes its replica (read-only), its clients still connected."""
    proxy.target = ("127.0.0.1", new.port)
    client = Redis.from_url(old.url)
    try:
        await client.replicaof("127.0.0.1", new.port)
        # A replica from now on (its link to the new master comes later): it refuses writes at once.
        assert (await client.info("replication"))["role"] == "slave"
    finally:
        await client.aclose()
