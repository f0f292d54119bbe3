"""Attacks on what the gateway shows: a credential in the message of an exception an ``io_span`` records.

A policy wraps its I/O in ``current_handshake().io_span(...)``; the exception it raises (a client
library's, which may quote the request: ``401 for ...?api_key=...``, ``Authorization: Bearer ...``)
was recorded on the span as it was, its message and stack trace exported to the tracing backend,
while the log line of the same exception is redacted.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies import HandshakeContext, current_handshake
from asgi_ws_gateway.standalone import not_found
from support.clients import expect_status
from support.jwts import token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

QUERY_KEY = "SEKRIT-IO-QUERY-0123"
BEARER = "SEKRIT-IO-BEARER-0123"
NAMED = "SEKRIT-IO-NAMED-0123"
JWT = token(sub="alice")


async def tenant_lookup(context: HandshakeContext) -> None:
    """A custom policy whose lookup fails with a client library's message quoting the request."""
    handshake = current_handshake()
    assert handshake is not None
    with handshake.io_span("tenant lookup"):
        raise RuntimeError(
            f"401 from http://tenants.internal/v1?api_key={QUERY_KEY}: sent Authorization: Bearer {BEARER}, "
            f"token={NAMED}, jwt {JWT}"
        )


async def test_the_recorded_exception_is_redacted(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """The span's exception event (message, stack trace) and status carry the error without its credentials."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    api = {"name": "a", "path": "/ws/a", "upstreams": [upstream.url("/echo")], "policies": [tenant_lookup]}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}, tracer_provider=provider))
    try:
        status, _, _ = await expect_status(server.url("/ws/a"))
    finally:
        provider.shutdown()
    assert status >= 500
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tenant lookup"]
    (event,) = [e for e in span.events if e.name == "exception"]
    attributes = dict(event.attributes or {})
    recorded = [str(attributes["exception.message"]), str(attributes["exception.stacktrace"]),
                str(span.status.description)]  # fmt: skip
    assert all("401 from http://tenants.internal/v1" in text for text in recorded), recorded
    assert attributes["exception.type"] == "RuntimeError"
    for secret in (QUERY_KEY, BEARER, NAMED, JWT.split(".")[2]):
        assert not [text for text in recorded if secret in text], (secret, recorded)
