"""An OTLP/HTTP collector that answers with a redirect, as the gateway's own exporters meet it.

The SDK's exporters (1.45) post with ``allow_redirects=False`` and take any status under 400 as a
sent batch: a collector answering 307 (an ingress sending ``http://`` on to ``https://``, a moved
endpoint) dropped every span, metric point and log record, and not one line said so. Exporters
before 1.45 post through ``Session.post``, which follows the redirect to whatever host it names with
the session's headers, ``OTEL_EXPORTER_OTLP_HEADERS`` (an API key) among them. The gateway's adapter
now fails an export answered with a redirect, naming it, and never follows it. Each case runs against
real HTTP servers; the gateway's providers run in a child process (its own global providers).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.telemetry.otlp_responses import CollectorRedirected, bound_responses
from support.servers import served_in_thread

KEY = "collector-key-0d5e1f"
EXPORTING = """
import logging
from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import resolve_providers
from opentelemetry.sdk._logs import LoggingHandler

providers = resolve_providers(TelemetryConfig(exporter="otlp", export_logs=True))
with providers.tracer.get_tracer("t").start_as_current_span("handshake"):
    pass
providers.meter.get_meter("m").create_counter("connections").add(1)
log = logging.getLogger("app")
log.addHandler(LoggingHandler(logger_provider=providers.logger))
log.warning("a record")
for provider in providers.owned:
    provider.force_flush(30_000)
    provider.shutdown()
"""


class Server(ThreadingHTTPServer):
    """Answers every POST with ``status`` (and ``Location: location`` + the path); keeps what came."""

    daemon_threads = True

    def __init__(self, status: int = 200, location: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.status = status
        self.location = location
        self.received: list[tuple[str, dict[str, str]]] = []

    def serve(self) -> Iterator[Server]:
        return served_in_thread(self)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}"


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location + self.path + "?sig=s3cr3t")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def elsewhere() -> Iterator[Server]:
    """Where the collector redirects to: another host name (``localhost``) on another port."""
    yield from Server().serve()


@pytest.fixture
def redirecting(elsewhere: Server) -> Iterator[Server]:
    yield from Server(307, elsewhere.url("localhost")).serve()


def test_a_redirected_export_is_a_failure_the_log_names(redirecting: Server, elsewhere: Server) -> None:
    """Before: three batches answered 307, no line on stderr, every export counted as sent."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # the tree under test, where it is not the one installed
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": redirecting.url(),
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={KEY}",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
    }
    done = subprocess.run([sys.executable, "-c", EXPORTING], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    paths = sorted({path for path, _ in redirecting.received})
    assert paths == ["/v1/logs", "/v1/metrics", "/v1/traces"], redirecting.received
    assert elsewhere.received == []
    for path in paths:
        named = f"{redirecting.url()}{path} answered 307, a redirect to {elsewhere.url('localhost')}{path}"
        assert named in done.stderr, done.stderr
    assert "s3cr3t" not in done.stderr and KEY not in done.stderr, done.stderr


def test_a_session_that_follows_redirects_does_not_follow_the_collectors(
    redirecting: Server, elsewhere: Server
) -> None:
    """As an exporter before SDK 1.45 posts (``Session.post``, its headers on the session): before,
    the redirect was followed to the other host, the API key with it."""
    session = requests.Session()
    session.headers["x-api-key"] = KEY
    bound_responses(SimpleNamespace(_session=session))
    with pytest.raises(requests.RequestException, match="answered 307, a redirect"):
        session.post(redirecting.url() + "/v1/traces", data=b"spans", timeout=10)
    assert [path for path, _ in redirecting.received] == ["/v1/traces"]
    assert elsewhere.received == []


def test_a_3xx_without_a_location_is_a_failure_too() -> None:
    """A 304 follows nowhere, and the SDK took it as a sent batch all the same."""
    for collector in Server(304).serve():
        session = requests.Session()
        bound_responses(SimpleNamespace(_session=session))
        with pytest.raises(requests.RequestException, match="answered 304, a redirect to nowhere"):
            session.post(collector.url() + "/v1/traces", data=b"spans", timeout=10)


def test_the_redirect_line_keeps_its_text_after_a_redacted_location() -> None:
    """The exporters' lines are redacted as a peer's free text, whose query values run to a space: the
    location ended in a colon ("...?api_key=REDACTED: the gateway's ..."), taken for the value's own."""
    failure = CollectorRedirected("http://c:4318/v1/traces", 307, "https://elsewhere/v1/traces?api_key=s3cr3t")
    record = logging.LogRecord(
        "opentelemetry.exporter.otlp.proto.http.trace_exporter", logging.ERROR, __file__, 1,
        "Failed to export span batch due to: %s", (failure,), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    line = record.getMessage()
    assert "s3cr3t" not in line, line
    assert "a redirect to https://elsewhere/v1/traces?api_key=REDACTED (not followed: " in line, line
