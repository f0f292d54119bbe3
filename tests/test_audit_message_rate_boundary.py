"""``rate-limit-messages`` with a shared key: a window the store says is spent admits nothing, to its last millisecond.

The store answers a reservation with what it granted and the time left of its window, in whole
milliseconds for Redis. In a window's last millisecond a spent key's reservation came back granting
nothing with 0 ms left: the budget read "no wait" as "admitted", and the message went on uncounted --
every message sent in that millisecond, each asking the store again. (Through a real Redis, one
client flooding a 20 ms window of 2 messages got exactly 200 in 100 windows: the local window's end
tracks the store's, so it takes a second worker spending the key, or clocks that drift, to land a
reservation in that millisecond.)
"""

from __future__ import annotations

import asyncio
import time

from asgi_ws_gateway.policies.message_rates import MIN_WAIT, UNLIMITED, SharedBudget
from asgi_ws_gateway.state.base import Reservation


class _EndingWindow:
    """A store whose window is spent and ends now: the first reservations grant nothing, 0 s left;
    from the ``ends_after``-th on, the next window's budget."""

    prefix = "p"

    def __init__(self, ends_after: int) -> None:
        self.calls = 0
        self.ends_after = ends_after

    async def reserve(self, key: str, window: float, requests: list[tuple[int, int]]) -> Reservation:
        self.calls += 1
        if self.calls < self.ends_after:
            return Reservation((0,), 7, 0.0)
        return Reservation(tuple(amount for amount, _ in requests), 8, window)


async def test_a_reservation_granting_nothing_at_the_windows_end_admits_nothing() -> None:
    """Nothing granted with 0 s left: a wait (the message is refused, or delayed and asked again), never
    an admission; asked again, the next window's grant admits it, counted."""
    store = _EndingWindow(ends_after=2)
    budget = SharedBudget(store, "k", (5, UNLIMITED), 1.0, 0.2, False)  # type: ignore[arg-type]
    assert await budget.refill(time.monotonic(), 10) == MIN_WAIT
    await asyncio.sleep(MIN_WAIT)
    assert await budget.refill(time.monotonic(), 10) == 0.0
    assert store.calls == 2 and budget.left[0] == 0  # the grant of 1 (0.2 x 5) spent on this message


async def test_a_spent_window_keeps_refusing_until_it_ends() -> None:
    """A store that grants nothing and has time left: a wait, never an admission."""

    class Spent(_EndingWindow):
        async def reserve(self, key: str, window: float, requests: list[tuple[int, int]]) -> Reservation:
            self.calls += 1
            return Reservation((0,), 7, 0.5)

    budget = SharedBudget(Spent(0), "k", (5, UNLIMITED), 1.0, 0.2, False)  # type: ignore[arg-type]
    wait = await budget.refill(time.monotonic(), 10)
    assert 0.4 < wait <= 0.5
    await asyncio.sleep(0)
