"""Every documented metric, exported over OTLP after a scripted session, with its attributes and values.

The session: 3 connections to ``echo`` with 10 messages each way (6 text of 10 B, 4 binary of
100 B), one handshake a policy denies (``guarded``, 403) and one whose two backends are down
(``down``, 502). Metrics are flushed once while the 3 connections are open and once at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, Point, Protocol
from support.servers import UvicornServer
from support.telemetry import a_server_refusal, export_to, telemetry_config, with_narrowed_cookie, with_unchecked
from support.upstream import UpstreamServer

TEXT = [f"text {i:05d}" for i in range(6)]  # 10 B each
BINARY = [bytes([i]) * 100 for i in range(4)]
BASE = {n.PROTOCOL_NAME: "websocket"}


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _points(receiver: OtlpReceiver, spec: n.Instrument, **match: Any) -> list[Point]:
    """The latest point of ``spec`` per attribute set, among those whose attributes include ``match``."""
    return [
        point
        for point in receiver.latest(spec.name).values()
        if all(point.attributes.get(key) == value for key, value in match.items())
    ]


def _one(receiver: OtlpReceiver, spec: n.Instrument, **match: Any) -> Point:
    (point,) = _points(receiver, spec, **match)
    return point


def _api(name: str, route: str) -> dict[str, Any]:
    return {**BASE, n.API: name, n.HTTP_ROUTE: route}


async def _session(server: UvicornServer, gateway: ProbedGateway) -> None:
    connections = [await connect(server.url("/ws/echo")) for _ in range(3)]
    for ws in connections:
        messages: list[str | bytes] = [*TEXT, *BINARY]
        for message in messages:
            await ws.send(message)
            assert await ws.recv() == message

    async with await connect(server.url("/ws/filtered")) as filtered:  # a message policy drops two
        for _ in range(2):
            await filtered.send("more than ten bytes")
            assert "message_too_big" in str(await filtered.recv())  # the error reply
    await asyncio.to_thread(gateway.gateway.telemetry.force_flush)  # while the 3 are open
    for ws in connections:
        await ws.close()
    assert (await expect_status(server.url("/ws/guarded")))[0] == 403
    assert (await expect_status(server.url("/ws/down")))[0] == 502
    async with await connect(server.url("/ws/unchecked")):  # admitted: its limit's store is down
        pass
    async with await connect(server.url("/ws/cookies")):  # its upstream's cookie held to the API's path
        pass
    await gateway.settle()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_every_documented_metric_after_a_scripted_session(
    otlp: OtlpReceiver, protocol: Protocol, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names, units, types, attributes and values of all instruments in ``names.INSTRUMENTS``."""
    export_to(monkeypatch, otlp, protocol)
    config = with_narrowed_cookie(with_unchecked(telemetry_config(upstream)), upstream)
    gateway = ProbedGateway(config)
    with UvicornServer(gateway) as server:
        await a_server_refusal()
        await _session(server, gateway)
        open_active = _one(otlp, n.ACTIVE_CONNECTIONS, **{n.API: "echo"})
    # uvicorn stopped: lifespan shutdown flushed the final values
    assert open_active.value == 3
    echo, guarded, down = _api("echo", "/ws/echo"), _api("guarded", "/ws/guarded"), _api("down", "/ws/down")

    assert _one(otlp, n.ACTIVE_CONNECTIONS, **echo).value == 0
    assert _one(otlp, n.HANDSHAKES, **echo).attributes == {**echo, n.OUTCOME: "accepted", n.HTTP_STATUS: 101}
    assert _one(otlp, n.HANDSHAKES, **echo).value == 3
    assert _one(otlp, n.HANDSHAKES, **guarded).attributes == {
        **guarded, n.OUTCOME: "denied", n.HTTP_STATUS: 403, n.ERROR_TYPE: "origin_missing"
    }  # fmt: skip
    assert _one(otlp, n.HANDSHAKES, **down).attributes[n.ERROR_TYPE] == "upstream_unreachable"
    assert [_one(otlp, n.HANDSHAKE_DURATION, **api).count for api in (echo, guarded, down)] == [3, 1, 1]

    backend = {**BASE, n.API: "echo", n.BACKEND: upstream.url("/echo"), n.SERVER_ADDRESS: "127.0.0.1",
               n.SERVER_PORT: upstream.port}  # fmt: skip
    assert _one(otlp, n.UPSTREAM_CONNECT_DURATION, **backend).attributes == {**backend, n.HTTP_STATUS: 101}
    assert _one(otlp, n.UPSTREAM_CONNECT_DURATION, **backend).count == 3
    failures = _points(otlp, n.UPSTREAM_CONNECT_FAILURES, **{n.API: "down"})
    assert sorted(p.attributes[n.BACKEND] for p in failures) == sorted(
        next(a for a in config["apis"] if a["name"] == "down")["upstreams"]
    )
    assert {(p.value, p.attributes[n.ERROR_TYPE]) for p in failures} == {(1, "upstream_unreachable")}
    assert not _points(otlp, n.UPSTREAM_CONNECT_FAILURES, **{n.API: "echo"})

    closed = {**echo, n.CLOSE_SIDE: "client"}
    assert _one(otlp, n.CONNECTION_DURATION_METRIC, **echo).attributes == closed
    assert _one(otlp, n.CONNECTION_DURATION_METRIC, **echo).count == 3
    assert _one(otlp, n.CONNECTION_CLOSES, **echo).attributes == {**closed, n.CLOSE_CODE: 1000}
    assert _one(otlp, n.CONNECTION_CLOSES, **echo).value == 3

    for direction in (n.TO_UPSTREAM, n.TO_CLIENT):
        for kind, count, size in (("text", 18, 18 * 10), ("binary", 12, 12 * 100)):
            where = {**echo, n.DIRECTION: direction, n.MESSAGE_TYPE: kind}
            assert _one(otlp, n.MESSAGES, **where).value == count
            assert _one(otlp, n.IO, **where).value == size
        by_size = _points(otlp, n.MESSAGE_SIZES, **echo, **{n.DIRECTION: direction})
        sizes = {p.attributes[n.SIZE_CLASS]: p.value for p in by_size}
        assert sizes == {"0-63": 18, "64-255": 12}

    assert _one(otlp, n.POLICY_DENIALS, **guarded).attributes == {
        **guarded,
        n.POLICY: "origin-check",
        n.HTTP_STATUS: 403,
    }
    assert _one(otlp, n.POLICY_DENIALS, **guarded).value == 1
    filtered = _api("filtered", "/ws/filtered")
    action = _one(otlp, n.POLICY_ACTIONS, **filtered)
    assert action.attributes == {**filtered, n.POLICY: "limit-message-size", n.POLICY_ACTION: "drop",
                                 n.DIRECTION: n.TO_UPSTREAM, n.POLICY_REASON: "message_too_big"}  # fmt: skip
    assert action.value == 2
    unchecked = _api("unchecked", "/ws/unchecked")
    assert _one(otlp, n.POLICY_UNCHECKED, **unchecked).attributes == {**unchecked, n.POLICY: "rate-limit-by-key"}
    assert _one(otlp, n.POLICY_UNCHECKED, **unchecked).value == 1
    cookies = _api("cookies", "/ws/cookies")
    assert _one(otlp, n.COOKIES_CHANGED, **cookies).attributes == {**cookies, n.COOKIE_REASON: "path_narrowed"}
    assert _one(otlp, n.COOKIES_CHANGED, **cookies).value == 1
    # The process's count (other tests of this worker may have added theirs): the unchecked API's store is down.
    store_failures = {(p.attributes[n.DB_SYSTEM], p.attributes[n.DB_OPERATION], p.attributes[n.ERROR_TYPE])
                      for p in otlp.latest(n.STORE_FAILURES.name).values()}  # fmt: skip
    assert ("redis", "hit", "connection") in store_failures, store_failures
    refusals = {p.attributes[n.HTTP_STATUS] for p in otlp.latest(n.SERVER_REFUSALS.name).values()}
    assert 400 in refusals, refusals  # the process's count: the bad handshake above among them

    for spec in n.INSTRUMENTS:  # every instrument: type, unit, attribute keys, protocol
        points = list(otlp.latest(spec.name).values())
        assert points, spec.name
        for point in points:
            assert point.unit == spec.unit and point.protocol == protocol, spec.name
            assert point.kind == ("histogram" if spec.kind == "histogram" else "sum"), spec.name
            assert point.monotonic == (spec.kind == "observable_counter"), spec.name
            keys = set(point.attributes)
            assert set(spec.attributes) <= keys <= set(spec.attributes) | set(spec.optional), (spec.name, keys)
            assert not keys & {n.CLIENT_ADDRESS, n.URL_PATH, n.ENDUSER_ID}, spec.name  # bounded cardinality
            if spec.buckets is not None:
                assert tuple(point.bounds) == spec.buckets, spec.name


def _duration_points(reader: Any, name: str) -> list[tuple[dict[str, Any], int]]:
    data = reader.get_metrics_data()
    return sorted(
        ((dict(point.attributes), point.count) for rm in data.resource_metrics for sm in rm.scope_metrics
         for metric in sm.metrics if metric.name == name for point in metric.data.data_points),
        key=repr,
    )  # fmt: skip


def test_duration_attributes_follow_a_changed_route_each_backend_and_close() -> None:
    """The histograms' attribute sets: a route changed by ``add_api``, each backend, status, outcome
    and close side get their own, and the tallies count each close code."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from asgi_ws_gateway.telemetry.metrics import Metrics

    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]).get_meter("test"), [("echo", "/ws/echo")])
    for _ in range(2):
        metrics.handshake("echo", "accepted", 101, None, None, 0.01)
    metrics.add_api("echo", "/ws/echo/{room}")
    metrics.handshake("echo", "accepted", 101, None, None, 0.01)
    metrics.handshake("echo", "denied", 403, "forbidden", "p", 0.01)
    handshake = {n.API: "echo", n.PROTOCOL_NAME: "websocket"}
    assert _duration_points(reader, n.HANDSHAKE_DURATION.name) == sorted([
        ({**handshake, n.HTTP_ROUTE: "/ws/echo", n.OUTCOME: "accepted", n.HTTP_STATUS: 101}, 2),
        ({**handshake, n.HTTP_ROUTE: "/ws/echo/{room}", n.OUTCOME: "accepted", n.HTTP_STATUS: 101}, 1),
        ({**handshake, n.HTTP_ROUTE: "/ws/echo/{room}", n.OUTCOME: "denied", n.HTTP_STATUS: 403,
          n.ERROR_TYPE: "forbidden"}, 1),
    ], key=repr)  # fmt: skip
    backends: list[dict[str, str | int]] = [{n.API: "echo", n.BACKEND: f"ws://b:{i}/"} for i in range(3)]
    for backend in (*backends, backends[0]):
        metrics.upstream_attempt(backend, 0.01, None, 101)
    metrics.upstream_attempt(backends[0], 0.01, "refused", 403)
    points = _duration_points(reader, n.UPSTREAM_CONNECT_DURATION.name)
    assert [(attrs[n.BACKEND], attrs[n.HTTP_STATUS], count) for attrs, count in points] == [
        ("ws://b:0/", 101, 2), ("ws://b:0/", 403, 1), ("ws://b:1/", 101, 1), ("ws://b:2/", 101, 1),
    ]  # fmt: skip
    assert metrics.counts()["upstream_failures", "echo", "ws://b:0/"] == 1
    metrics.closed(metrics.opened("echo", _stats()), "client", 1000, 1.0)
    metrics.closed(metrics.opened("echo", _stats()), "client", 1001, 1.0)
    assert metrics.counts()["closes", "echo", "1000"] == 1 and metrics.counts()["closes", "echo", "1001"] == 1
    (closes,) = _duration_points(reader, n.CONNECTION_DURATION_METRIC.name)
    assert closes == ({n.API: "echo", n.HTTP_ROUTE: "/ws/echo/{room}", n.PROTOCOL_NAME: "websocket",
                       n.CLOSE_SIDE: "client"}, 2)  # fmt: skip


def _stats() -> Any:
    from asgi_ws_gateway.relay.stats import RelayStats

    return RelayStats()


def test_one_collection_adds_up_the_open_connections_once_and_each_collection_anew() -> None:
    """The five observers of a collection share one snapshot of the open connections (each added them
    all up again: 0.2 s apiece at 100,000), and the next collection, a force_flush included, sees
    connections opened and closed since."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from asgi_ws_gateway.relay.stats import RelayStats
    from asgi_ws_gateway.telemetry.metrics import Metrics

    class Counted(RelayStats):
        reads = 0

        @property  # read once each time a snapshot adds the connection up
        def messages_in(self) -> int:
            self.reads += 1
            return 1

        @messages_in.setter
        def messages_in(self, value: int) -> None:
            pass

    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]).get_meter("test"), [("echo", "/ws/echo")])
    stats = [Counted() for _ in range(3)]
    live = [metrics.opened("echo", s) for s in stats]

    def active() -> int:
        (point,) = [p for m in _metrics(reader) if m.name == n.ACTIVE_CONNECTIONS.name for p in m.data.data_points]
        return int(point.value)

    assert active() == 3
    assert [s.reads for s in stats] == [1, 1, 1]  # five observers, one adding up
    metrics.closed(live[0], "client", 1000, 1.0)
    assert active() == 2
    assert [s.reads for s in stats] == [2, 2, 2]  # the closed one once more: into the closed totals
    metrics.opened("echo", Counted())
    assert active() == 3


def _metrics(reader: Any) -> list[Any]:
    data = reader.get_metrics_data()
    return [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def test_closed_connections_count_the_same_however_many_close_between_collections() -> None:
    """Closed connections' counters are added to their API's totals at close: every message, byte, size
    class and policy action counted once, whether few or many connections closed between collections."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from asgi_ws_gateway.relay.stats import RelayStats
    from asgi_ws_gateway.telemetry.metrics import Metrics

    reader = InMemoryMetricReader()
    metrics = Metrics(
        MeterProvider(metric_readers=[reader]).get_meter("test"), [("echo", "/ws/echo"), ("chat", "/ws/chat")]
    )
    chats = 0  # connections to another API in between, one message in each: added to their own totals
    messages = {(d, k): 0 for d in (n.TO_UPSTREAM, n.TO_CLIENT) for k in ("text", "binary")}
    sizes = dict(messages)
    classes: dict[tuple[str, str], int] = {}
    actions = 0
    closed = 0
    for total in (3, 255, 263, 512):  # a collection after each
        for i in range(closed, total):
            stats = RelayStats(sizes_in=[0] * (3 + i % 19), sizes_out=[0] * 21)  # size limits differ
            live = metrics.opened("echo", stats)
            for j in range(i % 5):
                size, binary = (i * 31 + j * 7) % 3000, (i + j) % 3 == 0
                stats.count_in(size, binary)
                stats.count_out(size // 2, not binary)
                kind, other = ("binary", "text") if binary else ("text", "binary")
                for direction, sent, sent_kind in ((n.TO_UPSTREAM, size, kind), (n.TO_CLIENT, size // 2, other)):
                    messages[direction, sent_kind] += 1
                    sizes[direction, sent_kind] += sent
                slot_in = min(size.bit_length(), len(stats.sizes_in) - 1)
                slot_out = min((size // 2).bit_length(), 20)
                for direction, slot in ((n.TO_UPSTREAM, slot_in), (n.TO_CLIENT, slot_out)):
                    size_class = n.SIZE_CLASSES[n.size_class_index(slot)]
                    classes[direction, size_class] = classes.get((direction, size_class), 0) + 1
            if i % 4 == 0:
                stats.policy_actions[("max-size", "drop", "inbound", "")] = 2
                actions += 2
            metrics.closed(live, "client", 1000, 0.5)
            if i % 3 == 0:
                chat = RelayStats(sizes_in=[0] * 21, sizes_out=[0] * 21)
                chat_live = metrics.opened("chat", chat)
                chat.count_in(10, False)
                metrics.closed(chat_live, "upstream", 1000, 0.5)
                chats += 1
        closed = total
        found = {m.name: m for m in _metrics(reader)}
        observed = {
            name: {(p.attributes[n.DIRECTION], p.attributes[key]): p.value for p in found[name].data.data_points
                   if p.attributes[n.API] == "echo"}
            for name, key in ((n.MESSAGES.name, n.MESSAGE_TYPE), (n.IO.name, n.MESSAGE_TYPE),
                              (n.MESSAGE_SIZES.name, n.SIZE_CLASS))
        }  # fmt: skip
        assert observed[n.MESSAGES.name] == messages, total
        assert observed[n.IO.name] == sizes, total
        assert observed[n.MESSAGE_SIZES.name] == classes, total
        (point,) = found[n.POLICY_ACTIONS.name].data.data_points
        assert point.value == actions, total
        assert metrics.counts()["messages", "chat", "in"] == chats, total
        assert (
            metrics.counts()["messages", "echo", "in"]
            == messages[n.TO_UPSTREAM, "text"] + messages[n.TO_UPSTREAM, "binary"]
        ), total


async def test_an_attempt_cut_short_by_shutdown_is_no_backend_failure(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake waiting on a silent backend when the server stops: the handshake says why it ended
    (``draining`` under ``run``, ``cancelled`` here); its attempt was counted as a connect failure with
    ``error.type="CancelledError"`` on every deploy (a hunter, with SIGTERM), its span an ERROR. Now the
    cut-short attempt counts nothing and is no error."""
    export_to(monkeypatch, otlp, "grpc")
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, writer: held.append(writer), "127.0.0.1", 0)  # never answers
    port = silent.sockets[0].getsockname()[1]
    config = telemetry_config(upstream)
    config["apis"].append({"name": "silent", "path": "/ws/silent", "upstreams": [f"ws://127.0.0.1:{port}/x"],
                           "connect_timeout": 30})  # fmt: skip
    gateway = ProbedGateway(config)
    async with silent:
        with UvicornServer(gateway) as server:
            waiting = asyncio.create_task(expect_status(server.url("/ws/silent")))
            await asyncio.sleep(0.5)  # the attempt is under way
        await waiting  # the server's own answer to a handshake it stops under (uvicorn's: a 500)
        for writer in held:  # closed here, not left to the garbage collector (a ResourceWarning in a later test)
            writer.close()
    handshake = _one(otlp, n.HANDSHAKES, **{n.API: "silent"}).attributes
    assert (handshake[n.OUTCOME], handshake[n.ERROR_TYPE]) == ("abandoned", "cancelled")
    assert not _points(otlp, n.UPSTREAM_CONNECT_FAILURES, **{n.API: "silent"})
    (attempt,) = [span for span in otlp.spans() if span.name == "upstream connect silent"]
    assert attempt.status_code != 2 and n.ERROR_TYPE not in attempt.attributes  # 2: STATUS_CODE_ERROR
