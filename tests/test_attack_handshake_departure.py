"""A client that leaves while its handshake's policies and upstream connect run.

uvicorn queues a ``websocket.disconnect`` nobody reads before the answer: the gateway's handshake ran
to its end holding what it took. Its ``limit-concurrency`` lease stayed in Redis for the whole
``connect_timeout`` (once per backend tried: each was still dialled), the same tenant's next
handshake got 429 from its own ghost, a slow backend got a full connection for nobody, and a 504
was logged for a client long gone. Under the gateway's protocol the handshake is now cancelled
(``CLIENT_GONE``) when the client resets, closes or half-closes before the answer, early frames
held or not: its leases are released at once, nothing more is dialled, nothing is answered or
logged but its access line ("abandoned", "client went away").

Real uvicorn with the gateway's protocols, the shared Redis under a prefix of its own, backends that
accept TCP and never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.passthrough.asgi_extension import EXTENSION
from asgi_ws_gateway.policies import PolicySettings, deny, register_policy
from asgi_ws_gateway.relay.close_codes import CLIENT_GONE
from asgi_ws_gateway.server.http import GatewayHTTPProtocol
from asgi_ws_gateway.standalone import not_found
from support.access import ACCESS_LOGGER
from support.gateway import PASSTHROUGH, ProbedGateway
from support.jwts import signing_key, token
from support.rawhttp import handshake, status_of, ws_frame
from support.redis import SHARED_REDIS, DelayingProxy, redis_available, unique_prefix
from support.servers import UpstreamServer, UvicornServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis at 127.0.0.1:6379")

MODES: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 4096}}]}},
    "relay": {"passthrough": False},
}
CONNECT_TIMEOUT = 30.0
"""Each backend's: a handshake that runs on after its client left holds the slot this long per backend."""
PROMPTLY = CONNECT_TIMEOUT / 2
"""Generous, and still well before the connect would have given up."""
ONE_SLOT = {"limit-concurrency": {"key": "everyone", "max": 1, "lease_ttl": 120}}


class Blackhole:
    """Backends (or a JWKS host) that accept TCP, read what comes, and never answer."""

    def __init__(self) -> None:
        self.accepts = 0
        self.accepted = asyncio.Event()
        self.closed_by_peer = asyncio.Event()  # a connection's reader saw EOF or a reset
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.accepted.set()
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.closed_by_peer.set()

    @contextlib.asynccontextmanager
    async def serving(self, count: int = 1) -> AsyncIterator[list[int]]:
        servers = [await asyncio.start_server(self._serve, "127.0.0.1", 0) for _ in range(count)]
        try:
            yield [server.sockets[0].getsockname()[1] for server in servers]
        finally:
            for writer in self._writers:
                writer.transport.abort()
            for server in servers:
                server.close()


def _config(ports: list[int], live: UpstreamServer, prefix: str, **api: Any) -> dict[str, Any]:
    return {
        "apis": [
            {"name": "hung", "path": "/hung", "upstreams": [f"ws://127.0.0.1:{port}/" for port in ports],
             "connect_timeout": CONNECT_TIMEOUT, **api},
            {"name": "live", "path": "/live", "upstreams": [live.url("/echo")], **api},
        ],
        "policies": [ONE_SLOT],
        "store": {"type": "redis", "url": SHARED_REDIS, "prefix": prefix},
        "handshake_limits": {"policy_timeout": 60},
    }  # fmt: skip


@contextlib.contextmanager
def _served(config: dict[str, Any]) -> Any:
    gateway = ProbedGateway(config)
    with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
        yield gateway, server


async def _open(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a client killed mid-handshake does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _live_status(port: int) -> int:
    reader, writer = await _open(port, handshake("/live"))
    try:
        return status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
    finally:
        writer.transport.abort()


async def _slot_freed(port: int) -> None:
    """The tenant's next handshake gets its 101 (429 while the slot is held), well before the connect
    of the handshake that left would have timed out."""
    deadline = time.monotonic() + PROMPTLY
    while (status := await _live_status(port)) != 101:
        assert status == 429, status
        assert time.monotonic() < deadline, "the slot stayed held after the client left"
        await asyncio.sleep(0.1)


async def _line_of(caplog: pytest.LogCaptureFixture, api: str) -> str:
    deadline = time.monotonic() + PROMPTLY
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER and f" {api} " in r.getMessage()]
        if lines:
            (line,) = lines
            return line
        assert time.monotonic() < deadline, "no access line for the handshake that left"
        await asyncio.sleep(0.05)


async def _no_handshake_task_left(gateway: ProbedGateway) -> None:
    """No application task (nor a cleanup of one) is left on the server, once the last connection is over."""
    await gateway.settle()

    async def handshakes() -> list[str]:
        names = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
        return [name for name in names if name.endswith(("run_asgi", "_undo"))]

    async with asyncio.timeout(10):
        while await gateway.on_server(handshakes):  # noqa: ASYNC110 - another loop's state
            await asyncio.sleep(0.02)


async def _reset_and_settle(
    writer: asyncio.StreamWriter, server: UvicornServer, gateway: ProbedGateway, caplog: pytest.LogCaptureFixture
) -> str:
    """Reset the client mid-handshake; once its slot is free and no handshake task is left, its access line."""
    _reset(writer)
    await _slot_freed(server.port)
    line = await _line_of(caplog, "hung")
    await _no_handshake_task_left(gateway)
    return line


def _quiet(caplog: pytest.LogCaptureFixture, *, but: str = "\0") -> None:
    """No WARNING (no 504 for a client gone), no ERROR, no traceback (``but`` a WARNING saying that, and the
    start-up warning of a long ``store.timeout``, which one test sets on purpose)."""
    loud = [
        f"{r.name}: {r.getMessage()}" for r in caplog.records
        if (r.levelno >= logging.WARNING and (r.levelno > logging.WARNING or but not in r.getMessage())
            and not r.getMessage().startswith("store.timeout: ")) or r.exc_info
    ]  # fmt: skip
    assert not loud, loud


async def _leases(prefix: str) -> int:
    client = Redis.from_url(SHARED_REDIS)
    try:
        return sum([await client.zcard(key) async for key in client.scan_iter(match=f"{prefix}:conc:*")])
    finally:
        await client.aclose()


@pytest.fixture
def live() -> Any:
    with UpstreamServer() as server:
        yield server


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_a_client_reset_mid_connect_frees_its_slot_and_no_other_backend_is_dialled(
    mode: str, live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Three backends that never answer: the lease stayed 30 s per backend, each of them dialled in turn."""
    caplog.set_level(logging.INFO)
    blackhole = Blackhole()
    async with blackhole.serving(3) as ports:
        with _served(_config(ports, live, unique_prefix(), **MODES[mode])) as (gateway, server):
            _, writer = await _open(server.port, handshake("/hung"))
            await asyncio.wait_for(blackhole.accepted.wait(), 10)  # the gateway is connecting upstream
            line = await _reset_and_settle(writer, server, gateway, caplog)
        assert blackhole.accepts == 1  # the handshake ended before any other backend was tried
    assert "abandoned" in line and "client went away" in line, line
    _quiet(caplog)


@pytest.mark.parametrize("mode", ["relay", "splice"])
async def test_a_client_reset_after_early_frames_frees_its_slot(
    mode: str, live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames sent before the 101 are held with reading paused: the reset that followed went unseen."""
    caplog.set_level(logging.INFO)
    blackhole = Blackhole()
    async with blackhole.serving() as ports:
        with _served(_config(ports, live, unique_prefix(), **MODES[mode])) as (gateway, server):
            _, writer = await _open(server.port, handshake("/hung") + ws_frame(0x1, b"hasty"))
            await asyncio.wait_for(blackhole.accepted.wait(), 10)
            line = await _reset_and_settle(writer, server, gateway, caplog)
    assert "abandoned" in line and "client went away" in line, line
    _quiet(caplog)


async def test_a_client_that_half_closes_before_the_101_is_gone(
    live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIN before the answer: the client cannot take part in a WebSocket connection; it gets nothing
    (uvicorn closed the connection at once) and its handshake no longer runs on."""
    caplog.set_level(logging.INFO)
    blackhole = Blackhole()
    async with blackhole.serving() as ports:
        with _served(_config(ports, live, unique_prefix())) as (gateway, server):
            reader, writer = await _open(server.port, handshake("/hung"))
            await asyncio.wait_for(blackhole.accepted.wait(), 10)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b""  # no 101, no refusal
            await _slot_freed(server.port)
            line = await _line_of(caplog, "hung")
            await _no_handshake_task_left(gateway)
            writer.close()
    assert "abandoned" in line and "client went away" in line, line
    _quiet(caplog)


@pytest.mark.parametrize("mode", ["relay", "splice"])
async def test_a_slow_backend_gets_no_connection_for_a_client_that_left(
    mode: str, live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend is still deciding: its connection is dropped when the client leaves, where it used to
    be opened, for nobody, and closed 1001 once the backend answered."""
    caplog.set_level(logging.INFO)
    blackhole = Blackhole()
    async with blackhole.serving() as ports:
        with _served(_config(ports, live, unique_prefix(), **MODES[mode])) as (gateway, server):
            _, writer = await _open(server.port, handshake("/hung"))
            await asyncio.wait_for(blackhole.accepted.wait(), 10)
            _reset(writer)
            await asyncio.wait_for(blackhole.closed_by_peer.wait(), PROMPTLY)
            await _line_of(caplog, "hung")
            await _no_handshake_task_left(gateway)
    _quiet(caplog)


async def test_a_client_gone_while_the_keys_are_fetched_frees_its_slot(
    live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The JWKS host never answers: the handshake waited for the whole ``jwks_timeout``, slot held."""
    caplog.set_level(logging.INFO)
    blackhole = Blackhole()
    key = signing_key("RS256", kid="k1")
    async with blackhole.serving() as (jwks_port,):
        jwks_url = f"http://127.0.0.1:{jwks_port}/jwks"
        jwt = {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": jwks_url, "jwks_timeout": CONNECT_TIMEOUT,
                                "issuer": "https://issuer.test", "audience": "chat"}}  # fmt: skip
        config = _config([], live, unique_prefix())
        config["apis"][0].update(upstreams=[live.url("/echo")], policies=[jwt])
        with _served(config) as (gateway, server):
            bearer = b"Authorization: Bearer " + token(key, iss="https://issuer.test").encode() + b"\r\n"
            _, writer = await _open(server.port, handshake("/hung", extra=bearer))
            await asyncio.wait_for(blackhole.accepted.wait(), 10)  # the fetch is under way
            line = await _reset_and_settle(writer, server, gateway, caplog)
    assert "abandoned" in line and "client went away" in line, line
    _quiet(caplog)


class _WaitSettings(PolicySettings):
    pass


@register_policy("test-departure-replaced-cancellation")
class _WaitsAndReplacesTheCancellation:
    """Waits for ever, and lets a cancellation out as a ``CancelledError`` of its own, as anyio's cancel
    scopes do (httpx's connects run in one): the protocol's ``CLIENT_GONE`` message is lost on the way."""

    Settings = _WaitSettings
    entered = threading.Event()

    def __init__(self, settings: _WaitSettings, env: Any) -> None:
        self.name = "test-departure-replaced-cancellation"

    async def apply(self, context: Any) -> None:
        type(self).entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise asyncio.CancelledError("Cancelled via cancel scope 7f00 by <Task connect_tcp>") from None


async def test_a_client_gone_while_a_library_replaces_the_cancellation_is_taken_back(
    live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client gone during a JWKS fetch (anyio inside httpx) was logged "abandoned (cancelled)", its task
    ended in a cancellation nobody took back: the protocol's reason now reaches the middleware by the scope."""
    caplog.set_level(logging.INFO)
    _WaitsAndReplacesTheCancellation.entered.clear()
    config = _config([], live, unique_prefix())
    config["apis"][0].update(upstreams=[live.url("/echo")], policies=[{"test-departure-replaced-cancellation": {}}])
    with _served(config) as (gateway, server):
        _, writer = await _open(server.port, handshake("/hung"))
        while not _WaitsAndReplacesTheCancellation.entered.is_set():  # noqa: ASYNC110 - set on the server's thread
            await asyncio.sleep(0.01)
        line = await _reset_and_settle(writer, server, gateway, caplog)
    assert "abandoned" in line and "client went away" in line, line
    _quiet(caplog)


async def test_a_client_gone_while_redis_answers_late_ends_its_handshake(
    live: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis's answer to the lease is late: the handshake waited for it (``store.timeout``), then went on."""
    caplog.set_level(logging.INFO)
    prefix = unique_prefix()
    with DelayingProxy() as proxy:
        config = _config([], live, prefix)
        config["apis"][0]["upstreams"] = [live.url("/echo")]
        config["store"].update(url=proxy.url, timeout=CONNECT_TIMEOUT)
        with _served(config) as (gateway, server):
            assert await _live_status(server.port) == 101  # the store's connection is made
            await proxy.settle()
            proxy.delay = CONNECT_TIMEOUT * 2
            _, writer = await _open(server.port, handshake("/hung"))
            deadline = time.monotonic() + PROMPTLY
            while not await _leases(prefix):  # Redis ran the lease's call; its answer is on its way
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            _reset(writer)
            line = await _line_of(caplog, "hung")
            await _no_handshake_task_left(gateway)
            while await _leases(prefix):  # released in the background (Redis runs it at once)
                assert time.monotonic() < deadline, "the lease stayed"
                await asyncio.sleep(0.02)
    assert "abandoned" in line and "client went away" in line, line
    # The shutdown of this test's gateway cannot hear the late answers: the background release's own.
    _quiet(caplog, but="could not release 1 concurrency lease(s) on closing")


async def test_an_application_behind_the_gateway_is_cancelled_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Another application under the gateway's protocol: its handshake is cancelled too (no ERROR, no
    traceback, its task gone) when its client leaves before the answer."""
    caplog.set_level(logging.INFO)
    waiting, cancelled = asyncio.Event(), []
    loop = asyncio.get_running_loop()

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        loop.call_soon_threadsafe(waiting.set)
        try:
            await asyncio.sleep(CONNECT_TIMEOUT * 2)
        except asyncio.CancelledError as exc:
            cancelled.append(exc.args)
            raise

    with UvicornServer(app, ws=PASSTHROUGH, http=GatewayHTTPProtocol, lifespan="off") as server:
        _, writer = await _open(server.port, handshake("/app"))
        await asyncio.wait_for(waiting.wait(), 10)
        _reset(writer)
        deadline = time.monotonic() + PROMPTLY
        while not cancelled:
            assert time.monotonic() < deadline, "the application's handshake ran on"
            await asyncio.sleep(0.02)
    assert cancelled == [(CLIENT_GONE,)]
    _quiet(caplog)


# -- the middleware's side, in process: what it takes back and what it lets through --


class _CleanupsSettings(PolicySettings):
    pass


@register_policy("test-departure-cleanups")
class _TwoCleanupsThenDenied:
    """Registers two cleanups, the first slow, then refuses: a refusal whose cleanup a client's departure
    would cut short."""

    Settings = _CleanupsSettings
    started: asyncio.Event
    finish: asyncio.Event
    ran: list[str]

    def __init__(self, settings: _CleanupsSettings, env: Any) -> None:
        self.name = "test-departure-cleanups"

    async def apply(self, context: Any) -> None:
        cls = type(self)

        async def slow() -> None:
            cls.started.set()
            await cls.finish.wait()
            cls.ran.append("slow")

        async def second() -> None:
            cls.ran.append("second")

        context.add_cleanup(second)  # run last registered first: the slow one, then this one
        context.add_cleanup(slow)
        raise deny(429, "refused after taking two things", reason="test")


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "websocket", "path": path, "raw_path": path.encode(), "query_string": b"", "scheme": "ws",
        "headers": [(b"host", b"gw.test")], "client": ("127.0.0.1", 50000), "subprotocols": [],
        "extensions": {"websocket.http.response": {}, EXTENSION: {"max_size": 2**20}},
    }  # fmt: skip


class _Client:
    """The server's side of the ASGI calls: a handshake, and what the application sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def _handshake_task(gateway: WebSocketGateway, path: str) -> tuple[asyncio.Task[None], _Client]:
    client = _Client()
    task = asyncio.create_task(gateway(_scope(path), client.receive, client.send))  # type: ignore[arg-type]
    return task, client


@pytest.fixture
async def dialling() -> AsyncIterator[tuple[WebSocketGateway, Blackhole]]:
    """A gateway whose one API's backend never answers, and that backend."""
    blackhole = Blackhole()
    async with blackhole.serving() as (port,):
        api = {"name": "hung", "path": "/hung", "upstreams": [f"ws://127.0.0.1:{port}/"],
               "connect_timeout": CONNECT_TIMEOUT, "passthrough": False}  # fmt: skip
        gateway = WebSocketGateway(not_found, config={"apis": [api]})
        yield gateway, blackhole
        await gateway._policies.aclose()


@pytest.mark.parametrize("message", [None, "someone else's"])
async def test_another_cancellation_of_a_handshake_propagates(
    dialling: tuple[WebSocketGateway, Blackhole], message: str | None
) -> None:
    """Only the gateway protocol's marker is taken back: a task cancelled for any other reason ends cancelled."""
    gateway, blackhole = dialling
    task, client = await _handshake_task(gateway, "/hung")
    await asyncio.wait_for(blackhole.accepted.wait(), 10)
    task.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.sent == []


async def test_the_clients_departure_is_taken_back(dialling: tuple[WebSocketGateway, Blackhole]) -> None:
    """``CLIENT_GONE`` alone: the handshake returns, nothing sent, nothing more dialled."""
    gateway, blackhole = dialling
    task, client = await _handshake_task(gateway, "/hung")
    await asyncio.wait_for(blackhole.accepted.wait(), 10)
    task.cancel(CLIENT_GONE)
    await asyncio.wait_for(task, 10)
    assert not task.cancelled() and task.cancelling() == 0
    assert client.sent == []
    await asyncio.wait_for(blackhole.closed_by_peer.wait(), 10)  # the connect was dropped


async def test_the_clients_departure_with_another_cancellation_pending_propagates(
    dialling: tuple[WebSocketGateway, Blackhole],
) -> None:
    """``CLIENT_GONE`` and a forced quit's cancellation together: the forced quit is not swallowed."""
    gateway, blackhole = dialling
    task, client = await _handshake_task(gateway, "/hung")
    await asyncio.wait_for(blackhole.accepted.wait(), 10)
    task.cancel(CLIENT_GONE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.sent == []


async def test_a_departure_during_a_refusals_cleanup_does_not_cut_it_short() -> None:
    """The client leaves while the refused handshake's first cleanup runs: the ones after it were lost
    (a lease held and renewed for ever). The one cut is lost alone (a lease's release cut is released in
    the background), the others run, and the handshake ends quietly: nothing is sent to a client gone."""
    policy = _TwoCleanupsThenDenied
    policy.started, policy.finish, policy.ran = asyncio.Event(), asyncio.Event(), []
    api = {"name": "refused", "path": "/refused", "upstreams": ["ws://127.0.0.1:9/"],
           "policies": [{"test-departure-cleanups": {}}]}  # fmt: skip
    gateway = WebSocketGateway(not_found, config={"apis": [api]})
    task, client = await _handshake_task(gateway, "/refused")
    await asyncio.wait_for(policy.started.wait(), 10)
    task.cancel(CLIENT_GONE)  # what the gateway's protocol does when the client's connection is lost
    await asyncio.sleep(0)
    policy.finish.set()
    await asyncio.wait_for(task, 10)
    assert policy.ran == ["second"]
    assert not task.cancelled() and task.cancelling() == 0
    assert client.sent == []
    await gateway._policies.aclose()
