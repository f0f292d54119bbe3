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

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.telemetry import names as n
from gateway_harness import ProbedGateway
from support.clients import connect, expect_status
from support.otlp import OtlpReceiver, ReceivedSpan
from support.servers import UvicornServer
from support.upstream import UpstreamServer
from telemetry_harness import SECRETS, export_to, telemetry_config

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
