"""quota-by-key on Redis counts in Redis's period (``TIME``), whatever each gateway host's clock says.

Found by an attack pass: the period (its start in the counter's name, its end as the key's
``EXPIREAT``) came from each host's clock, against docs/policies.md's promise that hosts with
skewed clocks agree. Two hosts sharing one Redis counted in different periods, and a host behind
by more than a period wrote an expiry in the past: Redis deleted the counter at once, and that host
admitted 10 handshakes of 10 against a quota of 3. The script now computes the period from Redis's
clock, and the denial's ``Retry-After`` and "renews at" come from it too.
"""

from __future__ import annotations

import calendar
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.pipeline import Policy
from asgi_ws_gateway.policies.limits import period_bounds
from asgi_ws_gateway.state.periods import LUA_PERIOD, Period
from asgi_ws_gateway.state.redis import RedisState
from support.policies import build, context
from support.redis import SHARED_REDIS, redis_available, redis_state

pytestmark = pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")

DAY = 86_400.0


@pytest.fixture
async def store() -> AsyncIterator[RedisState]:
    async with redis_state() as store:
        yield store


def _host(store: RedisState, skew: float) -> Policy:
    """A gateway host whose clock is ``skew`` seconds off, sharing ``store``'s Redis."""
    clock: Callable[[], float] = lambda: time.time() + skew  # noqa: E731
    return build({"quota-by-key": {"key": "{header.x-user}", "limit": 3, "period": "day"}}, store, clock=clock)


async def _admitted(policy: Policy, tries: int) -> tuple[int, list[HandshakeDenied]]:
    admitted, refusals = 0, []
    for _ in range(tries):
        try:
            await policy.apply(context(headers=[("x-user", "alice")]))
            admitted += 1
        except HandshakeDenied as denial:
            refusals.append(denial)
    return admitted, refusals


@pytest.mark.parametrize("skew", [-2 * DAY, 2 * DAY])
async def test_hosts_with_skewed_clocks_share_one_quota(store: RedisState, skew: float) -> None:
    """Before: a host two days behind admitted 10 of 10 (its counter expired at once), one two days
    ahead counted in a day of its own; now the hosts' admissions add up to the quota."""
    exact, skewed = _host(store, 0.0), _host(store, skew)
    first, _ = await _admitted(exact, 2)
    second, refusals = await _admitted(skewed, 10)
    assert (first, second) == (2, 1)
    renews = period_bounds("day", time.time())[1]  # Redis's clock is this host's
    for denial in refusals:
        assert denial.detail.endswith(f"it renews at {renews:%Y-%m-%dT%H:%M:%SZ}")
        retry_after = int(dict(denial.headers)[b"retry-after"])
        assert 0 < retry_after <= DAY


async def test_the_scripts_periods_are_the_calendars() -> None:
    """The Lua period of a few thousand instants (random, and both ends of each day around leap
    days and year ends) is Python's ``period_bounds``."""
    random.seed(7)
    instants = [random.randrange(0, 2**33) for _ in range(1000)]
    for year in (1999, 2000, 2024, 2100):
        first = calendar.timegm((year, 2, 20, 0, 0, 0))
        instants += [first + day * 86_400 + second for day in range(-60, 20) for second in (0, 86_399)]
    script = (
        LUA_PERIOD
        + """
local out = {}
for i = 2, #ARGV do
  local start, ends = period(ARGV[1], tonumber(ARGV[i]))
  out[#out + 1] = start
  out[#out + 1] = ends
end
return out
"""
    )
    client = Redis.from_url(SHARED_REDIS)
    try:
        periods: tuple[Period, ...] = ("minute", "hour", "day", "week", "month")
        for period in periods:
            got = await client.eval(script, 0, period, *instants)
            expected = [int(t.timestamp()) for now in instants for t in period_bounds(period, now)]
            assert got == expected, period
    finally:
        await client.aclose()
