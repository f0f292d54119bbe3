"""Four uvicorn workers sharing Redis: a concurrency cap of N admits exactly N, and a killed worker's leases expire."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from support.clients import connect
from support.redis import SHARED_REDIS, redis_available, unique_prefix
from support.servers import free_port
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available() or not Path("/proc/net/tcp").exists(),
                                reason="needs Redis on 127.0.0.1:6379 and Linux /proc")  # fmt: skip

MAX = 3
WORKERS = 4
LEASE_TTL = 3


class Gateway:
    """``asgi-ws-gateway run CONFIG --workers 4`` as a subprocess."""

    def __init__(self, config: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(self.port),
             "--workers", str(WORKERS), "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip

    def workers(self) -> set[int]:
        """Pids of the live worker processes (children of the supervisor)."""
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    children.add(int(entry.name))
        return children

    def owners(self, client_ports: list[int]) -> dict[int, int]:
        """client port -> pid of the worker holding the server side of that connection."""
        inodes: dict[int, int] = {}
        for pid in self.workers():
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[int(target[8:-1])] = pid
            except OSError:
                continue
        owners = {}
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local_port, remote_port = int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)
            inode = int(parts[9])
            if local_port == self.port and remote_port in client_ports and inode in inodes:
                owners[remote_port] = inodes[inode]
        return owners

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def upstream_echo() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
async def gateway(tmp_path: Path, upstream_echo: UpstreamServer) -> AsyncIterator[Gateway]:
    config = {
        "store": {"type": "redis", "url": SHARED_REDIS, "prefix": unique_prefix()},
        "apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream_echo.url("/echo")],
                  "policies": [{"limit-concurrency": {"key": "everyone", "max": MAX, "lease_ttl": LEASE_TTL,
                                                      "on_store_error": "closed"}}]}],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    running = Gateway(path)
    try:
        deadline = time.monotonic() + 30
        while len(running.workers()) < WORKERS or not await _answers(running.port):
            assert running.process.poll() is None, "the gateway exited"
            assert time.monotonic() < deadline, "the gateway did not start"
            await asyncio.sleep(0.2)
        yield running
    finally:
        running.stop()


async def _answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _try(url: str, stack: AsyncExitStack) -> ClientConnection | None:
    """Open and keep a connection, or return None when refused with 429."""
    try:
        ws = await connect(url)
    except InvalidStatus as exc:
        assert exc.response.status_code == 429
        return None
    await stack.enter_async_context(ws)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


def _port(ws: ClientConnection) -> int:
    port: int = ws.transport.get_extra_info("sockname")[1]
    return port


async def test_four_workers_admit_exactly_n_and_dead_workers_leases_expire(gateway: Gateway) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws/echo"
    async with AsyncExitStack() as stack:
        # Admit MAX connections, each on a different worker: after each one, the worker holding it is
        # paused (SIGSTOP), so the next handshake can only be accepted by another worker.
        held: list[ClientConnection] = []
        paused: list[int] = []
        try:
            while len(held) < MAX:
                ws = await _try(url, stack)
                assert ws is not None, "refused before the cap was reached"
                held.append(ws)
                (owner,) = gateway.owners([_port(ws)]).values()
                os.kill(owner, signal.SIGSTOP)
                paused.append(owner)
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        owners = gateway.owners([_port(ws) for ws in held])
        assert len(set(owners.values())) == MAX  # one connection per worker: no worker alone is at the cap
        burst = await asyncio.gather(*(_try(url, stack) for _ in range(10)))
        assert burst.count(None) == 10  # yet every worker refuses: the count is shared through Redis
        # Kill every worker holding an admitted connection: nothing releases those leases.
        for pid in set(owners.values()):
            os.kill(pid, signal.SIGKILL)
        assert await _try(url, stack) is None  # the dead workers' leases still count
        # They expire once no renewal comes: connections are admitted again, still at most MAX.
        deadline = time.monotonic() + 4 * LEASE_TTL
        admitted: list[ClientConnection] = []
        while len(admitted) < MAX:
            assert time.monotonic() < deadline, "the killed workers' leases did not expire"
            ws = await _try(url, stack)
            if ws is None:
                await asyncio.sleep(0.2)
            else:
                admitted.append(ws)
        assert await _try(url, stack) is None
