"""LeaseKeeper: its renewal schedule (a scripted store, and sleeps recorded instead of slept), and leases
whose acquire has no known outcome or whose release failed, given back in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from asgi_ws_gateway.state.base import Decision, StoreUnavailable
from asgi_ws_gateway.state.leases import LeaseKeeper
from asgi_ws_gateway.state.memory import MemoryState


class ScriptedStore:
    """Admits every lease; ``renew`` fails or succeeds as ``outcomes`` say, then stops the test."""

    prefix = "t"

    def __init__(self, outcomes: Sequence[bool]) -> None:
        self.outcomes = list(outcomes)
        self.renewed: list[list[tuple[str, str]]] = []
        self.done = asyncio.Event()

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        return Decision(True, limit - 1, 0.0)

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        self.renewed.append(list(leases))
        if not self.outcomes:
            self.done.set()
            await asyncio.Event().wait()  # park until cancelled
        if not self.outcomes.pop(0):
            raise StoreUnavailable("down")
        return 0

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
    await keeper.aclose(keep_held=False)  # shutting down: the parked renewal is cancelled
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


async def test_releases_failing_on_closing_are_one_warning_not_one_each(caplog: pytest.LogCaptureFixture) -> None:
    """A thousand connections closing while Redis is down used to write a thousand lines."""
    keeper = LeaseKeeper(ReleaseFailingStore([]), 30)  # type: ignore[arg-type]
    for i in range(1000):
        await keeper.acquire("k", f"lease-{i}", 5000)
    for i in range(1000):
        await keeper.release(f"lease-{i}")
    await keeper.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        # At the first failure, from its connection's release (before its access line), then on closing.
        "could not release 1 concurrency lease(s) (down); retrying every 1 s until each expires (within 30 s)",
        "could not release 1000 concurrency lease(s) on closing (down); each expires within 30 s",
    ]


# -- leases of unknown outcome, and releases that fail: given back in the background ----------------


class Gated(MemoryState):
    """The in-memory store whose calls can be made to fail, or to wait, after (or before) doing their work.

    Its clock stands still: a lease goes only when released, never by expiring during a test.
    """

    def __init__(self) -> None:
        super().__init__(clock=lambda: 1_000_000.0)
        self.answer: BaseException | None = None  # raised by acquire after taking the lease: a late answer
        self.hang_acquire = False  # acquire takes the lease, then never answers
        self.down = 0  # releases that fail before this one succeeds
        self.renewing = asyncio.Event()
        self.renewed = asyncio.Event()
        self.renew_gate: asyncio.Event | None = None  # renew waits for it, then re-creates its leases

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        decision = await super().acquire(key, lease, limit, ttl)
        if self.hang_acquire:
            await asyncio.Event().wait()
        if self.answer is not None:
            raise self.answer
        return decision

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        if self.renew_gate is not None:
            self.renewing.set()
            await self.renew_gate.wait()
        gone = await super().renew(leases, ttl)
        self.renewed.set()
        return gone

    async def release(self, key: str, lease: str) -> None:
        if self.down:
            self.down -= 1
            raise StoreUnavailable("down")
        await super().release(key, lease)


async def _until_at_most(store: MemoryState, count: int = 0, key: str = "k") -> None:
    """Wait until ``store`` holds no more than ``count`` leases under ``key``."""
    async with asyncio.timeout(5):
        while store.leases(key) > count:  # noqa: ASYNC110 - the keeper releases in a task of its own
            await asyncio.sleep(0.01)


async def test_an_acquire_answered_too_late_is_released_in_the_background_and_again_at_the_end() -> None:
    """The store took the lease but its answer was lost: released at once, and when the connection ends."""
    store = Gated()
    store.answer = StoreUnavailable("timed out")
    keeper = LeaseKeeper(store, 30)
    with pytest.raises(StoreUnavailable):
        await keeper.acquire("k", "lease-1", 1)
    await _until_at_most(store)
    store.answer = None
    await store.acquire("k", "lease-1", 1, 30)  # a request late in reaching the store runs after that release
    await keeper.release("lease-1")  # the connection (admitted unchecked) ends
    await _until_at_most(store)
    assert len(keeper) == 0
    await keeper.aclose()


async def test_a_cancelled_acquire_is_released_and_never_renewed() -> None:
    store = Gated()
    store.hang_acquire = True
    keeper = LeaseKeeper(store, 3, retry=0.01)
    call = asyncio.create_task(keeper.acquire("k", "lease-1", 1))
    async with asyncio.timeout(5):
        while not store.leases("k"):  # noqa: ASYNC110 - the store took it
            await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _until_at_most(store)
    assert len(keeper) == 0  # nothing to renew: a renewal would re-create it
    await keeper.release("lease-1")
    await keeper.aclose()


async def test_a_failed_release_is_retried_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="asgi_ws_gateway.state.leases")
    store = Gated()
    keeper = LeaseKeeper(store, 30, retry=0.01)
    for i in range(100):
        await keeper.acquire("k", f"lease-{i}", 100)
    store.down = 101  # each release at its connection's end, then the first background retry
    for i in range(100):
        await keeper.release(f"lease-{i}")
    await _until_at_most(store)
    await keeper.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        # At the first failure (a connection's release, which logs it before the connection's access line).
        "could not release 1 concurrency lease(s) (down); retrying every 0.01 s until each expires (within 30 s)",
        "released concurrency leases again",
    ]


async def test_a_lease_released_while_its_renewal_is_in_flight_is_released_again() -> None:
    """The renewal re-creates what it renews: a lease released meanwhile must not stay."""
    store = Gated()
    store.renew_gate = asyncio.Event()
    keeper = LeaseKeeper(store, 0.03)  # renewed every 0.01 s
    await keeper.acquire("k", "kept", 2)
    await keeper.acquire("k", "released", 2)
    async with asyncio.timeout(5):
        await store.renewing.wait()
    await keeper.release("released")
    assert store.leases("k") == 1
    store.renew_gate.set()  # the renewal puts "released" back; the keeper then releases it again
    async with asyncio.timeout(5):
        await store.renewed.wait()
    await _until_at_most(store, 1)
    assert store.leases("k") == 1 and len(keeper) == 1
    await keeper.release("kept")
    await keeper.aclose()


async def test_closing_releases_what_waits_for_a_background_release() -> None:
    """A gateway shutting down gives back the leases of unknown outcome it has not released yet."""
    store = Gated()
    store.answer = StoreUnavailable("timed out")
    keeper = LeaseKeeper(store, 30)
    with pytest.raises(StoreUnavailable):
        await keeper.acquire("k", "lease-1", 1)
    assert store.leases("k") == 1  # the background release has not run yet
    await keeper.aclose()
    assert store.leases("k") == 0


# -- closed by a reload: the connections admitted under the replaced policies stay open ------------


class Stepped(MemoryState):
    """The in-memory store on a clock the test moves; it counts the keeper's renewals."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(monotonic=lambda: self.now)
        self.renewals = 0

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        gone = await super().renew(leases, ttl)
        self.renewals += 1
        return gone


async def _one_more_renewal(store: Stepped) -> None:
    seen = store.renewals
    async with asyncio.timeout(5):
        while store.renewals == seen:  # noqa: ASYNC110 - the keeper renews in a task of its own
            await asyncio.sleep(0.01)


async def _no_other_task() -> None:
    """Wait until this test's task is the only one left on the loop (a leaked renewal never ends)."""
    async with asyncio.timeout(5):
        while asyncio.all_tasks() - {asyncio.current_task()}:  # noqa: ASYNC110 - tasks ending
            await asyncio.sleep(0.01)


async def test_a_lease_held_when_its_keeper_is_closed_is_renewed_until_released() -> None:
    """A reload closes the replaced policies: their open connections must go on counting. Before,
    aclose() stopped the renewals and each lease expired ``ttl`` later, its connection still open."""
    store = Stepped()
    keeper = LeaseKeeper(store, 0.3)  # renewed every 0.1 s
    assert (await keeper.acquire("k", "open", 1)).allowed
    await keeper.aclose()
    for _ in range(3):  # past the lease's first expiry (0.3) twice over, each step after a renewal
        await _one_more_renewal(store)
        store.now += 0.25
    assert store.leases("k") == 1
    newcomer = LeaseKeeper(store, 0.3)
    assert not (await newcomer.acquire("k", "second", 1)).allowed  # the cap still holds
    await keeper.release("open")  # the connection ends, through the closed keeper
    assert store.leases("k") == 0
    await _no_other_task()  # the renewals stopped with the last release
    assert (await newcomer.acquire("k", "second", 1)).allowed
    await newcomer.release("second")
    await _no_other_task()


async def test_closing_to_shut_down_stops_renewing_held_leases() -> None:
    """Shutting down (keep_held=False), nothing goes on: a lease left held expires within ``ttl``."""
    store = Stepped()
    keeper = LeaseKeeper(store, 0.3)
    await keeper.acquire("k", "open", 1)
    await keeper.aclose(keep_held=False)
    await _no_other_task()
    store.now += 0.3
    assert store.leases("k") == 0


class CancellationDroppingStore(ScriptedStore):
    """Renews for ever; the first renewal takes no cancellation (returns as if done), as a store call through
    Python 3.11's ``asyncio.wait_for`` may when the cancellation comes as the call completes."""

    def __init__(self) -> None:
        super().__init__([])
        self.renewers: list[asyncio.Task[object] | None] = []
        self.dropping = asyncio.Event()  # the first renewal is waiting for the cancellation it drops
        self.rounds = asyncio.Event()  # a few rounds of renewals were made

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        self.renewers.append(asyncio.current_task())
        if len(self.renewers) == 8:
            self.rounds.set()
        if len(self.renewers) == 1:
            self.dropping.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        return 0


async def test_a_renewer_whose_cancellation_was_lost_stops_once_another_replaced_it() -> None:
    store = CancellationDroppingStore()
    keeper = LeaseKeeper(store, 0.03)  # type: ignore[arg-type]
    await keeper.acquire("k", "lease-1", 5)
    async with asyncio.timeout(5):
        await store.dropping.wait()
    await keeper.release("lease-1")  # the last lease: its renewer is cancelled (and drops it)
    await keeper.acquire("k", "lease-2", 5)  # a new renewer starts
    first, second = store.renewers[0], keeper._task
    async with asyncio.timeout(5):
        await store.rounds.wait()  # renewals every 10 ms
    await keeper.aclose(keep_held=False)
    assert first is not None and first.done()
    after = store.renewers[store.renewers.index(second) :]
    assert set(after) == {second}, f"{after.count(first)} renewals by the replaced renewer"
