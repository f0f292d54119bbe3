"""Four uvicorn workers sharing Redis: a concurrency cap of N admits exactly N, and a killed worker's leases expire."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from support.clients import connect
from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.redis import SHARED_REDIS, redis_available
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available() or not Path("/proc/net/tcp").exists(),
                                reason="needs Redis on 127.0.0.1:6379 and Linux /proc")  # fmt: skip

MAX = 3
WORKERS = 4
LEASE_TTL = 6
"""Seconds a lease outlives its last renewal: long enough that a loaded machine's worker restarts and
paused workers (SIGSTOP holds their renewals) do not let a live lease lapse before the checks (3 s did)."""


@pytest.fixture
def upstream_echo() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
async def gateway(tmp_path: Path, upstream_echo: UpstreamServer, redis_prefix: str) -> AsyncIterator[GatewayProcess]:
    limit = {"key": "everyone", "max": MAX, "lease_ttl": LEASE_TTL, "on_store_error": "closed"}
    document = build_config(
        upstream_echo,
        api={"policies": [{"limit-concurrency": limit}]},
        store={"type": "redis", "url": SHARED_REDIS, "prefix": redis_prefix},
    )
    async with GatewayProcess([str(write_config(tmp_path, document))], cwd=tmp_path, workers=WORKERS) as running:
        yield running


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


async def test_four_workers_admit_exactly_n_and_dead_workers_leases_expire(gateway: GatewayProcess) -> None:
    url = gateway.url("/ws/echo")
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
                owner = gateway.owner(_port(ws))
                os.kill(owner, signal.SIGSTOP)
                paused.append(owner)
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        owners = {_port(ws): gateway.owner(_port(ws)) for ws in held}
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
