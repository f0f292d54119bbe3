"""The relay winds down to the end whatever cancels it meanwhile: both sides closed, ``finished`` set.

A second cancellation while :meth:`Relay.run` closed the two sides (a shutdown that cancels again,
a cancel scope that cancels every await, as anyio's do) cut the wind-down short: the upstream was
never closed -- its socket and keepalive kept for as long as it answered pings -- and ``finished``
never set, so a drain waited out its grace for it. Pure asyncio: a fake upstream and client whose
close of the client hangs (a client that reads nothing), so that the wind-down is still going when
the next cancellation comes.
"""

from __future__ import annotations

import asyncio

import pytest

from asgi_ws_gateway.relay.pumps import Relay
from support.relay_fakes import CLOSE_TIMEOUT, HANG, FakeClient, FakeUpstream


def _relay() -> tuple[Relay, FakeClient, FakeUpstream]:
    client, upstream = FakeClient(faults={"websocket.close": "hang"}), FakeUpstream()
    relay = Relay(client.receive, client.send, upstream, max_message_size=100, close_timeout=CLOSE_TIMEOUT)
    return relay, client, upstream


@pytest.mark.parametrize("turns", [0, 1, 3])
async def test_a_second_cancellation_while_winding_down_still_closes_the_upstream(turns: int) -> None:
    """Cancelled, then again while the client's close waits: the upstream gets its 1001, the
    cancellation propagates, and no task is left."""
    relay, _client, upstream = _relay()
    before = asyncio.all_tasks()
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0)
    task.cancel()
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.sleep(CLOSE_TIMEOUT / 2)  # the client's close is waited for now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert upstream.closes[0] == (1001, "gateway error")
    assert relay.finished.is_set()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_a_cancellation_at_every_await_still_winds_down_in_bounded_time() -> None:
    """Cancelled at each loop turn (a cancel scope's way): over within the close timeouts, both sides closed."""
    relay, _client, upstream = _relay()
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
        assert loop.time() - started < HANG
    assert task.cancelled()
    assert upstream.closes[0] == (1001, "gateway error") and relay.finished.is_set()
