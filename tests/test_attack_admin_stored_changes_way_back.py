"""Stored changes that no longer fit stop the start-up, saying which API and where they are kept.

An admin-token holder (or the operator) created API ``ovl`` at ``/ws/ovl`` through the management API,
with a product and a subscription on it; the configuration file then gained ``fileovl`` at the same
path. ``asgi-ws-gateway run`` refused to start (as documented: it never drops a stored change), saying
``apis[2].path: '/ws/ovl' overlaps apis[1].path '/ws/ovl'`` — indexes into the merged list, which
neither the file nor the store holds — and nothing about where the changes were kept or how to get
back: the management API that could change them does not start either. An unfit worker's ERROR
numbered them the same way. Now each problem names the API (``API 'ovl' path: ...``), the last line
says where the stored changes are (the state file, the Redis hash's ``doc`` field) and points to the
way back in docs/management.md, which this test follows: the document edited there, the gateway
starts with the subscription kept. A real Redis (a key prefix of its own) and a real state file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.management import FileStore, Manager
from asgi_ws_gateway.management.overlay import Overlay
from asgi_ws_gateway.management.redis_store import RedisStore, state_key
from asgi_ws_gateway.standalone import not_found
from support.redis import SHARED_REDIS, redis_available, unique_prefix

UPSTREAM = "ws://127.0.0.1:9/"
FILE: dict[str, Any] = {
    "apis": [
        {"name": "echo", "path": "/ws/echo", "upstreams": [UPSTREAM]},
        {"name": "fileovl", "path": "/ws/ovl", "upstreams": [UPSTREAM]},
    ]
}
STORED = Overlay(
    revision=3,
    apis={"ovl": {"name": "ovl", "path": "/ws/ovl", "upstreams": [UPSTREAM]}},
    products={"gold": {"name": "gold", "apis": ["ovl"]}},
    subscriptions={
        "alice": {"id": "alice", "product": "gold", "name": "alice", "key_sha256": "0" * 64, "created_at": 1.0}
    },
)


async def _start(store: Any) -> list[str]:
    """The problems of a start-up on ``FILE`` and ``store`` (none: it started, and stopped again)."""
    manager = Manager(WebSocketGateway(not_found, config=FILE), store=store)
    try:
        await manager.start()
    except ConfigError as exc:
        return exc.problems
    finally:
        await manager.stop()
    assert [s["id"] for s in manager.overlay.subscriptions.values()] == ["alice"]
    return []


def _moved(document: str) -> str:
    """The way back docs/management.md gives: the stored API edited in the state document."""
    state = json.loads(document)
    state["apis"]["ovl"]["path"] = "/ws/ovl2"
    return json.dumps(state)


def _assert_named(problems: list[str], where: str) -> None:
    assert problems[:2] == [
        "the stored changes do not fit the configuration file:",
        "API 'ovl' path: '/ws/ovl' overlaps API 'fileovl' path '/ws/ovl'",
    ], problems
    assert problems[2].startswith("to start: change the configuration file so that they fit, or take what does")
    assert f"({where})" in problems[2] and "docs/management.md#when-the-stored-changes-do-not-fit" in problems[2]


async def test_a_state_file_that_no_longer_fits_names_the_api_and_the_file(tmp_path: Path) -> None:
    state = tmp_path / "gateway.state.json"
    state.write_text(STORED.to_json())
    _assert_named(await _start(FileStore(state)), f"the file {state}")
    state.write_text(_moved(state.read_text()))
    assert await _start(FileStore(state)) == []


@pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")
async def test_a_redis_state_that_no_longer_fits_names_the_api_and_the_key() -> None:
    prefix = unique_prefix()
    key = state_key(prefix)
    client: Redis = Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        await client.hset(key, mapping={"doc": STORED.to_json(), "revision": STORED.revision})
        _assert_named(
            await _start(RedisStore.from_url(SHARED_REDIS, prefix=prefix)), f"the field doc of the Redis hash {key}"
        )
        document = await client.hget(key, "doc")
        assert isinstance(document, str)
        await client.hset(key, "doc", _moved(document))
        assert await _start(RedisStore.from_url(SHARED_REDIS, prefix=prefix)) == []
    finally:
        await client.delete(key, f"{prefix}:{{mgmt}}:workers", f"{prefix}:{{mgmt}}:workers:epoch")
        await client.aclose()
