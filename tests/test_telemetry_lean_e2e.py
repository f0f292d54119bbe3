"""End to end: the gateway's lean spans export what the SDK's spans export, for the same handshakes.

The same traffic goes through a gateway exporting with its own provider, once with the default
lean spans and once with ``ASGI_WS_GATEWAY_SPANS=sdk``, to a real OTLP receiver; the spans that
arrive are compared field by field, ids and times replaced by the names of the spans they point to.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import pytest
from opentelemetry import trace

from asgi_ws_gateway.policies import HandshakeContext, current_handshake
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, ReceivedSpan
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

CLIENT_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
VOLATILE = {"server.port", "exception.stacktrace", "service.instance.id"}
"""Values that differ between two gateways (their ports, their resource's instance) or name the
provider's own frames."""
PORT = re.compile(r":\d+(?=/)")
"""A port in a URL (the API whose backends are down gets new ports in each configuration)."""


async def tenant_lookup(context: HandshakeContext) -> None:
    """A custom policy that traces its own I/O with the OpenTelemetry API, nested in the handshake."""
    handshake = current_handshake()
    assert handshake is not None
    with handshake.io_span("tenant lookup", attributes={"tenant": "acme"}) as span:
        span.add_event("cache miss", {"keys": 2})
        trace.get_current_span().set_attribute("tenant.found", True)  # the lookup span is current
    with contextlib.suppress(LookupError), handshake.io_span("tenant fallback"):
        raise LookupError("no fallback tenant")
    trace.get_current_span().set_attribute("tenant.checked", True)  # the handshake span again


async def _traffic(upstream: UpstreamServer) -> list[ReceivedSpan]:
    """Accepted, linked, refused by the upstream, failed over, denied by a policy, a policy's own spans."""
    config = telemetry_config(upstream, message_events=1.0)
    config["apis"].append({"name": "traced", "path": "/ws/traced", "upstreams": [upstream.url("/echo")],
                           "policies": [tenant_lookup]})  # fmt: skip
    with OtlpReceiver() as otlp, pytest.MonkeyPatch.context() as env:
        export_to(env, otlp, "grpc")
        with UvicornServer(ProbedGateway(config)) as server:
            async with await connect(server.url("/ws/echo"), user_agent_header="probe/1.0") as ws:
                for message in ("one", b"\x00\x01"):
                    await ws.send(message)
                    assert await ws.recv() == message
                await ws.close(4000, "done here")
            async with await connect(server.url("/ws/echo"), additional_headers={"traceparent": CLIENT_TRACEPARENT}):
                pass
            async with await connect(server.url("/ws/traced")) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            for path, status in (("/ws/reject/418", 418), ("/ws/down", 502), ("/ws/guarded", 403)):
                assert (await expect_status(server.url(path)))[0] == status
        # The server stopped: the gateway flushed and shut down its provider.
        return otlp.spans()


def _normalized(spans: list[ReceivedSpan]) -> list[tuple[Any, ...]]:
    names = {span.span_id: span.name for span in spans}
    roots = {span.trace_id: span.name for span in spans if not span.parent_span_id}

    def value(key: str, found: Any) -> Any:
        if key in VOLATILE:
            return "*"
        if key in ("ws_gateway.handshake.span_id",):
            return names[found]
        if key in ("ws_gateway.handshake.trace_id",):
            return roots[found]
        return PORT.sub(":*", found) if isinstance(found, str) else found

    return sorted(
        (
            span.name,
            span.kind,
            span.status_code,
            span.scope,
            sorted((k, value(k, v)) for k, v in span.resource.items()),
            names.get(span.parent_span_id, span.parent_span_id),
            roots.get(span.trace_id),
            sorted((k, value(k, v)) for k, v in span.attributes.items()),
            [(name, sorted((k, value(k, v)) for k, v in attrs.items())) for name, attrs in span.events],
            [
                names.get(span_id, "client" if trace_id == CLIENT_TRACEPARENT[3:35] else "?")
                for trace_id, span_id in span.links
            ],
        )
        for span in spans
    )


async def test_lean_spans_export_what_sdk_spans_export(upstream: UpstreamServer) -> None:
    """Same spans, names, kinds, attributes, events, links, status, parents and traces as the SDK's."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ASGI_WS_GATEWAY_SPANS", "sdk")
        sdk = await _traffic(upstream)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("ASGI_WS_GATEWAY_SPANS", raising=False)
        lean = await _traffic(upstream)
    assert _normalized(lean) == _normalized(sdk)
    by_name = {span.name: span for span in lean}
    handshake = by_name["GET /ws/traced"]
    assert handshake.attributes["tenant.checked"] is True
    for child in ("tenant lookup", "tenant fallback"):
        assert (by_name[child].trace_id, by_name[child].parent_span_id) == (handshake.trace_id, handshake.span_id)
    assert by_name["tenant lookup"].attributes == {"tenant": "acme", "tenant.found": True}
    assert by_name["tenant fallback"].status_code == 2 and by_name["tenant fallback"].events[0][0] == "exception"
    # echo twice, traced (and its policy's two spans), refused by the upstream, two backends down, denied
    assert len(lean) == len(sdk) == 3 + 3 + 3 + 2 + 3 + 1 + 2


async def test_the_upstream_traceparent_names_the_lean_attempt_span(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header written directly from the span context is the attempt span's, sampled."""
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            async with await connect(server.url("/ws/headers/lobby")) as ws:
                seen = json.loads(await ws.recv())["headers"]
        attempt = otlp.wait_for_span(lambda s: s.name == "upstream connect headers")
    (value,) = seen["traceparent"]
    assert value == f"00-{attempt.trace_id}-{attempt.span_id}-03"  # sampled, random trace id (as the SDK's)
    assert "tracestate" not in seen and "baggage" not in seen


async def test_spans_a_sampler_drops_are_not_exported_but_still_propagated(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_TRACES_SAMPLER=always_off``: no span leaves, the upstream still gets a (not sampled) traceparent."""
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            async with await connect(server.url("/ws/headers/lobby")) as ws:
                seen = json.loads(await ws.recv())["headers"]
        assert otlp.spans() == []
    (value,) = seen["traceparent"]
    assert value.startswith("00-") and value.endswith("-02")  # random trace id, not sampled
