"""Follow-ups of the management bus's roster (``bus_roster.py``): Redis's clock, and listings that say so.

The roster's entries were scored with each worker's ``time.time()``: a worker whose clock ran 60 s
ahead dropped every other entry as lapsed at its first renewal (and read none), and kept its own 60 s
past its lapse; one 60 s behind was dropped by the others at once. Now the scripts read Redis's
``TIME``. Two ``Roster`` objects on the shared Redis, one with its process clock put off (its module's
``time.time``; the tests compare entries with Redis's ``TIME``, never with a wall clock).

And an incomplete listing was invisible to an operator using the SDK or the command line: they gave
the rows only. Now ``ManagementClient.connection_listing`` returns the workers' part with them, and
``connections list`` names the missing workers on stderr and exits with code 8. A real gateway on the
shared Redis, a worker made missing by writing its roster entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.management import bus_roster
from asgi_ws_gateway.management.answers import an_object
from asgi_ws_gateway.management.bus_roster import Roster
from support.browser import dump_dom, needs_chromium
from support.clients import connect
from support.management import TOKEN
from support.processes import Standalone, cli, standalone
from support.redis import SHARED_REDIS, redis_available, shared_prefix
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis at 127.0.0.1:6379")

GHOST = "ghost-host:4242:0a0b0c"
"""A worker of the roster that answers nothing: no process has this id."""
HOSTILE = "evil\x1b]52;c;aGk=\x07\nwarning: forged"
"""A worker id written by something else with access to Redis: it would set the clipboard, forge a line."""


@pytest.fixture
async def shared() -> AsyncIterator[tuple[Redis, str]]:
    """A client of the shared Redis and a prefix of this test's own; its keys deleted after."""
    async with shared_prefix() as pair:
        yield pair


@contextlib.contextmanager
def clock_off_by(seconds: float) -> Iterator[None]:
    """The roster module's wall clock ``seconds`` off (a host whose clock is skewed); monotonic time as it is."""
    skewed = SimpleNamespace(time=lambda: time.time() + seconds, monotonic=time.monotonic)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bus_roster, "time", skewed)
        yield


async def redis_now(client: Redis) -> float:
    seconds, microseconds = await client.time()
    return seconds + microseconds / 1_000_000


def _roster(client: Redis, prefix: str, worker: str, ttl: float = 30) -> Roster:
    return Roster(client, prefix=prefix, worker=worker, ttl=ttl)


async def test_a_worker_whose_clock_is_ahead_lapses_no_other_entry_and_its_own_on_redis_time(
    shared: tuple[Redis, str],
) -> None:
    client, prefix = shared
    ahead, other, reader = (_roster(client, prefix, w, ttl=2) for w in ("w-ahead", "w-other", "w-reader"))
    other.ttl = 30
    await other.renew()
    with clock_off_by(60):
        assert "w-other" in await ahead.renew()  # was: dropped as lapsed 60 s early, and not read
    assert await reader.workers() == {"w-ahead", "w-other"}
    lapses = await client.zscore(ahead.key, "w-ahead")
    assert lapses is not None and lapses <= await redis_now(client) + ahead.ttl  # was: 60 s later

    async with asyncio.timeout(10):  # no renewal: lapsed once Redis's clock passes its score
        while await redis_now(client) <= lapses:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await reader.workers() == {"w-other"}
    with clock_off_by(60):
        assert await ahead.workers() == {"w-other"}


async def test_a_worker_whose_clock_is_behind_stays_on_the_others_roster(shared: tuple[Redis, str]) -> None:
    client, prefix = shared
    behind, other, reader = (_roster(client, prefix, w) for w in ("w-behind", "w-other", "w-reader"))
    with clock_off_by(-60):
        await behind.renew()
    await other.renew()  # was: w-behind's entry, scored 30 s in the past by Redis's time, dropped here
    assert await reader.workers() == {"w-behind", "w-other"}
    with clock_off_by(-60):
        assert await behind.workers() == {"w-behind", "w-other"}


async def test_entries_kept_across_a_lost_roster_lapse_on_redis_time(shared: tuple[Redis, str]) -> None:
    """A Redis that lost its data: a worker keeps the entries it knew until they would lapse, by Redis's clock."""
    client, prefix = shared
    ahead, other = _roster(client, prefix, "w-ahead"), _roster(client, prefix, "w-other", ttl=1)
    await other.renew()
    with clock_off_by(60):
        assert "w-other" in await ahead.workers()
    lapses = await client.zscore(other.key, "w-other")
    assert lapses is not None
    await client.delete(other.key, other.epoch_key)  # the roster lost; w-other not renewed (yet)
    with clock_off_by(60):
        assert "w-other" in await ahead.workers()  # remembered
    async with asyncio.timeout(10):
        while await redis_now(client) <= lapses:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    with clock_off_by(60):
        assert "w-other" not in await ahead.workers()


@pytest.fixture
def config(tmp_path: Path, upstream: UpstreamServer) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n")
    return path


@contextlib.asynccontextmanager
async def gateway_on(prefix: str, config: Path) -> AsyncIterator[Standalone]:
    """A gateway on the shared Redis under ``prefix``, once its listing is complete (it is on the roster)."""
    async with standalone(config, "--redis", SHARED_REDIS, "--redis-prefix", prefix) as gateway:
        async with asyncio.timeout(30):
            while (await gateway.client._call("GET", "connections", an_object))["workers"] != {  # noqa: ASYNC110
                "answered": 1,
                "expected": 1,
            }:
                await asyncio.sleep(0.1)
        yield gateway


async def test_the_sdk_gives_the_workers_part_of_a_listing(shared: tuple[Redis, str], config: Path) -> None:
    client, prefix = shared
    async with gateway_on(prefix, config) as gateway, await connect(gateway.ws("/ws/echo")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        listing = await gateway.client.connection_listing()
        assert (listing.answered, listing.expected, listing.missing, listing.complete) == (1, 1, (), True)

        # A worker of the roster that answers nothing (cut off from Redis): its entry lapses in 10 min.
        await client.zadd(f"{prefix}:{{mgmt}}:workers", {GHOST: await redis_now(client) + 600})
        listing = await gateway.client.connection_listing(api="echo", limit=10)
        assert (listing.answered, listing.expected, listing.missing) == (1, 2, (GHOST,))
        assert not listing.complete and len(listing.connections) == listing.total == 1
        assert listing.connections[0]["api"] == "echo"
        assert len(await gateway.client.list_connections()) == 1  # the rows, as before


async def test_the_command_line_names_missing_workers_and_exits_8(shared: tuple[Redis, str], config: Path) -> None:
    client, prefix = shared
    roster_key = f"{prefix}:{{mgmt}}:workers"
    async with gateway_on(prefix, config) as gateway, await connect(gateway.ws("/ws/echo")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        url = ("--url", gateway.url)
        code, out, err = await cli("connections", "list", *url)
        assert (code, err) == (0, "")
        assert len(out.splitlines()) == 2

        await client.zadd(roster_key, {GHOST: await redis_now(client) + 600})
        code, out, err = await cli("connections", "list", *url)
        assert code == 8, (code, err)  # was 0, and nothing said
        assert out.splitlines()[0].split()[:2] == ["ID", "API"] and len(out.splitlines()) == 2  # the rows that came
        assert err.startswith("warning: incomplete listing, 1 of 2 worker(s) answered: missing ")
        assert GHOST in err and len(err.splitlines()) == 1
        code, out, err = await cli("connections", "list", "--json", *url)
        assert code == 8 and GHOST in err
        assert len(json.loads(out)) == 1  # the rows, as before

        # A worker's id is the server's to say: shown escaped, on the one line.
        await client.zadd(roster_key, {HOSTILE: await redis_now(client) + 600})
        code, _, err = await cli("connections", "list", *url)
        assert code == 8 and "\x1b" not in err and "\\x1b]52" in err and len(err.splitlines()) == 1

        await client.zrem(roster_key, GHOST, HOSTILE)
        code, _, err = await cli("connections", "list", *url)  # whole again: exit code 0, no warning
        assert (code, err) == (0, "")


@needs_chromium
async def test_the_series_and_the_live_console_name_missing_workers(shared: tuple[Redis, str], config: Path) -> None:
    """The live console's sums leave out a worker that did not answer: ``metrics/series`` names it, and
    the page says so beside "workers: 1 of 2" (it said only that)."""
    client, prefix = shared
    async with gateway_on(prefix, config) as gateway:
        await client.zadd(f"{prefix}:{{mgmt}}:workers", {GHOST: await redis_now(client) + 600})
        series = await gateway.client._call("GET", "metrics/series", an_object)
        assert series["workers"] == {"answered": 1, "expected": 2, "missing": [GHOST]}
        page = f"{gateway.url}/console/live#token={TOKEN}&poll=0.2"
        dom = await asyncio.to_thread(dump_dom, page, 3000)
        match = re.search(r'id="workers"[^>]*>([^<]*)<', dom)
        assert match is not None, dom[:2000]
        assert match.group(1) == f"workers: 1 of 2 · missing {GHOST}"
