"""``telemetry.attempt_spans: failover``: the first upstream attempt on the handshake span, one span fewer.

End to end: real uvicorn, a real upstream, the gateway's own OTLP exporter, a real OTLP receiver.
A span that should not exist is looked for after the connection span (or the denied handshake's
own span) arrived: the batch processor exports spans in the order they ended, and an attempt
span ends before its handshake span.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.relay.pumps import Relay
from asgi_ws_gateway.telemetry import Telemetry, TracedConnector
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.request import build_request
from support.apps import echo_app
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, ReceivedSpan
from support.servers import UvicornServer
from support.telemetry import SECRETS, export_to, telemetry_config
from support.upstream import UpstreamServer

SERVER, CLIENT = 2, 3
ERROR = 2
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
UPSTREAM_KEYS = {n.UPSTREAM_URL, n.UPSTREAM_ADDRESS, n.UPSTREAM_PORT, n.UPSTREAM_STATUS, n.UPSTREAM_ERROR}


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        export_to(monkeypatch, receiver, "grpc")
        yield receiver


async def _wait_span(receiver: OtlpReceiver, name: str) -> ReceivedSpan:
    return await asyncio.to_thread(receiver.wait_for_span, lambda s: s.name == name)


def _parent(traceparent: list[str]) -> tuple[str, str]:
    """The (trace id, span id) one ``traceparent`` header names; its flags must say sampled."""
    (value,) = traceparent
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and int(flags, 16) & 1
    return trace_id, span_id


async def test_single_attempt_is_recorded_on_the_handshake_span_without_a_client_span(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """Accepted: the handshake span carries the attempt, the upstream's traceparent names it, no CLIENT span."""
    with UvicornServer(ProbedGateway(telemetry_config(upstream, attempt_spans="failover"))) as server:
        async with await connect(server.url(f"/ws/headers/lobby?access_token={SECRETS[1]}&x=1")) as ws:
            seen = json.loads(await ws.recv())["headers"]
        await _wait_span(otlp, "connection headers")
    handshake = otlp.wait_for_span(lambda s: s.name == "GET /ws/headers/{room}")
    assert not [s for s in otlp.spans() if s.name.startswith("upstream connect")]
    assert _parent(seen["traceparent"]) == (handshake.trace_id, handshake.span_id)
    attrs = handshake.attributes
    assert {key: attrs[key] for key in UPSTREAM_KEYS | {n.BACKEND} if key in attrs} == {
        n.BACKEND: upstream.url("/headers/{room}"),
        n.UPSTREAM_URL: upstream.url("/headers/lobby?access_token=REDACTED&x=REDACTED"),
        n.UPSTREAM_ADDRESS: "127.0.0.1", n.UPSTREAM_PORT: upstream.port, n.UPSTREAM_STATUS: 101,
    }  # fmt: skip
    # The SERVER span's own conventions still describe the client's request, not the upstream's.
    assert (attrs[n.SERVER_PORT], attrs[n.HTTP_STATUS], attrs[n.OUTCOME]) == (server.port, 101, "accepted")
    assert n.URL_FULL not in attrs and n.ATTEMPTS not in attrs and n.ATTEMPT not in attrs
    assert handshake.kind == SERVER and handshake.status_code == 0
    assert not any(secret in str(span.attributes) for span in otlp.spans() for secret in SECRETS)


async def test_default_still_gives_each_attempt_its_own_client_span(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """Without the setting the upstream's traceparent names the CLIENT span and the handshake has no upstream keys."""
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        async with await connect(server.url("/ws/headers/lobby")) as ws:
            seen = json.loads(await ws.recv())["headers"]
        await _wait_span(otlp, "connection headers")
    handshake = otlp.wait_for_span(lambda s: s.name == "GET /ws/headers/{room}")
    attempt = otlp.wait_for_span(lambda s: s.name == "upstream connect headers")
    assert _parent(seen["traceparent"]) == (attempt.trace_id, attempt.span_id)
    assert attempt.parent_span_id == handshake.span_id and attempt.kind == CLIENT
    assert not UPSTREAM_KEYS & set(handshake.attributes) and n.BACKEND not in handshake.attributes


async def test_failover_attempts_after_the_first_still_get_client_spans(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """Two unreachable backends: attempt 1 on the 502 handshake span, attempt 2 a CLIENT span under it."""
    config = telemetry_config(upstream, attempt_spans="failover")
    first, second = next(a for a in config["apis"] if a["name"] == "down")["upstreams"]
    with UvicornServer(ProbedGateway(config)) as server:
        status, _headers, _body = await expect_status(server.url("/ws/down"))
        assert status == 502
        handshake = await _wait_span(otlp, "GET /ws/down")
    attrs = handshake.attributes
    assert (attrs[n.HTTP_STATUS], attrs[n.ERROR_TYPE], attrs[n.ATTEMPTS]) == (502, "upstream_unreachable", 2)
    assert (attrs[n.BACKEND], attrs[n.UPSTREAM_URL], attrs[n.UPSTREAM_ERROR]) == (first, first, "upstream_unreachable")
    assert n.UPSTREAM_STATUS not in attrs and handshake.status_code == ERROR
    (attempt,) = [s for s in otlp.spans() if s.name == "upstream connect down"]
    assert (attempt.attributes[n.ATTEMPT], attempt.attributes[n.BACKEND]) == (2, second)
    assert attempt.parent_span_id == handshake.span_id and attempt.status_code == ERROR
    assert attempt.attributes[n.ERROR_TYPE] == "upstream_unreachable"


async def test_upstream_refusal_is_recorded_on_the_handshake_span(otlp: OtlpReceiver, upstream: UpstreamServer) -> None:
    """The upstream's 418 is relayed: the handshake span has the upstream's status and error, not ERROR."""
    with UvicornServer(ProbedGateway(telemetry_config(upstream, attempt_spans="failover"))) as server:
        status, _headers, _body = await expect_status(server.url("/ws/reject/418?token=t0ps3cret"))
        assert status == 418
        handshake = await _wait_span(otlp, "GET /ws/reject/{status}")
    attrs = handshake.attributes
    assert (attrs[n.UPSTREAM_STATUS], attrs[n.UPSTREAM_ERROR]) == (418, "upstream_rejected")
    assert attrs[n.UPSTREAM_URL] == upstream.url("/reject/418?token=REDACTED")
    assert (attrs[n.HTTP_STATUS], handshake.status_code) == (418, 0)
    assert not [s for s in otlp.spans() if s.name.startswith("upstream connect")]


async def test_trusted_client_trace_reaches_the_upstream_through_the_handshake_span(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """With ``trust_client_trace``: the upstream continues the client's trace, parented on the handshake span."""
    config = telemetry_config(upstream, attempt_spans="failover", trust_client_trace=True)
    headers = [("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "client=1")]
    with UvicornServer(ProbedGateway(config)) as server:
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
        handshake = await _wait_span(otlp, "GET /ws/headers/{room}")
    assert (handshake.trace_id, handshake.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert _parent(seen["traceparent"]) == (CLIENT_TRACE, handshake.span_id)
    assert seen["tracestate"] == ["client=1"]


async def test_untrusted_client_trace_does_not_reach_the_upstream_through_the_handshake_span(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """Not trusted (the default): the upstream gets the handshake's new trace, not the client's ids or state."""
    headers = [("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "client=1")]
    with UvicornServer(ProbedGateway(telemetry_config(upstream, attempt_spans="failover"))) as server:
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
        handshake = await _wait_span(otlp, "GET /ws/headers/{room}")
    assert handshake.trace_id != CLIENT_TRACE and handshake.links == [(CLIENT_TRACE, CLIENT_SPAN)]
    assert _parent(seen["traceparent"]) == (handshake.trace_id, handshake.span_id)
    assert "tracestate" not in seen


async def test_no_traceparent_reaches_the_upstream_without_propagate(
    otlp: OtlpReceiver, upstream: UpstreamServer
) -> None:
    """``propagate: false`` holds on the inline path too: the upstream gets no trace headers."""
    config = telemetry_config(upstream, attempt_spans="failover", propagate=False)
    with UvicornServer(ProbedGateway(config)) as server:
        async with await connect(server.url("/ws/headers/lobby")) as ws:
            seen = json.loads(await ws.recv())["headers"]
        handshake = await _wait_span(otlp, "GET /ws/headers/{room}")
    assert "traceparent" not in seen and "tracestate" not in seen
    assert handshake.attributes[n.UPSTREAM_STATUS] == 101


@pytest.mark.parametrize("value", ["first", "", "EACH", 1, None])
def test_attempt_spans_config_error_names_the_field(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"telemetry": {"attempt_spans": value}})
    assert [p.split(":")[0] for p in info.value.problems] == ["telemetry.attempt_spans"]


def test_attempt_spans_defaults_to_each() -> None:
    assert load_config({}).telemetry.attempt_spans == "each"


# -- unit: the in-process path, an in-memory exporter ----------------------------------------------


SCOPE: dict[str, Any] = {
    "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
    "client": ("10.1.2.3", 4567), "server": ("127.0.0.1", 8000), "headers": [(b"host", b"gw.example:8000")],
}  # fmt: skip


class _Scripted:
    """A connector whose attempts fail with the given exceptions, then succeed."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.traceparents: list[str | None] = []

    async def connect(self, request: UpstreamRequest) -> Any:
        self.traceparents.append(dict(request.headers).get("traceparent"))
        if self.failures:
            raise self.failures.pop(0)
        return object()


async def test_in_process_upstream_has_no_url_or_address_and_metrics_still_time_the_attempt(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An ``asgi:`` backend: only the backend label and status on the handshake; the attempt metric stays."""
    reader = InMemoryMetricReader()
    config = load_config({
        "apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [{"url": "asgi:", "app": echo_app}]}],
        "telemetry": {"attempt_spans": "failover"},
    })  # fmt: skip
    telemetry = Telemetry(config, tracer_provider=spans[0], meter_provider=MeterProvider(metric_readers=[reader]))
    api, upstream = config.apis[0], config.apis[0].upstreams[0]
    handshake = telemetry.handshake(api, SCOPE)
    connector = _Scripted()
    await TracedConnector(connector, "echo", upstream).connect(build_request(api, upstream, SCOPE, {}))
    stats = Relay(_never, _never, None, max_message_size=1).stats  # type: ignore[arg-type]
    handshake.accepted(upstream.label, None, stats).closed(stats)
    (hs,) = [s for s in spans[1].get_finished_spans() if s.name == "GET /ws/echo"]
    assert [s.name for s in spans[1].get_finished_spans()] == ["GET /ws/echo", "connection echo"]
    assert hs.attributes is not None and hs.context is not None
    assert {k: v for k, v in hs.attributes.items() if k in UPSTREAM_KEYS | {n.BACKEND}} == {
        n.BACKEND: upstream.label,
        n.UPSTREAM_STATUS: 101,
    }
    assert (
        connector.traceparents[0] is not None and trace.format_span_id(hs.context.span_id) in connector.traceparents[0]
    )
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == n.UPSTREAM_CONNECT_DURATION.name]  # fmt: skip
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint) and point.count == 1


async def test_failed_first_attempt_is_on_the_handshake_and_the_retry_gets_a_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Attempt 1 raises: its error type is on the handshake span; attempt 2's CLIENT span carries the traceparent."""
    config = load_config({
        "apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/a", "ws://127.0.0.1:9/b"]}],
        "telemetry": {"attempt_spans": "failover"},
    })  # fmt: skip
    telemetry = Telemetry(config, tracer_provider=spans[0])
    api = config.apis[0]
    handshake = telemetry.handshake(api, SCOPE)
    connector = _Scripted(ConnectionRefusedError("refused"))
    first, second = (TracedConnector(connector, "echo", u) for u in api.upstreams)
    with pytest.raises(ConnectionRefusedError):
        await first.connect(build_request(api, api.upstreams[0], SCOPE, {}))
    await second.connect(build_request(api, api.upstreams[1], SCOPE, {}))
    stats = Relay(_never, _never, None, max_message_size=1).stats  # type: ignore[arg-type]
    handshake.accepted(api.upstreams[1].label, None, stats).closed(stats)
    finished = {s.name: s for s in spans[1].get_finished_spans()}
    hs, attempt = finished["GET /ws/echo"], finished["upstream connect echo"]
    assert hs.attributes is not None and attempt.attributes is not None and attempt.parent is not None
    assert hs.context is not None and attempt.context is not None
    assert (hs.attributes[n.UPSTREAM_ERROR], hs.attributes[n.UPSTREAM_URL]) == (
        "ConnectionRefusedError",
        "ws://127.0.0.1:9/a",
    )
    assert n.UPSTREAM_STATUS not in hs.attributes and hs.attributes[n.ATTEMPTS] == 2
    assert (attempt.attributes[n.ATTEMPT], attempt.attributes[n.HTTP_STATUS]) == (2, 101)
    assert attempt.parent.span_id == hs.context.span_id
    hs_id, attempt_id = (trace.format_span_id(s.context.span_id) for s in (hs, attempt))
    assert [tp.split("-")[2] if tp else None for tp in connector.traceparents] == [hs_id, attempt_id]


async def _never() -> Any:  # pragma: no cover - the relay is never run in these tests
    raise AssertionError
