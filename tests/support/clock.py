"""A clock tests move by hand: ``clock = Clock(); thing(clock=clock); clock.now += 61``."""

from __future__ import annotations


class Clock:
    """Seconds (any epoch) that pass only when a test adds to ``now``."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
