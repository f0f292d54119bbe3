"""Backend caps, unit level: ``max_connecting``'s turns (``ConnectingGate``), ``max_connections``'s slots in
``BackendPool.open`` given back on every way a connect ends, and the configuration's checks by field path."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.errors import GatewayOverloaded, UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from asgi_ws_gateway.schema import json_schema
from asgi_ws_gateway.upstream.backend_caps import ConnectingGate
from asgi_ws_gateway.upstream.balancing import Backend, BackendPool
from asgi_ws_gateway.upstream.base import Connector


def _pool(*caps: int | None, **api: Any) -> BackendPool:
    config = ApiConfig.model_validate(
        {"name": "chat", "path": "/chat", "upstreams": [f"ws://b{i}/" for i in range(len(caps))], **api}
    )
    backends = [Backend(f"b{i}", cast(Connector, None), i, max_connections=cap) for i, cap in enumerate(caps)]
    return BackendPool(config, backends)


async def _opened(backend: Backend) -> str:
    return backend.label


async def test_a_full_backend_is_skipped_for_the_next() -> None:
    """Cap 1 on b0: the third connect, b0's turn in the rotation, goes to b1."""
    pool = _pool(1, None)
    chosen = [(await pool.open(_opened))[0].label for _ in range(3)]
    assert chosen == ["b0", "b1", "b1"]
    assert [b.connections for b in pool.backends] == [1, 2]


async def test_every_backend_full_is_503_upstream_full_at_once() -> None:
    pool = _pool(1, 1)
    held = [await pool.open(_opened) for _ in range(2)]
    with pytest.raises(GatewayOverloaded) as refused:
        await pool.open(_opened)
    assert (refused.value.status, refused.value.reason) == (503, "upstream_full")
    assert (b"retry-after", b"5") in refused.value.headers
    assert "API chat" in refused.value.detail and "b0 (1 of 1)" in refused.value.detail
    held[0][2].release()
    assert (await pool.open(_opened))[0].label == "b0"  # a slot given back is taken again


@pytest.mark.parametrize(
    "failure",
    [UpstreamUnreachable("down"), UpstreamTimeout("slow"), UpstreamRejected(403, [], b""),
     GatewayOverloaded("no descriptors"), asyncio.CancelledError()],
    ids=["unreachable", "timeout", "refused", "overloaded", "cancelled"],
)  # fmt: skip
async def test_a_connect_that_fails_gives_its_slot_and_its_turn_back(failure: BaseException) -> None:
    pool = _pool(1, 1, max_connecting=1)

    async def fails(backend: Backend) -> str:
        raise failure

    with pytest.raises(type(failure)):
        await pool.open(fails)
    assert [b.connections for b in pool.backends] == [0, 0]
    assert (pool.connecting.in_flight, pool.connecting.waiting) == (0, 0)


async def test_an_accepted_connection_s_slot_is_given_back_when_its_trial_ends() -> None:
    pool = _pool(1)
    backend, _, slot = await pool.open(_opened)
    trial = pool.opened(backend, slot)
    assert (backend.connections, backend.active) == (1, 1)

    class End:
        closed_by, close_code, close_reason, messages_in_at_close = "client", 1000, "", 0

    trial.ended(End())
    slot.release()  # a second release (a caller's own cleanup) takes nothing back twice
    assert (backend.connections, backend.active) == (0, 0)


async def test_connects_past_max_connecting_wait_their_turn_in_order() -> None:
    pool = _pool(None, max_connecting=1)
    release = asyncio.Event()
    order: list[str] = []

    async def held(backend: Backend) -> str:
        await release.wait()
        return backend.label

    async def client(name: str) -> None:
        await pool.open(held)
        order.append(name)

    tasks = [asyncio.create_task(client(name)) for name in "abc"]
    while pool.connecting.waiting < 2:  # noqa: ASYNC110 - the tasks' own progress, no event to await
        await asyncio.sleep(0)
    assert (pool.connecting.in_flight, pool.backends[0].connections) == (1, 1)  # one upstream handshake at a time
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]
    assert (pool.connecting.in_flight, pool.connecting.waiting) == (0, 0)


async def test_a_wait_past_connect_timeout_is_503_upstream_queue_timeout() -> None:
    pool = _pool(None, max_connecting=1, connect_timeout=0.05)
    never = asyncio.Event()

    async def hangs(backend: Backend) -> str:
        await never.wait()
        return backend.label

    first = asyncio.create_task(pool.open(hangs))
    while not pool.connecting.in_flight:  # noqa: ASYNC110 - the task's own progress
        await asyncio.sleep(0)
    with pytest.raises(GatewayOverloaded) as refused:
        await pool.open(hangs)
    assert (refused.value.status, refused.value.reason) == (503, "upstream_queue_timeout")
    assert "max_connecting 1" in refused.value.detail
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert (pool.connecting.in_flight, pool.connecting.waiting, pool.backends[0].connections) == (0, 0, 0)


async def test_a_waiter_that_leaves_holds_no_turn() -> None:
    """A client gone while it waited: the turn goes to the next waiter, none is lost or doubled."""
    gate = ConnectingGate(1)
    assert await gate.enter(1)
    leaving = asyncio.create_task(gate.enter(10))
    staying = asyncio.create_task(gate.enter(10))
    while gate.waiting < 2:  # noqa: ASYNC110 - the tasks' own progress
        await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    gate.leave()
    assert await staying is True
    assert (gate.in_flight, gate.waiting) == (1, 0)
    gate.leave()
    assert gate.in_flight == 0


async def test_a_turn_handed_to_a_waiter_cancelled_at_once_goes_to_the_next() -> None:
    gate = ConnectingGate(1)
    assert await gate.enter(1)
    first = asyncio.create_task(gate.enter(10))
    second = asyncio.create_task(gate.enter(10))
    while gate.waiting < 2:  # noqa: ASYNC110 - the tasks' own progress
        await asyncio.sleep(0)
    gate.leave()  # the turn is handed to ``first``...
    first.cancel()  # ...which is cancelled before it runs again
    await asyncio.gather(first, return_exceptions=True)
    assert await second is True
    assert gate.in_flight == 1


async def test_a_raised_limit_lets_the_waiters_in() -> None:
    """A configuration change that raises (or lifts) max_connecting applies to the handshakes waiting."""
    gate = ConnectingGate(1)
    assert await gate.enter(1)
    waiting = [asyncio.create_task(gate.enter(10)) for _ in range(3)]
    while gate.waiting < 3:  # noqa: ASYNC110 - the tasks' own progress
        await asyncio.sleep(0)
    gate.set_limit(None)
    assert gate.waiting == 0
    assert await gate.enter(0) is True  # no waiting behind those let in: a turn at once
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert gate.in_flight == 5


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "Input should be greater than or equal to 1 (got 0)"),
        (-3, "Input should be greater than or equal to 1 (got -3)"),
        (True, "a number, not a boolean (true)"),
        (10**30, "Input should be less than or equal to 10000000"),
        (2.5, "Input should be a valid integer, got a number with a fractional part (got 2.5)"),
    ],
)
def test_bad_caps_are_refused_by_field_path(value: Any, message: str) -> None:
    upstream = {"url": "ws://a/", "max_connections": value}
    problems = _problems(
        {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://b/", upstream], "max_connecting": value}]}
    )
    assert sorted(p.split(":", 1)[0] for p in problems) == [
        "apis[0].max_connecting",
        "apis[0].upstreams[1].max_connections",
    ]
    assert all(message in p for p in problems), problems


def test_caps_default_to_none_and_are_in_the_schema() -> None:
    config = load_config({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://b/"]}]})
    assert (config.apis[0].max_connecting, config.apis[0].upstreams[0].max_connections) == (None, None)
    schema = json_schema()
    api = schema["$defs"]["ApiConfig"]["properties"]
    upstream = schema["$defs"]["UpstreamConfig"]["properties"]
    for field in (api["max_connecting"], upstream["max_connections"]):
        assert field["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 10_000_000}
        assert field["default"] is None
