"""rate-limit-messages with a shared key keeps a bounded number of per-worker budgets.

Found by an attack pass: each worker kept a budget for every key value it had seen, dropped only
two windows later: 50,000 connections with a fresh ``{query.dev}`` each left 50,000 budgets
(+33.9 MB) in the policy, whatever ``store.max_keys`` said. Now a budget stays while a connection
holds it, and the budgets of the last ``IDLE_BUDGETS`` keys besides.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import pytest

from asgi_ws_gateway.errors import DropMessage
from asgi_ws_gateway.messages.context import ConnectionContext, MessageHandler, WsMessage
from asgi_ws_gateway.policies.build_entries import PolicyBuilder
from asgi_ws_gateway.policies.message_rates import IDLE_BUDGETS, SharedBudget
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.state.base import Reservation
from asgi_ws_gateway.state.memory import MemoryState
from support.policies import context

LIMIT = {"rate-limit-messages": {"key": "{query.dev}", "messages": 3, "window": 3600, "action": "drop", "batch": 1}}


class CountingStore(MemoryState):
    """The memory store, counting the reservations asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.reservations = 0

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        self.reservations += 1
        return await super().reserve(key, window, requests)


class Relay:
    async def close(self, *args: Any) -> None:
        pass

    async def send_to_client(self, data: str | bytes) -> bool:
        return True

    async def send_to_upstream(self, data: str | bytes) -> bool:
        return True

    def start(self, task: Any) -> None:
        pass


def _policy(store: MemoryState) -> Any:
    builder = PolicyBuilder(store)
    (policy,) = builder.build_message_policies([LIMIT], ("message_policies", "inbound"), "msg")
    assert builder.problems == []
    return policy


def _attach(policy: Any, dev: str) -> tuple[MessageHandler, ConnectionContext]:
    connection = ConnectionContext(context(query=f"dev={dev}"), RelayStats(), Relay())
    return policy.attach(connection, "inbound"), connection


async def _send(handler: MessageHandler, connection: ConnectionContext) -> bool:
    """Whether the policy lets one message through."""
    waiting = handler(WsMessage("x", 1, "inbound", connection))
    try:
        if waiting is not None:
            await waiting
    except DropMessage:
        return False
    return True


def _budgets() -> int:
    gc.collect()
    return sum(isinstance(thing, SharedBudget) for thing in gc.get_objects())


async def test_connections_with_fresh_keys_leave_a_bounded_number_of_budgets() -> None:
    """Before: one budget per value seen, 3,072 of them here."""
    policy = _policy(MemoryState())
    before = _budgets()
    for i in range(3 * IDLE_BUDGETS):
        assert await _send(*_attach(policy, f"device-{i}"))
    assert _budgets() - before <= IDLE_BUDGETS


@pytest.mark.parametrize("held", [True, False])
async def test_a_keys_spent_budget_is_kept_while_held_or_seen_lately(held: bool) -> None:
    """A connection of a key whose window is spent is refused by its worker, without asking the store
    again: while another connection of the key is open, however many keys came since, or when the
    key was among the last seen."""
    store = CountingStore()
    policy = _policy(store)
    first = _attach(policy, "alice")
    assert [await _send(*first) for _ in range(4)] == [True, True, True, False]
    assert store.reservations == 2  # the window's 3, then the answer that it is spent
    if held:
        for i in range(2 * IDLE_BUDGETS):
            _attach(policy, f"device-{i}")
    else:
        del first
    assert not await _send(*_attach(policy, "alice"))
    assert store.reservations == 2
