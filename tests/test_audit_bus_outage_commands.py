"""Connection commands while a worker is off the management bus: the API says so, never "done" or "none".

``PUBLISH`` counts the workers subscribed at that moment, and the asking worker waited for that many
answers: a worker that had lost Redis (cut off, or still subscribing again after a Redis restart)
was simply not counted. Asked through another worker, closing or sending to a connection it held
answered 404 ``no open connection`` and a listing answered "1 of 1 workers", without it: an operator
told a connection was gone while it stayed open. Now each worker on the bus keeps its entry in a
roster (and remembers the roster across a Redis that lost its data); a command that finds nothing
while a worker of the roster did not answer is a 503 naming it, a listing counts it as missing, and
a command refused so is never run later. Two ``asgi-ws-gateway run`` processes on a private
``redis-server``, one of them through a proxy that cuts it off.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway.management import ManagementAPIError, ManagementClient
from asgi_ws_gateway.management.answers import an_object
from asgi_ws_gateway.management.bus import Answers, Command, RedisBus
from asgi_ws_gateway.redis_client import connect as connect_redis
from support.clients import connect
from support.processes import standalone
from support.redis import DelayingProxy, RedisServer, redis_available, unique_prefix
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed: nothing listens there


async def _listing(client: ManagementClient) -> dict[str, Any]:
    """``GET /connections`` once the asking worker is on the bus again (its own answer among them)."""
    async with asyncio.timeout(30):
        while True:
            try:
                listing: dict[str, Any] = await client._call("GET", "connections", an_object)
            except ManagementAPIError as exc:
                assert exc.status == 503, exc
            else:
                if listing["workers"]["answered"] >= 1:
                    return listing
            await asyncio.sleep(0.1)


async def _refused(client: ManagementClient, path: str, body: dict[str, Any]) -> ManagementAPIError:
    with pytest.raises(ManagementAPIError) as refused:
        await client._call("POST", path, an_object, json=body)
    return refused.value


async def _received_until_closed(ws: ClientConnection) -> tuple[list[str], int | None]:
    messages: list[str] = []
    async with asyncio.timeout(10):
        try:
            while True:
                messages.append(str(await ws.recv()))
        except ConnectionClosed as exc:
            return messages, exc.rcvd.code if exc.rcvd is not None else None


async def test_commands_for_a_worker_off_the_bus_are_refused_by_name_and_never_run_later(
    tmp_path: Path, upstream: UpstreamServer, private_redis: RedisServer
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n")
    prefix = unique_prefix()
    admin = Redis.from_url(private_redis.url)
    with DelayingProxy(port=private_redis.port) as proxy:
        async with (
            standalone(config, "--redis", private_redis.url, "--redis-prefix", prefix) as a,
            standalone(config, "--redis", proxy.url, "--redis-prefix", prefix) as b,
        ):
            try:
                async with asyncio.timeout(30):
                    while (await _listing(a.client))["workers"] != {"answered": 2, "expected": 2}:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                async with await connect(b.ws("/ws/echo")) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                    (held,) = (await _listing(a.client))["connections"]
                    worker_b = held["worker"]
                    close, send = f"connections/{held['id']}/close", f"connections/{held['id']}/messages"

                    # B cut off from Redis (its connections dropped, none made again); A subscribes again.
                    proxy.target = ("127.0.0.1", _dead_port())
                    await admin.client_kill_filter(_type="normal", skipme=True)
                    await admin.client_kill_filter(_type="pubsub")
                    listing = await _listing(a.client)
                    assert listing["connections"] == []
                    assert listing["workers"] == {"answered": 1, "expected": 2, "missing": [worker_b]}
                    for path, body in ((close, {"code": 4001}), (send, {"text": "lost?"})):
                        refused = await _refused(a.client, path, body)
                        assert refused.status == 503, refused
                        assert "not on the management bus" in refused.detail, refused.detail
                        assert any(worker_b in problem for problem in refused.problems), refused.problems

                    # Redis down: nothing reaches anyone, and the API says so.
                    private_redis.stop()
                    refused = await _refused(a.client, close, {"code": 4001})
                    assert refused.status == 503 and "management bus" in refused.detail, refused
                    # Back without its data (the roster gone with it), B still cut off: A remembers B.
                    private_redis.start()
                    listing = await _listing(a.client)
                    assert listing["workers"] == {"answered": 1, "expected": 2, "missing": [worker_b]}
                    refused = await _refused(a.client, close, {"code": 4001})
                    assert refused.status == 503 and worker_b in "".join(refused.problems), refused

                    # B back: what was refused is not run now; what is asked now is, once.
                    proxy.target = ("127.0.0.1", private_redis.port)
                    async with asyncio.timeout(30):
                        while (await _listing(a.client))["workers"] != {"answered": 2, "expected": 2}:  # noqa: ASYNC110
                            await asyncio.sleep(0.1)
                    answer = await a.client._call("POST", send, an_object, json={"text": "now"})
                    assert answer["worker"] == worker_b
                    answer = await a.client._call("POST", close, an_object, json={"code": 4002})
                    assert answer["worker"] == worker_b
                    assert await _received_until_closed(ws) == (["now"], 4002)
            finally:
                await admin.aclose()


def _bus(url: str, prefix: str) -> RedisBus:
    return RedisBus(connect_redis(url, decode_responses=True, encoding_errors="replace"), prefix=prefix,
                    check_interval=0.2)  # fmt: skip


async def _both_answer(bus: RedisBus) -> Answers:
    """Once two workers answer ``bus``'s command and none of its roster is missing: those answers."""
    async with asyncio.timeout(10):
        while (answers := await bus.gather({"op": "who"}, wait=1)).missing or len(answers.replies) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return answers


async def test_a_command_delivered_twice_runs_once(private_redis: RedisServer) -> None:
    """redis-py sends a ``PUBLISH`` again when its connection dropped before Redis answered: a message Redis
    may have delivered already. A send so delivered twice went out twice."""
    heard: list[str] = []

    async def handle(command: Command) -> Command | None:
        heard.append(str(command["id"]))
        return {"found": False}

    bus = _bus(private_redis.url, unique_prefix())
    admin = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await bus.start(handle)
        twice = json.dumps({"op": "send", "id": "twice", "text": "x", "reply_to": f"{bus.channel}:r1"})
        assert await admin.publish(bus.channel, twice) == 1
        assert await admin.publish(bus.channel, twice) == 1
        marker = json.dumps({"op": "send", "id": "marker", "text": "x", "reply_to": f"{bus.channel}:r2"})
        assert await admin.publish(bus.channel, marker) == 1
        assert await admin.blpop([f"{bus.channel}:r2"], timeout=10) is not None  # run after the two
        assert heard == ["twice", "marker"]
    finally:
        await bus.aclose()
        await admin.aclose()


async def test_a_worker_that_stopped_is_not_waited_for(private_redis: RedisServer) -> None:
    """A worker stopped as usual leaves the roster: a command that finds nothing is then a 404, not a 503."""
    prefix = unique_prefix()
    a, b = _bus(private_redis.url, prefix), _bus(private_redis.url, prefix)

    async def handle(command: Command) -> Command | None:
        return {"found": False}

    try:
        await a.start(handle)
        await b.start(handle)
        answers = await _both_answer(a)
        assert answers.expected == 2
        await b.aclose()
        answers = await a.gather({"op": "who"}, wait=1)
        assert (len(answers.replies), answers.expected, answers.missing) == (1, 1, [])
    finally:
        await a.aclose()
        await b.aclose()


async def test_after_an_outage_longer_than_an_entry_lasts_the_workers_known_are_still_waited_for(
    private_redis: RedisServer,
) -> None:
    """Redis down longer than a roster entry lasts (six renewals: 1.2 s here), back without its data: every
    entry lapsed. The worker back first must still wait for the one a moment behind it, not answer for it."""
    prefix = unique_prefix()
    admin = Redis.from_url(private_redis.url)
    with DelayingProxy(port=private_redis.port) as proxy:
        a, b = _bus(private_redis.url, prefix), _bus(proxy.url, prefix)

        async def handle(command: Command) -> Command | None:
            return {"found": False}

        try:
            await a.start(handle)
            await b.start(handle)
            await _both_answer(a)
            proxy.target = ("127.0.0.1", _dead_port())  # b will be a moment behind (here: until let through)
            private_redis.stop()
            await asyncio.sleep(6 * 0.2 * 2)  # past every entry's lapse
            private_redis.start()
            async with asyncio.timeout(10):
                while (await admin.pubsub_numsub(a.channel))[0][1] < 1:  # noqa: ASYNC110 - a subscribed again
                    await asyncio.sleep(0.02)
            answers = await a.gather({"op": "who"}, wait=1)
            assert (len(answers.replies), answers.expected, answers.missing) == (1, 2, [b.worker])
            proxy.target = ("127.0.0.1", private_redis.port)
            await _both_answer(a)
        finally:
            await a.aclose()
            await b.aclose()
            await admin.aclose()
