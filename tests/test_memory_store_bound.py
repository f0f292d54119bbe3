"""The in-memory store holds a bounded number of keys: a limit keyed by a value clients choose cannot grow a process.

Found by an attack pass: ``quota-by-key`` keyed by ``{query.apikey}`` made a counter per new value,
kept to the end of the month, so a client sending a fresh value per handshake grew the gateway
without bound (the Redis store is the operator's to bound: ``maxmemory``). Past ``store.max_keys``
live keys of a limit a new key is a store failure: ``on_store_error`` decides (open: admitted
unchecked, with the WARNING; closed: 503), and the keys already there go on counting. The bound is
per limit (a second attack pass: filling one API's client-keyed quota made every *other* API's
quota, keyed by a verified identity, refuse its new users with 503 for the rest of the month).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import ConfigError, WebSocketGateway, load_config
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.state.base import StoreUnavailable, store_key
from asgi_ws_gateway.state.memory import MemoryState
from support.clients import connect
from support.clock import Clock
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


async def test_past_max_keys_a_new_key_fails_and_the_known_ones_go_on_counting() -> None:
    clock = Clock()
    store = MemoryState(clock=clock, monotonic=clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert (await store.consume(key, 2, "hour")).allowed
    with pytest.raises(StoreUnavailable, match="3 live keys"):
        await store.consume("d", 2, "hour")
    assert (await store.consume("a", 2, "hour")).allowed
    assert not (await store.consume("a", 2, "hour")).allowed  # still counted: 2 of 2
    for kind in ("hit", "acquire"):  # each kind has its own bound
        for key in ("a", "b", "c"):
            await (store.hit(key, 5, 60, "m") if kind == "hit" else store.acquire(key, "lease", 5, 60))
        with pytest.raises(StoreUnavailable):
            await (store.hit("d", 5, 60, "m") if kind == "hit" else store.acquire("d", "lease", 5, 60))


async def test_expired_keys_make_room() -> None:
    clock = Clock()
    store = MemoryState(clock=clock, monotonic=clock, max_keys=2)
    await store.hit("a", 5, 60, "m")
    await store.hit("b", 5, 60, "m")
    clock.now += 61
    assert (await store.hit("c", 5, 60, "m")).allowed


@pytest.mark.parametrize(("on_store_error", "status"), [("open", None), ("closed", 503)])
async def test_end_to_end_fresh_values_past_the_bound_are_a_store_failure(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    on_store_error: str,
    status: int | None,
) -> None:
    quota = {"quota-by-key": {"key": "{query.apikey}", "limit": 5, "period": "month", "on_store_error": on_store_error}}
    config: dict[str, Any] = {"apis": [api_entry(upstream, policies=[quota])], "store": {"max_keys": 3}}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    for value in ("k1", "k2", "k3"):
        async with await connect(server.url(f"/ws/echo?apikey={value}")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    caplog.set_level(logging.WARNING)
    if status is None:
        async with await connect(server.url("/ws/echo?apikey=k4")) as ws:  # admitted unchecked, and said so
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert any("in-memory store holds 3 live keys" in r.getMessage() for r in caplog.records)
    else:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url("/ws/echo?apikey=k4"))
        assert refused.value.response.status_code == status


async def test_one_counter_full_leaves_the_others_room() -> None:
    store = MemoryState(max_keys=2)
    for value in ("a", "b"):
        await store.consume(store_key("p", "quota", "api:open.0", value), 5, "month")
    with pytest.raises(StoreUnavailable, match="2 live keys of this limit"):
        await store.consume(store_key("p", "quota", "api:open.0", "c"), 5, "month")
    for value in ("alice", "bob"):  # another limit, another API: its new users are counted
        assert (await store.consume(store_key("p", "quota", "api:paid.0", value), 5, "month")).allowed
    await store.acquire(store_key("p", "conc", "api:open.1", "a"), "lease-1", 5, 60)
    await store.release(store_key("p", "conc", "api:open.1", "a"), "lease-1")
    for value in ("x", "y"):  # a released lease's key no longer counts
        await store.acquire(store_key("p", "conc", "api:open.1", value), "lease-2", 5, 60)


async def test_end_to_end_a_full_public_limit_leaves_another_apis_limit_alone(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    def quota(key: str) -> dict[str, Any]:
        return {"quota-by-key": {"key": key, "limit": 5, "period": "month", "on_store_error": "closed"}}

    config: dict[str, Any] = {
        "apis": [
            api_entry(upstream, name="public", path="/public", policies=[quota("{query.device}")]),
            api_entry(upstream, name="paid", path="/paid", policies=[quota("{query.user}")]),
        ],
        "store": {"max_keys": 3},
    }
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    for value in ("d1", "d2", "d3"):
        async with await connect(server.url(f"/public?device={value}")):
            pass
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/public?device=d4"))
    assert refused.value.response.status_code == 503
    for user in ("alice", "bob", "carol"):  # new users of the other API: counted, admitted
        async with await connect(server.url(f"/paid?user={user}")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


@pytest.mark.parametrize("value", [0, -1, 10_000_001])
def test_max_keys_out_of_range_is_refused_by_field_path(value: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [], "store": {"max_keys": value}})
    assert any(problem.startswith("store.max_keys:") for problem in info.value.problems)
