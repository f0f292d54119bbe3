"""Changes that reach every worker of ``asgi-ws-gateway run --workers 2`` sharing a real Redis.

An attack pass found: a ``?drain=true`` applied by another worker's revision poll before the bus
told it (no drain there); a Redis back with an older or empty state (writes acknowledged, never
applied); revocations that left the connections they admitted open. Each test here failed before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis as redis_sync
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection

from support.clients import connect, expect_close, expect_status
from support.management import TOKEN
from support.processes import EXE, cli_env
from support.rawws import raw_client
from support.redis import SHARED_REDIS, unique_prefix
from support.servers import free_port
from support.upstream import UpstreamServer

KEY_HEADER = "Ocp-Apim-Subscription-Key"


@dataclass
class Workers:
    """The gateway's processes: its management API, its port, its log (stdout and stderr)."""

    http: httpx2.AsyncClient
    port: int
    log: Path

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def lines(self, level: str) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if line.startswith(level)]

    async def holders(self, sockets: dict[int, Any]) -> dict[int, str]:
        """The worker holding each of ``sockets`` (keyed by the client's local port)."""
        listed = (await self.http.get("connections")).json()["connections"]
        by_port = {int(c["client"].rsplit(":", 1)[1]): c["worker"] for c in listed}
        return {port: by_port[port] for port in sockets if port in by_port}


HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}  # a change must be typed


@contextlib.contextmanager
def _started(directory: Path, config: str, prefix: str) -> Iterator[tuple[int, Path]]:
    """``asgi-ws-gateway run CONFIG --workers 2 --redis ...`` in ``directory``, its log in a file: (port, log) once
    both workers listen; stopped (SIGTERM) on the way out."""
    (directory / "gateway.yaml").write_text(config)
    log = directory / "gateway.log"
    for _ in range(3):  # a free port may be taken by another test's server before this one binds it
        port = free_port()
        argv = [str(EXE), "run", "gateway.yaml", "--port", str(port), "--workers", "2", "--management", "/_gateway",
                "--redis", SHARED_REDIS, "--redis-prefix", prefix, "--log-level", "info"]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=directory, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                listening = _both_listening(process, port)
            except TimeoutError:
                raise AssertionError(f"two workers did not start within 60 s:\n{log.read_text()}") from None
            if listening:
                yield port, log
                return
            assert "Address already in use" in log.read_text(), log.read_text()
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise AssertionError(f"no free port in three attempts:\n{log.read_text()}")


def _both_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once both workers have subscribed (a command reaches two); False if the gateway exited."""
    deadline = time.monotonic() + 60
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}/_gateway/", headers=HEADERS, timeout=20) as http:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError
            with contextlib.suppress(httpx2.TransportError):
                answer = http.get("connections")
                if answer.status_code == 200 and answer.json()["workers"]["expected"] == 2:
                    return True
            time.sleep(0.1)
    return False


@contextlib.asynccontextmanager
async def _client(port: int, log: Path) -> AsyncIterator[Workers]:
    """:class:`Workers` for the gateway listening on ``port``: a management client of the test's own loop."""
    base_url = f"http://127.0.0.1:{port}/_gateway/"
    async with httpx2.AsyncClient(base_url=base_url, headers=HEADERS, timeout=20) as http:
        yield Workers(http, port, log)


@contextlib.asynccontextmanager
async def two_workers(tmp_path: Path, config: str, prefix: str) -> AsyncIterator[Workers]:
    """A gateway of the test's own (it restores or empties its Redis state), once both workers listen. Its start
    and stop block the loop: nothing of the test's runs on it yet, or any longer."""
    with _started(tmp_path, config, prefix) as (port, log):
        async with _client(port, log) as workers:
            yield workers


REVOCATIONS = ("suspend", "regenerate-key", "delete", "delete product")
"""How a revocation test's subscription is revoked: each case on an API and products of its own (below)."""


def _api(name: str) -> str:
    return f"echo-{name.replace(' ', '-')}"


@pytest.fixture(scope="module")
def shared(upstream_server: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """One gateway for the tests that change only what is theirs (an API each): the drain test's ``echo`` and
    each revocation's ``echo-<how>``. A two-worker gateway per test was ~2.2 CPU-s of its processes' start."""
    apis = "".join(f"  - name: {name}\n    path: /ws/{name}\n    upstreams: [{upstream_server.url('/echo')}]\n"
                   for name in ("echo", *map(_api, REVOCATIONS)))  # fmt: skip
    prefix = unique_prefix()
    try:
        with _started(tmp_path_factory.mktemp("shared-workers"), f"apis:\n{apis}", prefix) as started:
            yield started
    finally:
        with redis_sync.Redis.from_url(SHARED_REDIS) as client:
            if keys := list(client.scan_iter(match=f"{prefix}:*")):
                client.delete(*keys)


async def on_both_workers(
    gateway: Workers, open_one: Callable[[], Awaitable[tuple[int, Any]]], at_least: int = 1
) -> dict[int, Any]:
    """Open connections with ``open_one`` (local port, connection) until each worker holds ``at_least``.

    Four at once: opened one after another, the worker that took the last one is often the first back
    in its accept (the faster a handshake, the more often), and sixty could all land on one."""
    opened: dict[int, Any] = {}
    for _ in range(60):
        opened.update(await asyncio.gather(*(open_one() for _ in range(4))))
        holders = list((await gateway.holders(opened)).values())
        if (
            len(opened) >= 2 * at_least
            and all(holders.count(w) >= at_least for w in set(holders))
            and len(set(holders)) == 2
        ):
            return opened
    raise AssertionError("the kernel gave every connection to one worker")


async def echoing(url: str, **kw: Any) -> tuple[int, ClientConnection]:
    ws = await connect(url, **kw)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws.local_address[1], ws


def _config(upstream: UpstreamServer) -> str:
    return f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n"


async def test_a_drain_reaches_the_worker_whose_poll_applied_the_revision_first(
    shared: tuple[int, Path], upstream_server: UpstreamServer
) -> None:
    """PUT ?drain=true while each worker holds a client that never answers a close frame: the worker that
    takes the call used to drain first (close_timeout for the mute one) while the other's poll applied the
    revision without a drain, and the bus's later 'reload drain=true' found nothing newer there."""
    async with _client(*shared) as gateway, contextlib.AsyncExitStack() as stack:

        async def mute() -> tuple[int, Any]:
            _, writer = await raw_client(gateway.port, deflate=False)  # never reads again
            stack.callback(writer.close)
            return writer.get_extra_info("sockname")[1], writer

        async def normal() -> tuple[int, Any]:
            port, ws = await echoing(gateway.ws("/ws/echo"))
            await stack.enter_async_context(ws)
            return port, ws

        await on_both_workers(gateway, mute)
        clients = await on_both_workers(gateway, normal)
        body = {"path": "/ws/echo", "upstreams": [upstream_server.url("/echo")], "idle_timeout": 600}
        response = await gateway.http.put("apis/echo", params={"drain": "true"}, json=body)
        assert response.status_code == 200, response.text
        closes = await asyncio.gather(*(expect_close(ws) for ws in clients.values()))
        assert set(closes) == {(1001, "API configuration changed")}
        revision = (await gateway.http.get("apis")).json()["revision"]
        drained = [line for line in gateway.lines("INFO") if f"management revision {revision}: draining" in line]
        assert len(drained) == 2, drained  # each worker, once
        assert gateway.lines("ERROR") == []


async def _keyed_setup(gateway: Workers, api: str) -> dict[str, str]:
    """Products gold and silver over ``api`` (both need a key); alice subscribes to gold, bob to silver (each
    name with ``api``'s, the gateway being shared)."""
    keys = {}
    for product, subscriber in (("gold", "alice"), ("silver", "bob")):
        made = await gateway.http.post("products", json={"name": f"{product}-{api}", "apis": [api]})
        assert made.status_code == 201, made.text
        created = await gateway.http.post(
            "subscriptions", json={"product": f"{product}-{api}", "id": f"{subscriber}-{api}"}
        )
        assert created.status_code == 201, created.text
        keys[subscriber] = created.json()["key"]
    return keys


async def _revoke(gateway: Workers, how: str, api: str) -> httpx2.Response:
    alice = f"subscriptions/alice-{api}"
    if how == "delete product":
        assert (await gateway.http.delete(alice)).status_code == 204  # no drain: they stay open
        return await gateway.http.delete(f"products/gold-{api}", params={"drain": "true"})
    if how == "delete":
        return await gateway.http.delete(alice, params={"drain": "true"})
    return await gateway.http.post(f"{alice}/{how}", params={"drain": "true"})


@pytest.mark.parametrize("how", REVOCATIONS)
async def test_a_revocation_with_drain_closes_the_connections_it_admitted_on_every_worker(
    shared: tuple[int, Path], how: str
) -> None:
    """?drain=true on suspend, regenerate-key, delete of a subscription (or of its product) closes, with
    drain_close_code, the connections that subscription admitted, whichever worker holds them; another
    subscription's connection to the same API stays open."""
    api = _api(how)
    async with _client(*shared) as gateway, contextlib.AsyncExitStack() as stack:
        keys = await _keyed_setup(gateway, api)

        async def as_alice() -> tuple[int, ClientConnection]:
            port, ws = await echoing(gateway.ws(f"/ws/{api}"), additional_headers={KEY_HEADER: keys["alice"]})
            await stack.enter_async_context(ws)
            return port, ws

        alice = await on_both_workers(gateway, as_alice)
        _, bob = await echoing(gateway.ws(f"/ws/{api}"), additional_headers={KEY_HEADER: keys["bob"]})
        await stack.enter_async_context(bob)
        response = await _revoke(gateway, how, api)
        assert response.status_code in (200, 204), response.text
        closes = await asyncio.gather(*(expect_close(ws) for ws in alice.values()))
        assert set(closes) == {(1001, "subscription revoked")}
        await bob.send("still here")
        assert await bob.recv() == "still here"
        assert (await expect_status(gateway.ws(f"/ws/{api}"), additional_headers={KEY_HEADER: keys["alice"]}))[0] in (
            401,
            403,
        )


async def _until_done(call: Callable[[], Awaitable[httpx2.Response]]) -> httpx2.Response:
    """The answer to ``call`` once no worker answers 503 because it just saw the store go back (one each)."""
    for _ in range(3):
        response = await call()
        if response.status_code != 503:
            return response
        assert response.headers["content-type"] == "application/problem+json"
        assert "went back" in response.json()["detail"], response.text
    raise AssertionError(f"still 503: {response.text}")


@pytest.mark.parametrize("restore", ["an older copy", "nothing"])
async def test_a_redis_back_with_an_older_state_is_adopted_by_every_worker_and_logged(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str, restore: str
) -> None:
    """Redis restored from an older snapshot (or emptied) while the gateway runs: every worker adopts the
    store's state with an ERROR naming both; a change made then is applied everywhere, never a 200 ignored
    by the workers (they ran a higher revision) nor a 404 for what GET still showed."""
    state = f"{redis_prefix}:{{mgmt}}:state"
    async with (
        redis.Redis.from_url(SHARED_REDIS, decode_responses=True) as store,
        two_workers(tmp_path, _config(upstream), redis_prefix) as gateway,
    ):
        http = gateway.http
        assert (await http.post("products", json={"name": "gold", "apis": ["echo"]})).status_code == 201
        snapshot: dict[Any, Any] = await store.hgetall(state)  # what an RDB snapshot taken now holds
        key = (await http.post("subscriptions", json={"product": "gold", "id": "alice"})).json()["key"]
        extra = {"name": "extra", "path": "/ws/extra", "upstreams": [upstream.url("/echo")]}
        assert (await http.post("apis", json=extra)).status_code == 201
        ran = json.loads(str(await store.hget(state, "doc")))  # what every worker runs now
        assert ran["revision"] == 3

        async with store.pipeline(transaction=True) as restart:  # Redis comes back, at once, ...
            restart.delete(state)
            if restore == "an older copy":
                restart.hset(state, mapping=snapshot)  # ... at revision 1
            await restart.execute()

        suspended = await _until_done(lambda: http.post("subscriptions/alice/suspend"))
        assert suspended.status_code == 404, suspended.text  # alice is not in the store's state
        assert (await http.get("subscriptions/alice")).status_code == 404  # nor in what the workers run
        created = await _until_done(
            lambda: http.post("apis", json={"name": "late", "path": "/ws/late", "upstreams": [upstream.url("/echo")]})
        )
        assert created.status_code == 201, created.text
        async with contextlib.AsyncExitStack() as stack:

            async def to_late() -> tuple[int, ClientConnection]:
                port, ws = await echoing(gateway.ws("/ws/late"))
                await stack.enter_async_context(ws)
                return port, ws

            await on_both_workers(gateway, to_late)  # each worker runs the change made after the rollback
        for _ in range(6):
            assert (await expect_status(gateway.ws("/ws/extra")))[0] == 404
        if restore == "an older copy":  # gold (in the snapshot) still wants a key, and alice's is unknown
            assert (await expect_status(gateway.ws("/ws/echo"), additional_headers={KEY_HEADER: key}))[0] == 401
        went_back = [line for line in gateway.lines("ERROR") if "the state store went back" in line]
        epoch = ran.get("epoch", "(none)")
        after = f"revision 1 of state {epoch}" if restore == "an older copy" else "revision 0 of state (none yet)"
        expected = f"from revision 3 of state {epoch}, which this worker ran, to {after}"
        assert any(expected in line for line in went_back), gateway.log.read_text()


async def _lines(gateway: Workers, level: str, text: str, count: int) -> list[str]:
    """Wait (10 s at most) until ``count`` lines at ``level`` contain ``text``."""
    async with asyncio.timeout(10):
        while len(found := [line for line in gateway.lines(level) if text in line]) < count:  # noqa: ASYNC110 - another process's log
            await asyncio.sleep(0.05)
    return found


async def test_a_state_back_from_a_backup_closes_nothing_its_old_revisions_drained(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str
) -> None:
    """Redis emptied, then the backup restored: the revisions in it are not new, and their drains were carried
    out when they were (a re-attack pass: every client connected since was closed again, on every worker)."""
    state = f"{redis_prefix}:{{mgmt}}:state"
    async with (
        redis.Redis.from_url(SHARED_REDIS, decode_responses=True) as store,
        two_workers(tmp_path, _config(upstream), redis_prefix) as gateway,
        contextlib.AsyncExitStack() as stack,
    ):
        body = {"path": "/ws/echo", "upstreams": [upstream.url("/echo")], "idle_timeout": 600}
        assert (await gateway.http.put("apis/echo", params={"drain": "true"}, json=body)).status_code == 200
        backup: dict[Any, Any] = await store.hgetall(state)
        await store.delete(state)  # Redis restarted without persistence
        await _lines(gateway, "ERROR", "the state store went back", 2)
        # Each worker logs that ERROR before it installs the store's state (the file's: echo without its
        # idle_timeout), and a handshake that straddles the install is refused 503 config_changed, as it should be.
        await _lines(gateway, "INFO", "applied management revision 0", 2)

        async def later() -> tuple[int, ClientConnection]:
            port, ws = await echoing(gateway.ws("/ws/echo"))
            await stack.enter_async_context(ws)
            return port, ws

        clients = await on_both_workers(gateway, later)  # connected after revision 1's drain
        applied = len([line for line in gateway.lines("INFO") if "applied management revision 1" in line])
        await store.hset(state, mapping=backup)  # the operator restores the backup
        await _lines(gateway, "INFO", "applied management revision 1", applied + 2)  # both workers ran it
        for ws in clients.values():
            await ws.send("still here")
            assert await ws.recv() == "still here"
        assert not [line for line in gateway.lines("INFO") if "draining" in line]  # none was open at revision 1
