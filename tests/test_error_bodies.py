"""5xx refusals tell the client nothing internal; the detail goes to the log and the handshake span.

Real uvicorn, real (or deliberately absent) upstreams. Each test checks the body for every internal
detail the failure has (URL, host, port, errno, exception text) and finds that detail in the log
line and in the span's ``ws_gateway.denial.detail``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.responses import public_problem
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, signing_key, token
from support.servers import UvicornFactory, free_port
from support.upstream import UpstreamServer

_INTERNAL = "10.9.8.7:5432"


class Spans(InMemorySpanExporter):
    """An in-process exporter that also holds the provider the gateway traces with."""

    def __init__(self) -> None:
        super().__init__()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self))


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = Spans()
    yield exporter
    exporter.provider.shutdown()


async def _explode(context: HandshakeContext) -> None:
    raise RuntimeError(f"database at {_INTERNAL} refused the login for svc-gateway")


async def _refuse(
    uvicorn_server: UvicornFactory,
    spans: Spans,
    upstream_url: str,
    *,
    policies: Sequence[Any] = (),
    connect_timeout: float = 0.3,
    **top: Any,
) -> tuple[int, dict[str, Any], bytes]:
    api = {"name": "a", "path": "/ws/a", "upstreams": [upstream_url], "connect_timeout": connect_timeout,
           "policies": list(policies)}  # fmt: skip
    gateway = WebSocketGateway(not_found, config={"apis": [api], **top}, tracer_provider=spans.provider)
    server = uvicorn_server(gateway)
    status, _headers, body = await expect_status(server.url("/ws/a"))
    return status, json.loads(body), body


def _span_detail(exporter: Spans) -> str:
    details = [s.attributes.get(n.DENIAL_DETAIL) for s in exporter.get_finished_spans() if s.attributes]
    found = [d for d in details if isinstance(d, str)]
    assert len(found) == 1
    return found[0]


def _assert_generic(body: bytes, problem: dict[str, Any], status: int, *internal: str) -> None:
    assert problem["status"] == status and problem["type"] == "about:blank"
    assert set(problem) == {"type", "title", "status", "detail", "trace_id"}
    for text in (*internal, "Errno", "ws://", "127.0.0.1", "refused", "Traceback"):
        assert text.encode() not in body, text


async def test_connection_refused_is_a_generic_502(
    uvicorn_server: UvicornFactory, spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    status, problem, body = await _refuse(uvicorn_server, spans, f"ws://127.0.0.1:{port}/private/path")
    assert status == 502
    _assert_generic(body, problem, 502, str(port), "/private/path")
    assert problem["detail"] == "the service behind this API is not available"
    denials = [r for r in caplog.records if r.name == "asgi_ws_gateway.middleware" and "denied" in r.getMessage()]
    logged = [r.getMessage() for r in denials]
    assert any(f"127.0.0.1:{port}" in line and "Errno 111" in line for line in logged)
    assert f"127.0.0.1:{port}" in _span_detail(spans)
    assert [r.levelno for r in denials] == [logging.WARNING], logged


async def test_dns_failure_is_a_generic_502(
    uvicorn_server: UvicornFactory, spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    # The lookup goes to the machine's resolver: under load it can take longer than 0.3 s (a 504).
    url = "ws://chat-2.no-such-host.invalid:9000/rooms"
    status, problem, body = await _refuse(uvicorn_server, spans, url, connect_timeout=10)
    assert status == 502
    _assert_generic(body, problem, 502, "chat-2", "invalid", "9000", "Name or service", "-2")
    assert "chat-2.no-such-host.invalid:9000" in _span_detail(spans)
    assert any("chat-2.no-such-host.invalid" in r.getMessage() for r in caplog.records)


async def test_timeout_is_a_generic_504(uvicorn_server: UvicornFactory, upstream: UpstreamServer, spans: Spans) -> None:
    status, problem, body = await _refuse(uvicorn_server, spans, upstream.url("/slow?delay=5"))
    assert status == 504
    _assert_generic(body, problem, 504, str(upstream.url().rsplit(":", 1)[1].split("/")[0]), "/slow", "0.3 s")
    assert problem["detail"] == "the service behind this API did not answer in time"
    assert "did not complete the handshake in 0.3 s" in _span_detail(spans)


async def test_a_failing_policy_is_a_generic_500(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spans: Spans,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    status, problem, body = await _refuse(uvicorn_server, spans, upstream.url("/echo"), policies=[_explode])
    assert status == 500
    _assert_generic(body, problem, 500, _INTERNAL, "svc-gateway", "RuntimeError", "database")
    assert any(_INTERNAL in (r.exc_text or "") or (r.exc_info and _INTERNAL in str(r.exc_info[1]))
               for r in caplog.records)  # fmt: skip
    (span,) = [s for s in spans.get_finished_spans() if s.attributes and n.DENIAL_DETAIL in s.attributes]
    assert any(_INTERNAL in str(e.attributes) for e in span.events)  # the recorded exception
    assert upstream.handshakes == []


async def test_the_trace_id_in_the_body_is_the_handshake_span(uvicorn_server: UvicornFactory, spans: Spans) -> None:
    _, problem, _ = await _refuse(uvicorn_server, spans, f"ws://127.0.0.1:{free_port()}/")
    (span,) = [s for s in spans.get_finished_spans() if s.attributes and n.DENIAL_DETAIL in s.attributes]
    assert span.context is not None and problem["trace_id"] == f"{span.context.trace_id:032x}"


async def test_expose_error_details_tells_the_client_in_development(
    uvicorn_server: UvicornFactory, spans: Spans
) -> None:
    port = free_port()
    status, problem, _ = await _refuse(uvicorn_server, spans, f"ws://127.0.0.1:{port}/", expose_error_details=True)
    assert status == 502 and f"127.0.0.1:{port}" in problem["detail"] and "is unreachable" in problem["detail"]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 507])
def test_every_5xx_detail_is_replaced_and_4xx_is_kept(status: int) -> None:
    secret = "ws://chat-2.internal:9000/x is unreachable: [Errno -2] Name or service not known"
    body = public_problem(HandshakeDenied(status, secret, title="internal title"))
    assert b"chat-2" not in body and b"Errno" not in body and b"internal title" not in body
    assert secret.encode() in public_problem(HandshakeDenied(status, secret), expose_details=True)
    assert b"the token has expired" in public_problem(HandshakeDenied(401, "the token has expired"))


def test_expose_error_details_is_off_by_default() -> None:
    from asgi_ws_gateway import GatewayConfig

    assert GatewayConfig().expose_error_details is False


async def test_an_unreachable_jwks_is_a_generic_503(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spans: Spans
) -> None:
    port = free_port()
    jwt_policy = {
        "validate-jwt": {"algorithms": ["RS256"], "jwks_url": f"http://127.0.0.1:{port}/jwks", "jwks_timeout": 1}
    }
    headers = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhIn0.c2ln"}
    api = {"name": "a", "path": "/ws/a", "upstreams": [upstream.url("/echo")], "policies": [jwt_policy]}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}, tracer_provider=spans.provider))
    status, response_headers, body = await expect_status(server.url("/ws/a"), additional_headers=headers)
    assert status == 503 and response_headers["retry-after"] == "5"
    _assert_generic(body, json.loads(body), 503, str(port), "/jwks", "http://")
    assert f"127.0.0.1:{port}/jwks" in _span_detail(spans)


async def test_an_unreachable_redis_is_a_generic_503(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    limit = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 5, "window": 10, "on_store_error": "closed"}}
    api = {"name": "a", "path": "/ws/a", "upstreams": [upstream.url("/echo")], "policies": [limit]}
    store = {"type": "redis", "url": f"redis://127.0.0.1:{port}/0", "prefix": "sechs-error-bodies", "timeout": 0.3}
    gateway = WebSocketGateway(not_found, config={"apis": [api], "store": store}, tracer_provider=spans.provider)
    server = uvicorn_server(gateway)
    status, _headers, body = await expect_status(server.url("/ws/a"))
    assert status == 503
    _assert_generic(body, json.loads(body), 503, str(port), "Redis", "redis")
    assert "Redis" in _span_detail(spans)
    assert any("Redis" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_an_in_band_refresh_hides_a_jwks_failure_too(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``credential-expiry`` replies with the denial's detail: a 5xx one is replaced there as well."""
    port = free_port()
    jwt_policy = {"validate-jwt": {"algorithms": ["HS256", "RS256"], "secret": HS_SECRET, "audience": "chat",
                                   "jwks_url": f"http://127.0.0.1:{port}/jwks", "jwks_timeout": 1}}  # fmt: skip
    api = {
        "name": "a", "path": "/ws/a", "upstreams": [upstream.url("/echo")], "policies": [jwt_policy],
        "message_policies": {"inbound": [{"credential-expiry": {}}]},
    }  # fmt: skip
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    async with await connect(server.url("/ws/a"), additional_headers={"Authorization": f"Bearer {token()}"}) as ws:
        await ws.send(json.dumps({"type": "auth.refresh", "token": token(signing_key("RS256"))}))
        reply = await ws.recv()
        assert json.loads(reply)["error"] == "refresh_jwks_unavailable"
        assert str(port) not in str(reply) and "jwks" not in str(reply).replace("refresh_jwks_unavailable", "")
