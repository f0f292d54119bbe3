"""Rate limits, quotas and concurrency leases on the in-memory store with a fake clock; store failures."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.policies.limits import period_bounds
from asgi_ws_gateway.state.base import Decision, StoreUnavailable
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.state.periods import Period
from support.clock import Clock
from support.policies import build, context, denied, problems


def _ip(ip: str = "10.0.0.1") -> HandshakeContext:
    return context(client=(ip, 1))


async def test_sliding_window_admits_limit_then_429_with_retry_after() -> None:
    clock = Clock()
    store = MemoryState(monotonic=clock)
    policy = build({"rate-limit-by-key": {"key": "{client.ip}", "limit": 3, "window": 10}}, store)
    for _ in range(3):
        await policy.apply(_ip())
        clock.now += 1
    denial = await denied(policy.apply(_ip()))
    assert (denial.status, denial.reason) == (429, "rate_limited")
    assert (b"retry-after", b"7") in denial.headers  # the first attempt leaves the window at t+10
    await policy.apply(_ip("10.0.0.2"))  # another key has its own budget


async def test_no_burst_across_a_window_edge() -> None:
    """A fixed window would admit 2 x limit around its boundary; the sliding log admits limit."""
    clock = Clock(1_000_009.5)  # just before a 10 s boundary
    policy = build({"rate-limit-by-key": {"key": "k", "limit": 5, "window": 10}}, MemoryState(monotonic=clock))
    for _ in range(5):
        await policy.apply(_ip())
    clock.now = 1_000_010.5  # just after it
    await denied(policy.apply(_ip()))
    clock.now = 1_000_019.5  # exactly one window after the burst: admitted again
    await policy.apply(_ip())


async def test_denied_attempts_do_not_count() -> None:
    clock = Clock()
    policy = build({"rate-limit-by-key": {"key": "k", "limit": 1, "window": 10}}, MemoryState(monotonic=clock))
    await policy.apply(_ip())
    for _ in range(5):
        clock.now += 1
        await denied(policy.apply(_ip()))
    clock.now += 5.01
    await policy.apply(_ip())


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-03-15T13:45:00", "2026-03-15T00:00:00", "2026-03-16T00:00:00"),
        ("week", "2026-03-15T13:45:00", "2026-03-09T00:00:00", "2026-03-16T00:00:00"),  # a Sunday
        ("month", "2026-02-28T23:59:59", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
        ("month", "2024-02-29T12:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
        ("month", "2026-12-31T23:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("hour", "2026-12-31T23:59:00", "2026-12-31T23:00:00", "2027-01-01T00:00:00"),
    ],
)
def test_quota_periods_are_calendar_periods_in_utc(period: str, now: str, start: str, end: str) -> None:
    def ts(text: str) -> float:
        return calendar.timegm(datetime.fromisoformat(text).timetuple())

    got = period_bounds(period, ts(now))  # type: ignore[arg-type]
    assert got == (datetime.fromisoformat(start).replace(tzinfo=UTC), datetime.fromisoformat(end).replace(tzinfo=UTC))


async def test_quota_spent_until_the_period_renews() -> None:
    clock = Clock(calendar.timegm((2026, 3, 15, 23, 59, 0)))
    policy = build({"quota-by-key": {"key": "{client.ip}", "limit": 2, "period": "day", "status": 403}},
                   MemoryState(clock=clock), clock=clock)  # fmt: skip
    await policy.apply(_ip())
    await policy.apply(_ip())
    denial = await denied(policy.apply(_ip()))
    assert (denial.status, denial.reason) == (403, "quota_exceeded")
    assert denial.detail == "quota of 2 handshakes per day exceeded; it renews at 2026-03-16T00:00:00Z"
    assert (b"retry-after", b"60") in denial.headers
    clock.now += 60  # midnight UTC: a new day, a new quota
    await policy.apply(_ip())


async def test_concurrency_leases_are_released_and_expire() -> None:
    clock = Clock()
    store = MemoryState(monotonic=clock)
    policy = build({"limit-concurrency": {"key": "{jwt.sub}", "max": 2, "lease_ttl": 30}}, store)
    first, second = context(), context()
    await policy.apply(first)
    await policy.apply(second)
    denial = await denied(policy.apply(context()))
    assert (denial.status, denial.reason, denial.headers) == (429, "concurrency_limited", [(b"retry-after", b"5")])
    await first.release()  # a closed connection frees its slot
    third = context()
    await policy.apply(third)
    await denied(policy.apply(context()))
    clock.now += 31  # nobody renewed: as if the worker holding them died
    await policy.apply(context())
    await second.release()
    await third.release()
    await policy.aclose()  # type: ignore[attr-defined]


class BrokenStore(MemoryState):
    """A store whose every operation fails, like Redis during an outage."""

    async def hit(self, key: str, limit: int, window: float, member: str) -> Decision:
        raise StoreUnavailable("down")

    async def consume(self, key: str, limit: int, period: Period) -> Decision:
        raise StoreUnavailable("down")

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        raise StoreUnavailable("down")

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        raise StoreUnavailable("down")


@pytest.mark.parametrize(
    "entry",
    [
        {"rate-limit-by-key": {"key": "k", "limit": 1, "window": 1}},
        {"quota-by-key": {"key": "k", "limit": 1}},
        {"limit-concurrency": {"key": "k", "max": 1}},
    ],
    ids=["rate", "quota", "concurrency"],
)
async def test_store_failure_fails_open_or_closed(entry: dict[str, dict[str, object]]) -> None:
    ((kind, settings),) = entry.items()
    await build({kind: {**settings, "on_store_error": "open"}}, BrokenStore()).apply(_ip())
    closed = build({kind: {**settings, "on_store_error": "closed"}}, BrokenStore())
    denial = await denied(closed.apply(_ip()))
    assert (denial.status, denial.reason, denial.headers) == (503, "store_unavailable", [(b"retry-after", b"1")])


def test_limit_settings_are_validated() -> None:
    assert problems({"rate-limit-by-key": {"key": "{nope.x}", "limit": 0, "window": 1}}) == [
        "apis[0].policies[0].rate-limit-by-key.key: unknown namespace 'nope' in 'nope.x' (known: api, client, "
        "cookie, header, jwt, path, query, request, subscription, var)",
        "apis[0].policies[0].rate-limit-by-key.limit: Input should be greater than 0 (got 0)",
    ]
    assert problems({"quota-by-key": {"key": "k", "limit": 1, "period": "year"}})[0].startswith(
        "apis[0].policies[0].quota-by-key.period: Input should be 'minute', 'hour', 'day', 'week' or 'month'"
    )
