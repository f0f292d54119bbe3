"""Review of the management bus's roster under a Redis ACL that grants the rest of what the gateway uses.

The roster (``bus_roster.py``) runs Lua scripts (``EVALSHA``) calling ``TIME``, ``ZADD``,
``ZRANGEBYSCORE``, ``ZREMRANGEBYSCORE``, ``GET``/``SET``, and ``ZREM``. An ACL that allows the store's
scripts, pub/sub and ``BLPOP`` but not those (``-time``, no sorted-set commands, no ``EVALSHA``) made
every command that gathers (close, send, listing, series) a 503 for ever, and the refused renewals were
logged at DEBUG only: nothing told the operator why. Measured on the code before, with ``-time``:
``gather`` raised ``Unavailable: the management bus (Redis) failed: ResponseError``, ``GET
/connections`` was 503, ``asgi-ws-gateway run`` printed no warning.

Now a refused renewal is a WARNING naming the command (then one per five minutes), and a roster Redis
refuses to read leaves the commands counting on ``PUBLISH`` alone, as before the roster (said once).

Real Redis: a private ``redis-server`` per test, an ACL user set with ``ACL SETUSER``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoPermissionError, ReadOnlyError, ResponseError, TryAgainError

from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.management.bus_roster import Roster
from asgi_ws_gateway.management.errors import Unavailable
from support.configs import build_config, write_config
from support.management import TOKEN
from support.processes import cli_env, ready_server
from support.redis import RedisServer, redis_available, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")

USER, PASSWORD = "gateway", "acl-secret-5f1e"
BUS_LOGGER = "asgi_ws_gateway.management.bus"
GHOST = "ghost-host:4242:0a0b0c"
"""A worker of the roster that is not on the bus."""

RENEWAL_REFUSALS = [
    pytest.param("-time", "TIME", id="no-TIME"),
    pytest.param("-@sortedset", "ZADD", id="no-sorted-sets"),
    pytest.param("-evalsha", "'evalsha'", id="no-EVALSHA"),
    pytest.param("-script|load", "'script|load'", id="NOSCRIPT-then-no-SCRIPT-LOAD"),  # a fresh Redis
]
READ_REFUSALS = [
    pytest.param("-time", "TIME", id="no-TIME"),
    pytest.param("-@sortedset", "ZRANGEBYSCORE", id="no-sorted-sets"),
    pytest.param("-evalsha", "'evalsha'", id="no-EVALSHA"),
    pytest.param("-script|load", "'script|load'", id="NOSCRIPT-then-no-SCRIPT-LOAD"),  # a fresh Redis
]


class AclRedis:
    """A private Redis whose user ``gateway`` may run everything but what ``rule`` takes away."""

    def __init__(self, server: RedisServer, admin: Redis, tmp: Path) -> None:
        self.server, self.admin, self.tmp = server, admin, tmp

    @property
    def url(self) -> str:
        return f"redis://{USER}:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    async def grant(self, *rules: str) -> None:
        await self.admin.acl_setuser(
            USER, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all", *rules]
        )

    async def denials(self) -> int:
        """How many commands Redis refused the user so far (``ACL LOG`` counts repeats in one entry)."""
        entries = await self.admin.acl_log(128)
        return sum(int(str(entry["count"])) for entry in entries)

    def bus(self, prefix: str) -> RedisBus:
        client = Redis.from_url(self.url, decode_responses=True, encoding_errors="replace")
        return RedisBus(client, prefix=prefix, check_interval=0.2)


@pytest.fixture
async def acl_redis(tmp_path: Path) -> AsyncIterator[AclRedis]:
    with RedisServer() as server:
        admin = Redis.from_url(server.url, decode_responses=True)
        try:
            yield AclRedis(server, admin, tmp_path)
        finally:
            await admin.aclose()


async def answer(command: Command) -> Command:
    return {"ok": True}


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BUS_LOGGER and text in r.getMessage()]


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(15):
        for _ in iter(int, 1):  # until it holds (ASYNC110: nothing to wait on but Redis's answers)
            if await condition():
                return
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("rule", "command"), RENEWAL_REFUSALS)
async def test_a_refused_renewal_is_one_warning_naming_the_command(
    acl_redis: AclRedis, caplog: pytest.LogCaptureFixture, rule: str, command: str
) -> None:
    await acl_redis.grant(rule)
    caplog.set_level(logging.WARNING, logger=BUS_LOGGER)
    bus = acl_redis.bus(unique_prefix())
    await bus.start(answer)
    try:
        start = await acl_redis.denials()

        async def renewals_refused() -> bool:  # several more renewals refused (0.2 s apart), by Redis's count
            return await acl_redis.denials() >= start + 4

        await wait_for(renewals_refused)
    finally:
        await bus.aclose()
    refused = lines(caplog, "refused to renew")
    assert len(refused) == 1, refused  # was: DEBUG only; now throttled, not one per renewal
    assert command in refused[0], refused[0]
    assert "When a worker is off the bus" in refused[0]
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(("rule", "command"), READ_REFUSALS)
async def test_commands_count_on_publish_while_redis_refuses_the_roster(
    acl_redis: AclRedis, caplog: pytest.LogCaptureFixture, rule: str, command: str
) -> None:
    """Two workers, the roster refused: a command waits for both (PUBLISH's count) and names no one."""
    await acl_redis.grant(rule)
    caplog.set_level(logging.WARNING, logger=BUS_LOGGER)
    prefix = unique_prefix()
    asking, other = acl_redis.bus(prefix), acl_redis.bus(prefix)
    await asking.start(answer)
    await other.start(answer)
    try:
        for _ in range(3):
            answers = await asking.gather({"op": "list"}, wait=5)  # was: Unavailable (503) every time
            assert sorted(str(reply["worker"]) for reply in answers.replies) == sorted([asking.worker, other.worker])
            assert (answers.expected, answers.reached, answers.missing) == (2, 2, [])
    finally:
        await other.aclose()
        await asking.aclose()
    said = lines(caplog, "refused to read the roster")
    assert len(said) == 1, said  # once, not per command
    assert command in said[0], said[0]
    assert PASSWORD not in caplog.text


async def test_the_roster_is_read_again_once_the_acl_allows_it(
    acl_redis: AclRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Degraded only while refused: granted ``TIME`` again, a worker of the roster off the bus is named."""
    await acl_redis.grant("-time")
    caplog.set_level(logging.WARNING, logger=BUS_LOGGER)
    bus = acl_redis.bus(unique_prefix())
    await bus.start(answer)
    try:
        assert (await bus.gather({"op": "list"}, wait=5)).missing == []
        await acl_redis.grant("+time")
        seconds, _ = await acl_redis.admin.time()
        await acl_redis.admin.zadd(bus.roster.key, {GHOST: seconds + 60})
        answers = await bus.gather({"op": "list"}, wait=0.5)
        assert answers.missing == [GHOST]
        assert (answers.expected, len(answers.replies)) == (2, 1)
    finally:
        await bus.aclose()
    assert len(lines(caplog, "the roster is read again")) == 1


async def test_a_redis_lost_is_still_a_503(acl_redis: AclRedis) -> None:
    """Only a refusal degrades: a Redis that is down is no roster to count without, the command reaches no one."""
    await acl_redis.grant()
    bus = acl_redis.bus(unique_prefix())
    await bus.start(answer)
    try:
        acl_redis.server.stop()
        with pytest.raises(Unavailable):
            await bus.gather({"op": "list"}, wait=1)
    finally:
        await bus.aclose()


def test_what_is_a_refusal() -> None:
    """A failure that passes (a failover, a busy script, a connection lost) is no refusal to warn of."""
    roster = Roster(Redis(), prefix="p", worker="w", ttl=5)
    passing = [
        ReadOnlyError("You can't write against a read only replica."),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ResponseError("BUSY Redis is busy running a script."),
        ConnectionError("Connection closed by server."),
    ]
    assert [roster.refusal(exc) for exc in passing] == [None] * len(passing)
    refused = roster.refusal(NoPermissionError("this user has no permissions to run the 'time' command"))
    assert refused is not None and "'time'" in refused


async def test_asgi_ws_gateway_run_warns_at_start_up_and_serves_the_listing(acl_redis: AclRedis) -> None:
    """``asgi-ws-gateway run`` with an ACL without ``TIME``: one WARNING at start-up, ``GET /connections`` 200."""
    await acl_redis.grant("-time")
    config = write_config(acl_redis.tmp, build_config())
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--management", "/_gateway"]
    env = cli_env(ASGI_WS_GATEWAY_REDIS=acl_redis.url)
    with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:

        async def warned() -> bool:
            return "refused to renew" in server.output()

        await wait_for(warned)
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.get(
                f"http://127.0.0.1:{server.port}/_gateway/connections", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert response.status_code == 200, response.text  # was: 503
        assert response.json()["workers"] == {"answered": 1, "expected": 1}
        server.stop()
        output = server.output()
    assert output.count("refused to renew") == 1, output
    assert "TIME" in output
    assert PASSWORD not in output


async def test_a_full_redis_refusing_the_renewal_is_named_full_not_an_acl(caplog: pytest.LogCaptureFixture) -> None:
    """Redis at its ``maxmemory`` (``noeviction``) refuses the roster's writes with OOM: the warning told the
    operator to grant the roster's commands, which were granted."""
    caplog.set_level(logging.WARNING, logger=BUS_LOGGER)
    with RedisServer("--maxmemory-policy", "noeviction") as server:
        admin = Redis.from_url(server.url, decode_responses=True)
        bus = RedisBus(Redis.from_url(server.url, decode_responses=True), prefix=unique_prefix(), check_interval=0.2)
        try:
            await admin.config_set("maxmemory", 1)  # a private server: every write is refused from now on
            await bus.start(answer)

            async def warned() -> bool:
                return bool(lines(caplog, "refused to renew"))

            await wait_for(warned)
        finally:
            await bus.aclose()
            await admin.aclose()
    refused = lines(caplog, "refused to renew")[0]
    assert "OutOfMemoryError" in refused and "maxmemory" in refused, refused
    assert "grant the roster's commands" not in refused, refused
