"""Persistence: the overlay's merge rules, file and Redis stores under concurrency, and restarts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_ws_gateway import load_config
from asgi_ws_gateway.management import FileStore, Overlay, RedisStore
from asgi_ws_gateway.management.overlay import merge
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

REDIS_URL = "redis://127.0.0.1:6379/0"
BASE = load_config({"apis": [{"name": n, "path": f"/ws/{n}", "upstreams": ["ws://x/"]} for n in ("a", "b", "c")]})


def _add(name: str) -> object:
    def change(overlay: Overlay) -> Overlay:
        return overlay.next(
            apis={**overlay.apis, name: {"name": name, "path": f"/ws/{name}", "upstreams": ["ws://x/"]}}
        )

    return change


def test_merge_replaces_in_place_hides_tombstones_and_appends_new_apis_in_order() -> None:
    overlay = Overlay(revision=3, apis={
        "z": {"name": "z", "path": "/ws/z", "upstreams": ["ws://z/"]},
        "b": {"name": "b", "path": "/ws/b2", "upstreams": ["ws://b/"]},
        "a": None,
        "y": {"name": "y", "path": "/ws/y", "upstreams": ["ws://y/"]},
    })  # fmt: skip
    merged = merge(BASE, overlay)
    assert [(a.name, a.path) for a in merged.apis] == [("b", "/ws/b2"), ("c", "/ws/c"), ("z", "/ws/z"), ("y", "/ws/y")]


def test_overlay_round_trips_through_json() -> None:
    overlay = Overlay(revision=7, apis={"a": None}, products={"p": {"name": "p"}}, subscriptions={"s": {"id": "s"}})
    assert Overlay.from_json(overlay.to_json()) == overlay
    with pytest.raises(ValueError, match="format"):
        Overlay.from_json('{"format": 99}')


async def test_file_store_writes_atomically_and_serializes_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    stores = [FileStore(path) for _ in range(4)]  # as if four processes shared the file
    await asyncio.gather(*(s.update(_add(f"api{i}-{k}")) for i, s in enumerate(stores) for k in range(10)))  # type: ignore[arg-type]
    loaded = await FileStore(path).load()
    assert loaded.revision == 40 and len(loaded.apis) == 40
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json", "state.json.lock"]  # no temp file left


def test_file_store_serializes_writers_in_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    script = (
        "import asyncio, sys\n"
        "from asgi_ws_gateway.management import FileStore\n"
        "store = FileStore(sys.argv[1])\n"
        "async def main():\n"
        "    for k in range(15):\n"
        "        name = f'{sys.argv[2]}-{k}'\n"
        "        await store.update(lambda o: o.next(apis={**o.apis, name: {'name': name}}))\n"
        "asyncio.run(main())\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(path), f"p{i}"]) for i in range(3)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    document = json.loads(path.read_text())
    assert document["revision"] == 45 and len(document["apis"]) == 45


async def test_an_aborted_update_saves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state.json")
    await store.update(_add("kept"))  # type: ignore[arg-type]

    def fail(overlay: Overlay) -> Overlay:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await store.update(fail)
    assert (await store.load()).apis.keys() == {"kept"} and await store.revision() == 1


async def test_redis_store_keeps_every_concurrent_update(redis_prefix: str) -> None:
    stores = [RedisStore.from_url(REDIS_URL, prefix=redis_prefix) for _ in range(4)]
    try:
        await asyncio.gather(*(s.update(_add(f"api{i}-{k}")) for i, s in enumerate(stores) for k in range(10)))  # type: ignore[arg-type]
        loaded = await stores[0].load()
        assert loaded.revision == 40 == await stores[1].revision()
        assert len(loaded.apis) == 40
    finally:
        for store in stores:
            await store.aclose()


async def test_a_save_the_redis_client_sends_again_is_applied_once(redis_prefix: str) -> None:
    """redis-py sends a command again after a timeout or a dropped connection, when the first may have
    been applied: the same attempt is then taken as done (not a conflict that makes the store apply
    the change a second time), while another attempt at the same revision is still a conflict."""
    store = RedisStore.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        document = Overlay().next().to_json()
        args: list[str | int] = [0, document, 1, "attempt-1"]
        assert int(await store._save(keys=[store._key], args=args)) == 1
        assert int(await store._save(keys=[store._key], args=args)) == 1  # the same attempt, again
        assert int(await store._save(keys=[store._key], args=[0, document, 1, "attempt-2"])) == -1
        assert await store.revision() == 1
    finally:
        await store.aclose()


async def test_restart_loses_nothing_added_through_the_api(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    state = tmp_path / "state.json"
    with managed_gateway(config, state) as first:
        async with first.client() as client:
            for i in range(5):
                await client.create_api(api(f"added{i}", f"/ws/added/{i}", upstream))
            await client.replace_api("echo", api("echo", "/ws/echo2", upstream))
            await client.create_product("gold", ["added0", "added1"])
            key = (await client.create_subscription("gold", subscription_id="sub-1"))["key"]
            await client.suspend_subscription("sub-1")
            before = await client.export_config(), await client.list_products(), await client.list_subscriptions()
    with managed_gateway(config, state) as second:
        async with second.client() as client:
            after = await client.export_config(), await client.list_products(), await client.list_subscriptions()
        async with await connect(second.url("/ws/added/3")) as ws:
            await ws.send("survived")
            assert await ws.recv() == "survived"
    assert after == before
    assert [a["name"] for a in after[0]["apis"]] == ["echo", *(f"added{i}" for i in range(5))]
    assert after[2][0]["state"] == "suspended" and key not in state.read_text()
