"""The in-memory store's cost per operation does not grow with the keys it holds.

Found by an attack pass: once a limit keyed by a value clients choose held ``store.max_keys``
keys, each handshake with a fresh value swept every table of every limit on the event loop (38 ms
at 100,000 keys, against 32 µs for a known key), and so did every 1,024th operation: ten such
handshakes a second took another API's echo from 0.6 ms to 249 ms. Each counter's keys are now kept
in order of expiry: a refused key drops only its own counter's expired keys, and each operation
drops a few expired keys elsewhere.

Work is counted as the function calls an operation makes (``sys.setprofile``), not timed.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import pytest

from asgi_ws_gateway.state.base import Decision, StoreUnavailable, store_key
from asgi_ws_gateway.state.memory import MemoryState
from support.clock import Clock


def _public(value: object) -> str:
    """A key of a limit keyed by a value the client chooses."""
    return store_key("p", "rate", "api:public.0", str(value))


def _other(value: object) -> str:
    """A key of another API's limit, keyed by a user id."""
    return store_key("p", "rate", "api:chat.0", str(value))


def _calls(operation: Coroutine[Any, Any, object]) -> int:
    """Function calls made by one store operation (the memory store's never wait: one step runs it)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        count += event in ("call", "c_call")

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        operation.send(None)
    except (StopIteration, StoreUnavailable):
        pass
    finally:
        sys.setprofile(before)
    return count


def _run(operation: Coroutine[Any, Any, Decision]) -> Decision:
    with pytest.raises(StopIteration) as done:
        operation.send(None)
    result: Decision = done.value.value
    return result


def _full_store(keys: int) -> tuple[MemoryState, Clock]:
    """A store whose public limit holds ``keys`` keys (its bound), and another limit as many."""
    clock = Clock()
    store = MemoryState(clock=clock, monotonic=clock, max_keys=keys)
    for i in range(keys):
        _run(store.hit(_public(i), 5, 3600, "m"))
        _run(store.hit(_other(i), 5, 60, "m"))
        clock.now += 0.001
    return store, clock


@pytest.mark.parametrize("operation", ["new key refused", "known key"])
def test_an_operation_costs_the_same_at_a_thousand_keys_as_at_twenty_thousand(operation: str) -> None:
    """Before: a refused new key made 2 calls per key held (40,000 at 20,000 keys), and a known
    key's operation 1 in 1,024 as many."""
    worst = []
    for keys in (1_000, 20_000):
        store, _ = _full_store(keys)
        if operation == "new key refused":
            calls = [_calls(store.hit(key, 5, 3600, "m")) for key in map(_public, range(-10, 0))]
        else:
            known = _other(0)
            calls = [_calls(store.hit(known, 10_000, 60, f"m{i}")) for i in range(2_100)]
        worst.append(max(calls))
    small, large = worst
    assert large <= small + 5, worst
    assert large < 200, worst


def test_a_full_limit_refuses_new_keys_and_makes_room_from_its_own_expired_ones() -> None:
    store, clock = _full_store(1_000)
    with pytest.raises(StoreUnavailable):
        _run(store.hit(_public("fresh"), 5, 3600, "m"))
    clock.now += 3600 - 1  # the first public keys expire (filled over one second)
    assert _calls(store.hit(_public("fresh"), 5, 3600, "m")) < 200  # dropped the expired one, counted
    assert _run(store.hit(_public("fresh"), 5, 3600, "m2")).remaining == 3


def test_expired_keys_go_a_few_per_operation_without_a_sweep_of_the_store() -> None:
    """Keys nobody touches again are dropped: before, by a sweep of every table every 1,024 operations."""
    store, clock = _full_store(2_000)
    clock.now += 3601
    known = _other("alice")
    for i in range(1_000):
        _run(store.hit(known, 10_000, 60, f"m{i}"))
    assert store.keys() == 1
