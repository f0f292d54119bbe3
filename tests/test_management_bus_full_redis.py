"""The management bus under a full Redis (``maxmemory``, ``noeviction``): the workers run a command, and
Redis refuses to store their answers (``RPUSH``: OOM). The caller said "2 of 2 worker(s) did not answer
'reload'", as if the change had failed there; now the log line, each worker's line and the change's
answer say what is known: Redis is full, the command reached them, their running it is unconfirmed.

Real Redis: a private ``redis-server`` per test, made full with its own ``maxmemory``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement, ManagementClient
from asgi_ws_gateway.management.bus import Answers, Command, RedisBus
from asgi_ws_gateway.management.live_connections import _not_all_answered
from asgi_ws_gateway.standalone import not_found
from support.management import TOKEN, api
from support.redis import RedisServer, redis_available, unique_prefix
from support.servers import UvicornServer
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")

BUS_LOGGER = "asgi_ws_gateway.management.bus"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BUS_LOGGER and r.levelno >= logging.WARNING]


async def test_answers_refused_by_a_full_redis_are_said_so_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Both workers ran the command; the gatherer's line names the full Redis, each worker's says it ran."""
    caplog.set_level(logging.DEBUG, logger=BUS_LOGGER)
    ran: list[str] = []
    prefix = unique_prefix()
    with RedisServer("--maxmemory-policy", "noeviction") as server:
        admin = Redis.from_url(server.url, decode_responses=True)
        buses = [RedisBus(Redis.from_url(server.url, decode_responses=True), prefix=prefix) for _ in range(2)]
        try:
            for bus in buses:

                async def handler(command: Command, worker: str = bus.worker) -> Command:
                    ran.append(worker)
                    return {"revision": command.get("revision")}

                await bus.start(handler)
            await admin.config_set("maxmemory", 1)  # a private server: every RPUSH is refused from now on
            answers = await buses[0].gather({"op": "reload", "revision": 2}, wait=1.0)
        finally:
            for bus in buses:
                await bus.aclose()
            await admin.aclose()
    assert sorted(ran) == sorted(bus.worker for bus in buses)
    assert (len(answers.replies), answers.late, answers.full) == (0, 2, True)
    warned = _warnings(caplog)
    gathered = [line for line in warned if "did not answer 'reload'" in line]
    assert len(gathered) == 1 and "Redis is full (OOM, maxmemory)" in gathered[0], warned
    assert "2 received the command and most likely ran it" in gathered[0], gathered
    assert sum("ran 'reload', but Redis is full" in line for line in warned) == 2, warned


async def test_a_change_answered_under_a_full_redis_warns_that_its_run_elsewhere_is_unconfirmed(
    tmp_path: Path, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """State in a file, bus in Redis: the change is saved and run (201, as before), and its answer says
    that the workers' answers were refused by a full Redis, which the SDK hands over as a warning."""
    caplog.set_level(logging.WARNING, logger=BUS_LOGGER)
    with RedisServer("--maxmemory-policy", "noeviction") as server:
        gateway = WebSocketGateway(not_found, config={"apis": [api("echo", "/ws/echo", upstream)]})
        managed = GatewayManagement(
            gateway, admin_token=TOKEN, store=FileStore(tmp_path / "state.json"), redis_url=server.url,
            redis_prefix=unique_prefix(),
        )  # fmt: skip
        with UvicornServer(managed, lifespan="on") as gw:
            admin = Redis.from_url(server.url, decode_responses=True)
            try:
                await admin.config_set("maxmemory", 1)
            finally:
                await admin.aclose()
            async with ManagementClient(gw.url("/_gateway/", scheme="http"), token=TOKEN) as client:
                written = await client.create_api(api("added", "/ws/added", upstream))  # 201, or it raises
    full = [w for w in written.warnings if "Redis is full (OOM, maxmemory)" in w]
    assert len(full) == 1 and "1 worker(s) received it" in full[0] and "not confirmed" in full[0], written.warnings
    assert any("Redis is full" in line for line in _warnings(caplog))


def test_a_connection_commands_503_under_a_full_redis_names_it() -> None:
    """``close``/``send`` that found nothing while the answers were refused: the 503 says why they are missing."""
    refused = _not_all_answered(Answers([], 2, [], 2, full=True), "c1", "closed")
    assert (
        "Redis is full (OOM, maxmemory) and refused to store their answers: it may have been closed" in refused.detail
    )
