"""LeaseKeeper's renewal schedule (pure logic: a scripted store, and sleeps recorded instead of slept)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from asgi_ws_gateway.state.base import Decision, StoreUnavailable
from asgi_ws_gateway.state.leases import LeaseKeeper


class ScriptedStore:
    """Admits every lease; ``renew`` fails or succeeds as ``outcomes`` say, then stops the test."""

    prefix = "t"

    def __init__(self, outcomes: Sequence[bool]) -> None:
        self.outcomes = list(outcomes)
        self.renewed: list[list[tuple[str, str]]] = []
        self.done = asyncio.Event()

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        return Decision(True, limit - 1, 0.0)

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> None:
        self.renewed.append(list(leases))
        if not self.outcomes:
            self.done.set()
            await asyncio.Event().wait()  # park until cancelled
        if not self.outcomes.pop(0):
            raise StoreUnavailable("down")

    async def release(self, key: str, lease: str) -> None:
        return None


async def _schedule(
    outcomes: Sequence[bool], monkeypatch: pytest.MonkeyPatch, *, ttl: float, retry: float
) -> list[float]:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)  # the keeper calls asyncio.sleep; nothing else sleeps here
    store = ScriptedStore(outcomes)
    keeper = LeaseKeeper(store, ttl, retry=retry)  # type: ignore[arg-type]
    await keeper.acquire("k", "lease-1", 5)
    async with asyncio.timeout(5):
        await store.done.wait()
    await keeper.aclose()
    assert all(batch == [("k", "lease-1")] for batch in store.renewed)
    return slept


async def test_renews_every_third_of_the_ttl_while_the_store_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _schedule([True, True], monkeypatch, ttl=30, retry=1) == [10, 10, 10]


async def test_retries_every_retry_seconds_after_a_failure_then_back_to_a_third(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a failover the leases must come back soon: the cap under-counts until they do."""
    slept = await _schedule([True, False, False, True, True], monkeypatch, ttl=30, retry=1)
    assert slept == [10, 10, 1, 1, 10, 10]


async def test_retry_is_never_slower_than_the_normal_period(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _schedule([False, True], monkeypatch, ttl=1.5, retry=5) == [0.5, 0.5, 0.5]


async def test_one_warning_per_outage_not_per_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="asgi_ws_gateway.state.leases")
    await _schedule([False, False, False, True, False], monkeypatch, ttl=30, retry=1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "could not renew 1 concurrency lease(s); retrying every 1 s",
        "renewed 1 concurrency lease(s) again",
        "could not renew 1 concurrency lease(s); retrying every 1 s",
    ]


class ReleaseFailingStore(ScriptedStore):
    async def release(self, key: str, lease: str) -> None:
        raise StoreUnavailable("down")


async def test_releases_failing_through_an_outage_are_one_warning_not_one_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A thousand connections closing while Redis is down used to write a thousand lines."""
    keeper = LeaseKeeper(ReleaseFailingStore([]), 30)  # type: ignore[arg-type]
    for i in range(1000):
        await keeper.acquire("k", f"lease-{i}", 5000)
    for i in range(1000):
        await keeper.release(f"lease-{i}")
    await keeper.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        "could not release 1 concurrency lease(s) since the last such line; each expires within 30 s"
    ]
