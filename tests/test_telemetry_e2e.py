"""End to end: real uvicorn, real upstream, the gateway's own OTLP exporters, a real OTLP receiver.

Spans, metrics and logs are configured only through ``OTEL_*`` variables and arrive over gRPC or
HTTP/protobuf exactly as a collector would receive them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, Protocol, ReceivedSpan
from support.servers import UvicornServer
from support.telemetry import SECRET_QUERY, SECRETS, export_to, secret_headers, telemetry_config
from support.upstream import UpstreamServer

SERVER, CLIENT, INTERNAL = 2, 3, 1
ERROR = 2
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> Protocol:
    value: Protocol = request.param
    return value


async def _wait_span(receiver: OtlpReceiver, name: str) -> ReceivedSpan:
    return await asyncio.to_thread(receiver.wait_for_span, lambda s: s.name == name)


async def test_handshake_span_is_exported_before_the_connection_closes(
    otlp: OtlpReceiver, protocol: Protocol, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SERVER span ends at accept, so the receiver has it while the connection is still open."""
    export_to(monkeypatch, otlp, protocol)
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        async with await connect(server.url("/ws/echo"), user_agent_header="probe/1.0") as ws:
            span = await _wait_span(otlp, "GET /ws/echo")
            assert ws.state.name == "OPEN"
            assert not [s for s in otlp.spans() if s.name == "connection echo"]
    assert span.kind == SERVER and span.protocol == protocol
    assert span.resource["service.name"] == "gateway-under-test"
    assert span.scope == "asgi_ws_gateway"
    assert span.attributes == {
        n.HTTP_METHOD: "GET", n.URL_SCHEME: "ws", n.URL_PATH: "/ws/echo", n.HTTP_ROUTE: "/ws/echo",
        n.API: "echo", n.SERVER_ADDRESS: "127.0.0.1", n.SERVER_PORT: server.port,
        n.PROTOCOL_NAME: "websocket", n.PROTOCOL_VERSION: "13",
        n.CLIENT_ADDRESS: "127.0.0.1", n.USER_AGENT: "probe/1.0", n.OUTCOME: "accepted", n.HTTP_STATUS: 101,
    }  # fmt: skip
    connect_span = otlp.wait_for_span(lambda s: s.name == "upstream connect echo")
    assert connect_span.kind == CLIENT and connect_span.parent_span_id == span.span_id
    assert connect_span.attributes == {
        n.HTTP_METHOD: "GET", n.URL_FULL: upstream.url("/echo"), n.BACKEND: upstream.url("/echo"),
        n.SERVER_ADDRESS: "127.0.0.1", n.SERVER_PORT: upstream.port, n.ATTEMPT: 1, n.HTTP_STATUS: 101,
    }  # fmt: skip


async def test_connect_span_url_full_has_parameters_filled_and_every_query_value_redacted(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``url.full`` is the URL the attempt opened, ``{room}`` filled, query names kept and values ``REDACTED``."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        query = f"?access_token={SECRETS[1]}&key&empty=&subscription-key={SECRETS[2]}&access_token=again"
        async with await connect(server.url("/ws/headers/lobby" + query)) as ws:
            await ws.recv()
        connect_span = await _wait_span(otlp, "upstream connect headers")
    assert connect_span.attributes[n.URL_FULL] == upstream.url(
        "/headers/lobby?access_token=REDACTED&REDACTED&empty=REDACTED&subscription-key=REDACTED&access_token=REDACTED"
    )
    assert connect_span.attributes[n.BACKEND] == upstream.url("/headers/{room}")  # the template stays as it was


async def test_refused_attempt_span_carries_the_upstream_status_and_url(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream refusal: the attempt's ``http.response.status_code`` is the upstream's own, ERROR status."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        await expect_status(server.url("/ws/reject/418?token=t0ps3cret"))
        connect_span = await _wait_span(otlp, "upstream connect reject")
    assert connect_span.attributes[n.HTTP_STATUS] == 418 and connect_span.status_code == ERROR
    assert connect_span.attributes[n.URL_FULL] == upstream.url("/reject/418?token=REDACTED")
    assert connect_span.attributes[n.HTTP_METHOD] == "GET" and connect_span.attributes[n.SERVER_PORT] == upstream.port


async def test_connection_span_has_close_code_reason_and_counts_after_close(
    otlp: OtlpReceiver, protocol: Protocol, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection span: linked to the handshake span, who closed, code, reason, counts both ways."""
    export_to(monkeypatch, otlp, protocol)
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            for message in ("one", "twö", b"\x00\x01\x02"):
                await ws.send(message)
                assert await ws.recv() == message
            await ws.close(4000, "done here")
        span = await _wait_span(otlp, "connection echo")
    handshake = otlp.wait_for_span(lambda s: s.name == "GET /ws/echo")
    assert span.kind == INTERNAL and span.protocol == protocol
    assert span.links == [(handshake.trace_id, handshake.span_id)]
    assert span.trace_id != handshake.trace_id and span.parent_span_id == ""
    attrs = span.attributes
    assert (attrs[n.CLOSE_SIDE], attrs[n.CLOSE_CODE], attrs[n.CLOSE_REASON]) == ("client", 4000, "done here")
    assert (attrs[n.MESSAGES_IN], attrs[n.BYTES_IN]) == (3, 3 + 4 + 3)
    assert (attrs[n.MESSAGES_OUT], attrs[n.BYTES_OUT]) == (3, 3 + 4 + 3)
    assert (attrs[n.HTTP_ROUTE], attrs[n.URL_PATH], attrs[n.API]) == ("/ws/echo", "/ws/echo", "echo")
    assert (attrs[n.HANDSHAKE_TRACE_ID], attrs[n.HANDSHAKE_SPAN_ID]) == (handshake.trace_id, handshake.span_id)
    assert attrs[n.BACKEND] == upstream.url("/echo") and attrs[n.CLIENT_ADDRESS] == "127.0.0.1"
    assert span.end_ns - span.start_ns > 0 and span.status_code == 0


async def test_connection_span_matches_its_handshake_without_links(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five connections: each connection span's handshake ids name exactly its own handshake span."""
    export_to(monkeypatch, otlp, "http/protobuf")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        for room in ("a", "b", "c", "d", "e"):
            async with await connect(server.url(f"/ws/headers/{room}")) as ws:
                await ws.recv()
        await asyncio.to_thread(
            otlp.wait_for_span, lambda s: s.name == "connection headers" and s.attributes[n.URL_PATH] == "/ws/headers/e"
        )
    handshakes = {s.span_id: s for s in otlp.spans() if s.name == "GET /ws/headers/{room}"}
    connections = [s for s in otlp.spans() if s.name == "connection headers"]
    assert len(handshakes) == len(connections) == 5
    for span in connections:
        handshake = handshakes[span.attributes[n.HANDSHAKE_SPAN_ID]]
        assert handshake.trace_id == span.attributes[n.HANDSHAKE_TRACE_ID] != span.trace_id
        assert handshake.attributes[n.URL_PATH] == span.attributes[n.URL_PATH]  # the same connection
        assert span.attributes[n.HTTP_ROUTE] == handshake.attributes[n.HTTP_ROUTE] == "/ws/headers/{room}"


async def test_connection_parent_handshake_puts_the_connection_in_the_handshake_trace(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connection_parent: handshake``: one trace per connection, the connection span the handshake's child."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream, connection_parent="handshake"))) as server:
        for _ in range(2):
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("ping")
                await ws.recv()
        await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "connection echo" and len(
            [c for c in otlp.spans() if c.name == "connection echo"]) == 2)  # fmt: skip
    handshakes = {s.span_id: s for s in otlp.spans() if s.name == "GET /ws/echo"}
    connections = [s for s in otlp.spans() if s.name == "connection echo"]
    assert len({s.trace_id for s in handshakes.values()}) == 2
    for span in connections:
        handshake = handshakes[span.parent_span_id]
        assert span.trace_id == handshake.trace_id and span.links == [(handshake.trace_id, handshake.span_id)]
        assert span.attributes[n.HANDSHAKE_SPAN_ID] == handshake.span_id


async def test_traceparent_of_the_connect_span_reaches_the_upstream(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream's handshake carries the connect span's context, replacing the client's own."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        headers = [("traceparent", CLIENT_TRACEPARENT), ("tracestate", "client=1")]
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
        connect_span = await _wait_span(otlp, "upstream connect headers")
    (traceparent,) = seen["traceparent"]
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, parent_id) == ("00", connect_span.trace_id, connect_span.span_id)
    assert int(flags, 16) & 1  # sampled
    assert "tracestate" not in seen  # the client's state belonged to the client's trace
    assert upstream.handshakes[-1].header("traceparent") == traceparent
    handshake = otlp.wait_for_span(lambda s: s.name == "GET /ws/headers/{room}")
    assert handshake.trace_id != CLIENT_TRACE  # not trusted by default: a new trace ...
    assert handshake.links == [(CLIENT_TRACE, CLIENT_SPAN)]  # ... linked to the client's


FOREIGN_CONTEXT = [
    ("baggage", "user.id=admin,role=superuser"),
    ("baggage", "tenant=acme"),
    ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("X-B3-Sampled", "1"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ("uber-trace-id", "5b8aa5a2d2c872e8321cf37308d69df2:051581bf3cb55c13:0:1"),
    ("uberctx-user", "admin"),
    ("ot-baggage-role", "superuser"),
    ("sentry-trace", "771a43a4192642f0b136d5159a501700-b83f8d9e8a4d4d6f-1"),
    ("x-datadog-trace-id", "1"),
    ("x-datadog-sampling-priority", "2"),
]


async def test_an_untrusted_clients_baggage_and_other_trace_formats_do_not_reach_the_upstream(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, only ``traceparent``/``tracestate`` were replaced: an upstream read the client's
    ``baggage: user.id=admin`` as the gateway's word and followed its B3/Jaeger sampling decision."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        headers = [("traceparent", CLIENT_TRACEPARENT), *FOREIGN_CONTEXT, ("X-Tenant", "acme")]
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
    assert not {name.lower() for name, _ in FOREIGN_CONTEXT} & set(seen), seen
    assert seen["x-tenant"] == ["acme"] and len(seen["traceparent"]) == 1


@pytest.mark.parametrize(
    "baggage", ["token=sekret-bag-2 x", "Bearer sekret-bag-token-123", ",".join(["x"] * 400), "a\x85INFO: forged=v"]
)
async def test_an_untrusted_clients_baggage_is_not_parsed_so_not_logged(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    baggage: str,
) -> None:  # fmt: skip
    """The link to the client's trace was read through the global propagators, baggage too, whose
    parser logged each bad entry: a token in clear, 181 WARNING lines from 800 bytes (an attack pass).
    Only the ``traceparent`` is read now; the link stays."""
    export_to(monkeypatch, otlp, "grpc")
    caplog.set_level(logging.INFO)  # the SDK's lines are WARNINGs (the test client's own are DEBUG)
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        headers = [("traceparent", CLIENT_TRACEPARENT), ("baggage", baggage)]
        async with await connect(server.url("/ws/echo"), additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        span = await _wait_span(otlp, "GET /ws/echo")
    assert [trace_id for trace_id, _ in span.links] == [CLIENT_TRACE]
    assert not [record for record in caplog.records if record.name.startswith("opentelemetry")], caplog.text
    assert "sekret" not in caplog.text


async def test_a_trusted_clients_baggage_is_continued(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream, trust_client_trace=True))) as server:
        headers = [("traceparent", CLIENT_TRACEPARENT), *FOREIGN_CONTEXT]
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
    assert seen["baggage"] and "user.id=admin" in seen["baggage"][0]
    assert seen["uberctx-user"] == ["admin"] and seen["x-b3-sampled"] == ["1"]  # the operator trusts the client


async def test_trusted_client_trace_is_continued_to_the_upstream(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``trust_client_trace`` the handshake span is the client's span's child, in its trace."""
    export_to(monkeypatch, otlp, "http/protobuf")
    config = telemetry_config(upstream, trust_client_trace=True)
    with UvicornServer(ProbedGateway(config)) as server:
        headers = [("traceparent", CLIENT_TRACEPARENT), ("tracestate", "client=1")]
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
        handshake = await _wait_span(otlp, "GET /ws/headers/{room}")
    assert (handshake.trace_id, handshake.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert seen["traceparent"][0].startswith(f"00-{CLIENT_TRACE}-")
    assert seen["tracestate"] == ["client=1"]


@pytest.mark.parametrize(("proxies", "continued"), [(["127.0.0.1/32"], True), (["10.0.0.0/8"], False)])
async def test_trust_client_trace_trusted_proxies_continues_only_a_trusted_proxy_s_trace(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, proxies: list[str], continued: bool
) -> None:
    """``trust_client_trace: trusted_proxies``: the trace context (and baggage) of a peer in ``trusted_proxies``
    is continued, as ``true`` continues anyone's; any other peer's is linked, and its baggage stays, as ``false``.
    The TCP peer decides: forwarding headers naming a trusted proxy (or an IPv4-mapped one) pass for nothing
    (uvicorn's own --proxy-headers off, as ``run`` has it: on, it made a client on 127.0.0.1 the address
    its X-Forwarded-For named before the gateway saw the scope, docs/security.md)."""
    export_to(monkeypatch, otlp, "grpc")
    config = {**telemetry_config(upstream, trust_client_trace="trusted_proxies"), "trusted_proxies": proxies}
    with UvicornServer(ProbedGateway(config), proxy_headers=False) as server:
        spoofed = [("X-Forwarded-For", "10.0.0.1"), ("Forwarded", 'for="[::ffff:10.0.0.1]"'), ("X-Real-IP", "10.0.0.1")]
        headers = [("traceparent", CLIENT_TRACEPARENT), ("tracestate", "client=1"), *FOREIGN_CONTEXT, *spoofed]
        async with await connect(server.url("/ws/headers/lobby"), additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())["headers"]
        handshake = await _wait_span(otlp, "GET /ws/headers/{room}")
    assert (handshake.trace_id == CLIENT_TRACE) is continued
    assert (handshake.parent_span_id == CLIENT_SPAN) is continued
    assert handshake.links == ([] if continued else [(CLIENT_TRACE, CLIENT_SPAN)])
    assert seen["traceparent"][0].startswith(f"00-{CLIENT_TRACE}-") is continued
    assert ("baggage" in seen and "user.id=admin" in seen["baggage"][0]) is continued


async def test_failover_attempts_are_child_spans_of_the_502_denial(
    otlp: OtlpReceiver, protocol: Protocol, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both unreachable backends get an attempt span; the handshake span ends with 502 and ERROR."""
    export_to(monkeypatch, otlp, protocol)
    config = telemetry_config(upstream)
    with UvicornServer(ProbedGateway(config)) as server:
        status, _headers, _body = await expect_status(server.url("/ws/down"))
        assert status == 502
        span = await _wait_span(otlp, "GET /ws/down")
    assert span.attributes[n.OUTCOME] == "denied" and span.attributes[n.HTTP_STATUS] == 502
    assert span.attributes[n.ERROR_TYPE] == "upstream_unreachable" and span.attributes[n.ATTEMPTS] == 2
    assert span.status_code == ERROR
    attempts = sorted(
        (s for s in otlp.spans() if s.name == "upstream connect down"), key=lambda s: s.attributes[n.ATTEMPT]
    )
    assert [s.attributes[n.ATTEMPT] for s in attempts] == [1, 2]
    assert {s.attributes[n.BACKEND] for s in attempts} == {
        u for u in next(a for a in config["apis"] if a["name"] == "down")["upstreams"]
    }
    assert all(s.parent_span_id == span.span_id and s.status_code == ERROR for s in attempts)
    assert all(s.attributes[n.ERROR_TYPE] == "upstream_unreachable" for s in attempts)


async def test_upstream_rejection_denial_span_has_the_upstreams_status(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream's 401 is relayed; the handshake span says 401 (not an error of the gateway)."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
        status, _headers, _body = await expect_status(server.url("/ws/reject/401"))
        assert status == 401
        span = await _wait_span(otlp, "GET /ws/reject/{status}")
    assert (span.attributes[n.HTTP_STATUS], span.attributes[n.ERROR_TYPE]) == (401, "upstream_rejected")
    assert span.status_code == 0
    attempt = otlp.wait_for_span(lambda s: s.name == "upstream connect reject")
    assert attempt.attributes[n.HTTP_STATUS] == 401 and attempt.status_code == ERROR


async def test_draining_denial_span_says_503(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake refused while draining: 503, ``error.type`` draining, no upstream attempt."""
    export_to(monkeypatch, otlp, "http/protobuf")
    gateway = ProbedGateway(telemetry_config(upstream))
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/echo")):
            pass
        await gateway.on_server(lambda: gateway.gateway.drain(grace=0))
        status, _headers, _body = await expect_status(server.url("/ws/echo"))
        assert status == 503
        span = await asyncio.to_thread(
            otlp.wait_for_span, lambda s: s.name == "GET /ws/echo" and s.attributes[n.HTTP_STATUS] == 503
        )
    assert span.attributes[n.ERROR_TYPE] == "draining" and n.ATTEMPTS not in span.attributes


async def test_policy_denial_span_names_the_policy(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A denial that carries a ``policy`` puts its name on the span; the status is the policy's."""
    export_to(monkeypatch, otlp, "grpc")
    gateway = ProbedGateway(telemetry_config(upstream))
    with UvicornServer(gateway) as server:
        status, _headers, _body = await expect_status(server.url("/ws/guarded"))
        assert status == 403
        span = await _wait_span(otlp, "GET /ws/guarded")
    assert span.attributes[n.POLICY] == "origin-check" and span.attributes[n.HTTP_STATUS] == 403
    assert span.attributes[n.ERROR_TYPE] == "origin_missing" and span.attributes[n.OUTCOME] == "denied"


async def test_message_events_are_recorded_when_asked(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``message_events: 1`` records each message's direction, type and size (never its payload)."""
    export_to(monkeypatch, otlp, "grpc")
    with UvicornServer(ProbedGateway(telemetry_config(upstream, message_events=1.0))) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("hello")
            await ws.recv()
            await ws.send(b"\x00" * 70)
            await ws.recv()
        span = await _wait_span(otlp, "connection echo")
    assert [attrs for _name, attrs in span.events] == [
        {n.DIRECTION: n.TO_UPSTREAM, n.MESSAGE_TYPE: "text", n.MESSAGE_SIZE: 5},
        {n.DIRECTION: n.TO_CLIENT, n.MESSAGE_TYPE: "text", n.MESSAGE_SIZE: 5},
        {n.DIRECTION: n.TO_UPSTREAM, n.MESSAGE_TYPE: "binary", n.MESSAGE_SIZE: 70},
        {n.DIRECTION: n.TO_CLIENT, n.MESSAGE_TYPE: "binary", n.MESSAGE_SIZE: 70},
    ]
    assert {name for name, _attrs in span.events} == {"message"}


async def test_no_token_or_key_in_any_exported_attribute_or_log_line(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials in headers, query and cookies appear in no span, metric, exported log or log line."""
    export_to(monkeypatch, otlp, "http/protobuf")
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    config = telemetry_config(upstream, export_logs=True, access_log="json", message_events=1.0)
    gateway = ProbedGateway(config)
    with UvicornServer(gateway) as server:
        headers = secret_headers()
        async with await connect(server.url("/ws/headers/x" + SECRET_QUERY), additional_headers=headers) as ws:
            assert SECRETS[0] in await ws.recv()  # the upstream did get them: they are end-to-end
        for path in ("/ws/guarded", "/ws/reject/401", "/ws/down"):
            await expect_status(server.url(path + SECRET_QUERY), additional_headers=headers)
    exported = [repr((s.name, s.attributes, s.events, s.resource)) for s in otlp.spans()]
    exported += [repr((p.metric, p.attributes)) for p in otlp.points()]
    exported += [repr((r.body, r.attributes)) for r in otlp.logs()]
    lines = [record.getMessage() for record in caplog.records]
    assert len(otlp.logs()) == 4 and len([line for line in lines if line.startswith("{")]) == 4
    for secret in SECRETS:
        assert not [text for text in exported + lines if secret in text], secret


async def test_access_log_lines_join_the_exported_spans(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One JSON line per connection at close (and per denial), with the span's trace and span ids."""
    export_to(monkeypatch, otlp, "grpc")
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    with UvicornServer(ProbedGateway(telemetry_config(upstream, access_log="json", export_logs=True))) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("ping")
            await ws.recv()
        await expect_status(server.url("/ws/reject/403"))
        connection = await _wait_span(otlp, "connection echo")
        refusal = otlp.wait_for_span(lambda s: s.name == "GET /ws/reject/{status}")
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    by_api = {record["api"]: record for record in records}
    echo, reject = by_api["echo"], by_api["reject"]
    assert (echo["trace_id"], echo["span_id"]) == (connection.trace_id, connection.span_id)
    assert echo["status"] == 101 and echo["close_code"] == 1000 and echo["closed_by"] == "client"
    assert (echo["messages_in"], echo["bytes_in"], echo["messages_out"], echo["bytes_out"]) == (1, 4, 1, 4)
    assert echo["route"] == "/ws/echo" and echo["client"].startswith("127.0.0.1:") and "time" in echo
    assert (reject["trace_id"], reject["span_id"], reject["status"]) == (refusal.trace_id, refusal.span_id, 403)
    exported = {log.attributes["ws_gateway.access.api"]: log for log in otlp.logs()}
    assert exported["echo"].trace_id == connection.trace_id and exported["echo"].span_id == connection.span_id
    assert exported["echo"].event_name == "ws_gateway.access" and "WebSocket /ws/echo" in exported["echo"].body
    host, port = echo["client"].rsplit(":", 1)
    semconv = {n.CLIENT_ADDRESS: host, n.CLIENT_PORT: int(port), n.URL_PATH: "/ws/echo", n.HTTP_ROUTE: "/ws/echo"}
    assert semconv.items() <= exported["echo"].attributes.items()
    assert exported["echo"].attributes[n.HTTP_STATUS] == 101 and exported["reject"].attributes[n.HTTP_STATUS] == 403
    assert exported["reject"].attributes[n.URL_PATH] == "/ws/reject/403"
    for log in exported.values():  # each field under one name only
        fields = {key.removeprefix("ws_gateway.access.") for key in log.attributes}
        assert not {"client", "path", "status", "route"} & fields


async def test_text_access_log_is_uvicorn_style(upstream: UpstreamServer, caplog: pytest.LogCaptureFixture) -> None:
    """Without any exporter the text line is still written, with ``-`` for the absent trace ids."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    gateway = ProbedGateway(telemetry_config(upstream))
    assert not gateway.gateway.telemetry.enabled
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("ping")
            await ws.recv()
        await gateway.settle()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert line.startswith("127.0.0.1:") and ' - "WebSocket /ws/echo" 101 echo closed by client with 1000 in ' in line
    assert "in 1 msg/4 B, out 1 msg/4 B" in line and line.endswith("subject -, trace_id=- span_id=-")
