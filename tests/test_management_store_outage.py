"""The management API when its store fails (Redis down, a state file unreadable): 503 with Retry-After, never a 500.

Real uvicorn, a private redis-server stopped and started again, a state file broken and mended, a
real upstream. The WebSockets the gateway serves do not depend on the store and keep working.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement, ManagementAPIError, ManagementClient, RedisStore
from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.management.errors import Unavailable
from asgi_ws_gateway.management.overlay import Overlay
from asgi_ws_gateway.management.redis_store import state_key
from asgi_ws_gateway.redis_client import connect as connect_redis
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.management import TOKEN, api, managed_gateway
from support.processes import EXE, SRC
from support.redis import SHARED_REDIS, RedisServer, unique_prefix
from support.servers import UvicornServer, free_port
from support.upstream import UpstreamServer


def _managed(upstream: UpstreamServer, redis: RedisServer) -> GatewayManagement:
    gateway = WebSocketGateway(not_found, config={"apis": [api("echo", "/ws/echo", upstream)]})
    return GatewayManagement(
        gateway, admin_token=TOKEN, redis_url=redis.url, redis_prefix=unique_prefix(), poll_interval=0.1
    )


async def _echo(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_redis_down_is_503_with_retry_after_then_the_api_recovers(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_ws_gateway.management")
    added = api("added", "/ws/added", upstream)
    with RedisServer() as redis, UvicornServer(_managed(upstream, redis), lifespan="on") as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        base = server.url("/_gateway/", scheme="http")
        async with httpx2.AsyncClient(base_url=base, headers=headers, trust_env=False, timeout=15) as http:
            assert (await http.get("apis")).status_code == 200
            redis.stop()
            requests: list[tuple[str, str, Any]] = [
                ("GET", "apis", None),
                ("POST", "apis", added),
                ("PUT", "apis/echo", api("echo", "/ws/echo2", upstream)),
                ("DELETE", "apis/echo", None),
                ("GET", "connections", None),
            ]
            for method, path, body in requests:
                response = await http.request(method, path, json=body)
                assert response.status_code == 503, (method, path, response.text)
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["detail"].endswith("(Redis) failed: ConnectionError")
            async with ManagementClient(base, token=TOKEN) as client:  # the SDK says when to try again
                with pytest.raises(ManagementAPIError) as info:
                    await client.create_api(added)
                assert (info.value.status, info.value.retry_after) == (503, 1.0)
            await _echo(server.url("/ws/echo"))  # nothing was changed, and the data path does not need Redis
            await asyncio.sleep(0.5)  # five polls of the store while it is down
            redis.start()
            async with asyncio.timeout(15):
                while (await http.post("apis", json=added)).status_code != 201:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            async with asyncio.timeout(15):  # the poll sees the store answer: before the server stops
                while not any("the state store answers again" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await _echo(server.url("/ws/added"))
            await _echo(server.url("/ws/echo"))

    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("cannot read the state store" in m for m in messages) == 1, messages  # once per outage
    # The outage's end at INFO, once (a WARNING before: an alert on WARNING lines fired again as it ended).
    ends = [(r.levelno, r.getMessage()) for r in caplog.records if "the state store answers again" in r.getMessage()]
    assert [level for level, _message in ends] == [logging.INFO], ends
    assert sum(m.startswith("management bus: lost Redis") for m in messages) == 1, messages
    failed = [m for m in messages if m.startswith("management ") and " failed: 503 " in m]
    assert len(failed) >= len(requests) and all("Connection refused" in m or "closed" in m for m in failed), failed


def test_redis_down_at_start_up_fails_it_with_the_reason(tmp_path: Path) -> None:
    """Serving without the stored changes would bring back APIs deleted through the API: do not start."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis:\n  - {name: echo, path: /ws/echo, upstreams: ['ws://127.0.0.1:9/']}\n")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    argv = [str(EXE), "run", str(config), "--port", "0", "--management", "/_gateway", "--redis", dead]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}  # the tree under test
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert f"management API: cannot read the stored changes from {dead}: connection refused" in done.stderr, done.stderr
    assert "(ConnectionError: Error 111 connecting to" in done.stderr, done.stderr
    assert "not starting" in done.stderr and "Traceback" not in done.stderr, done.stderr


class _RacingClient:
    """A redis client whose calls fail as redis-py 8.1's cluster client races (``AttributeError``)."""

    def __init__(self) -> None:
        self.failures = {"hget": 0, "save": 0}  # how many of the next calls fail
        self.saves: list[list[Any]] = []
        self.document = Overlay().next().to_json()

    def register_script(self, script: str) -> Any:
        async def save(keys: list[str], args: list[Any]) -> int:
            self.saves.append(args)
            self._maybe_fail("save")
            return int(args[2])

        return save

    async def initialize(self) -> None:
        pass

    async def hget(self, key: str, field: str) -> str:
        self._maybe_fail("hget")
        return self.document if field == "doc" else "1"

    def _maybe_fail(self, call: str) -> None:
        if self.failures[call]:
            self.failures[call] -= 1
            raise AttributeError("'NoneType' object has no attribute 'writelines'")


async def test_the_cluster_clients_race_is_retried_once_with_the_same_attempt() -> None:
    racing = _RacingClient()
    store = RedisStore(racing, prefix="p")  # type: ignore[arg-type]
    racing.failures["save"] = 1
    saved = await store.update(lambda overlay: overlay.next())
    assert saved.revision == 2
    assert len(racing.saves) == 2 and racing.saves[0] == racing.saves[1]  # same attempt id: applied once
    racing.failures["hget"] = 1
    assert (await store.load()).revision == 1
    racing.failures["hget"] = 2  # twice in a row: an outage, not the race
    with pytest.raises(Unavailable, match="AttributeError"):
        await store.revision()


async def test_a_state_file_that_cannot_be_read_is_503_until_it_can(
    upstream: UpstreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-edited state file, or a path that is no file (a full disk, a read-only one fail alike)."""
    state = tmp_path / "state.json"
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.management")  # the outage's end is an INFO line
    added = api("added", "/ws/added", upstream)
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, state, poll_interval=0.1) as managed:
        async with managed.http() as http:
            assert (await http.post("apis", json=added)).status_code == 201
            saved = state.read_bytes()
            deep = b'{"apis": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            for broken in (b'{"format": 1, "revision": "x"}', b"\xff\xfe", b"{bad", deep):
                state.write_bytes(broken)
                for method, path, body in [("GET", "apis", None), ("DELETE", "apis/added", None)]:
                    response = await http.request(method, path, json=body)
                    assert response.status_code == 503, (broken, method, response.text)
                    assert response.json()["detail"] == "the state store (file) failed: StateFileInvalid"
                    assert response.headers["retry-after"] == "1"
            state.unlink()
            state.mkdir()  # read_bytes: IsADirectoryError
            response = await http.get("apis")
            assert response.json()["detail"] == "the state store (file) failed: IsADirectoryError"
            await _echo(managed.url("/ws/added"))  # what was applied keeps serving
            await asyncio.sleep(0.3)
            state.rmdir()
            state.write_bytes(saved)
            assert (await http.delete("apis/added")).status_code == 204
            async with asyncio.timeout(5):  # the poll (every 0.1 s) sees it answer: before the server stops
                while not any("the state store answers again" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a store failure"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("is not a state document (JSONDecodeError" in m for m in messages), messages
    assert sum("cannot read the state store" in m for m in messages) == 1, messages
    # The outage's end at INFO, once (a WARNING before: an alert on WARNING lines fired again as it ended).
    ends = [(r.levelno, r.getMessage()) for r in caplog.records if "the state store answers again" in r.getMessage()]
    assert [level for level, _message in ends] == [logging.INFO], ends


def test_a_state_file_that_is_not_a_state_document_fails_start_up_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis:\n  - {name: echo, path: /ws/echo, upstreams: ['ws://127.0.0.1:9/']}\n")
    state = tmp_path / "state.json"
    state.write_text('{"format": 1, "apis": {}}')
    argv = [str(EXE), "run", str(config), "--port", "0", "--management", "/_gateway", "--state", str(state)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}  # the tree under test
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    expected = (
        f"management API: cannot read the stored changes ({state} is not a state document (KeyError: 'revision'))"
    )
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr


async def test_a_state_document_in_redis_that_is_not_one_is_unavailable_not_a_500() -> None:
    """Something else wrote the key (another tool, a hand edit): the store says so, with the key in the log."""
    prefix = unique_prefix()
    store = RedisStore.from_url(SHARED_REDIS, prefix=prefix)
    try:
        await store.update(lambda overlay: overlay.next())
        await store.client.hset(state_key(prefix), "doc", "[not a state document")
        with pytest.raises(Unavailable) as info:
            await store.load()
        assert info.value.detail == "the state store (Redis) failed: StateFileInvalid"
        assert str(info.value.__cause__).startswith(f"{state_key(prefix)} in Redis is not a state document (")
    finally:
        await store.client.delete(state_key(prefix))
        await store.aclose()


async def test_a_bus_redis_will_not_let_subscribe_is_unavailable_and_leaves_no_task() -> None:
    """Redis answers commands but refuses SUBSCRIBE (an ACL): start-up used to end in a bare TimeoutError
    after 10 s, its listener task left running; then in 'did not subscribe it within 10 s', the refusal
    retried all along. Now at once, with Redis's reason."""
    with RedisServer() as server:
        admin = Redis(port=server.port)
        await admin.acl_setuser(
            "nosub", enabled=True, passwords=["+pw"], keys=["~*"], channels=["&*"], commands=["+@all", "-@pubsub"]
        )
        await admin.aclose()
        bus = RedisBus(connect_redis(f"redis://nosub:pw@127.0.0.1:{server.port}/0", decode_responses=True))

        async def handler(command: Command) -> Command | None:
            return None

        with pytest.raises(Unavailable, match=r"Redis refused to subscribe it \(NoPermissionError: .*'subscribe'"):
            await bus.start(handler)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "management-bus"]
        await bus.aclose()
