"""An OTLP/HTTP collector's answers, as the gateway's own exporters read them.

The SDK's HTTP exporters read a response whole (``requests``) though they use only its status: a
collector answering each export with a 200 MB body took a worker from 94 to 713 MB, and one
trickling its body held the export thread for as long as it trickled. The gateway's exporters read
at most ``MAX_RESPONSE_BYTES`` within the request's timeout, the status line and headers included (a
collector sending those a byte at a time held the export thread for good: ``requests`` bounds each
read, not the answer). Each case runs the gateway's providers
in a child process (its own global providers, its own environment) against a real HTTP collector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from asgi_ws_gateway.telemetry.otlp_responses import MAX_RESPONSE_BYTES
from support.servers import served_in_thread

HUGE = 200 * 1024 * 1024
EXPORTING = """
import json, logging, sys, tracemalloc
from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import resolve_providers
from opentelemetry.sdk._logs import LoggingHandler

providers = resolve_providers(TelemetryConfig(exporter="otlp", export_logs=True))
tracemalloc.start()
for round in range(int(sys.argv[1])):
    with providers.tracer.get_tracer("t").start_as_current_span("handshake"):
        pass
    providers.meter.get_meter("m").create_counter("connections").add(1)
    log = logging.getLogger("app")
    log.addHandler(LoggingHandler(logger_provider=providers.logger))
    log.warning("a record")
    flushed = [provider.force_flush(30_000) for provider in providers.owned]
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "flushed": flushed}))
for provider in providers.owned:
    provider.shutdown()
"""


class Collector(ThreadingHTTPServer):
    """Answers every POST 200 with ``body`` bytes (sent as the client reads them); counts connections."""

    daemon_threads = True

    def __init__(self, body: int, *, trickle: bool = False, trickle_head: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.body = body
        self.trickle = trickle
        self.trickle_head = trickle_head
        self.paths: list[str] = []
        self.connections = 0
        self.sent: list[int] = []  # body bytes sent per answer before the exporter stopped reading

    def serve(self) -> Iterator[Collector]:
        return served_in_thread(self)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a small answer leaves the connection reusable
    server: Collector

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        if self.server.trickle_head:
            self._trickle_head()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(self.server.body))
        self.end_headers()
        sent = 0
        piece = b"\x00" * (1 if self.server.trickle else 1024 * 1024)
        try:
            while sent < self.server.body:
                chunk = piece[: self.server.body - sent]
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if self.server.trickle:
                    time.sleep(0.05)
        except OSError:  # the exporter closed the connection: it read no more
            self.close_connection = True
        finally:
            self.server.sent.append(sent)

    def _trickle_head(self) -> None:
        """A status line and one header line a byte every 50 ms: each read comes long before the timeout."""
        sent = 0
        try:
            for byte in SLOW_HEAD:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                sent += 1
                time.sleep(0.05)
        except OSError:  # the exporter closed the connection
            pass
        finally:
            self.close_connection = True
            self.server.sent.append(sent)


SLOW_HEAD = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60_000
"""50 minutes of a head at one byte per 50 ms (http.client takes a header line up to 64 KiB, and 100 of them)."""


def _export(collector: Collector, rounds: int, **env: str) -> dict[str, Any]:
    environ = {
        "PATH": "/usr/bin:/bin",
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},  # the tree under test
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # exports happen at force_flush, not in between
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", EXPORTING, str(rounds)], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["stderr"] = done.stderr
    return result


@pytest.fixture
def huge_answers() -> Iterator[Collector]:
    yield from Collector(HUGE).serve()


def test_a_huge_answer_is_read_only_up_to_the_bound(huge_answers: Collector) -> None:
    result = _export(huge_answers, rounds=2)
    assert sorted(set(huge_answers.paths)) == ["/v1/logs", "/v1/metrics", "/v1/traces"], huge_answers.paths
    assert result["flushed"] == [True, True, True], result  # a 200 answer is a sent batch
    assert result["peak"] < 8 * 1024 * 1024, result  # reading one answer whole took 200 MB
    assert max(huge_answers.sent) < HUGE, huge_answers.sent  # the exporter stopped reading
    # Each cut connection is closed; the next export opens another.
    assert huge_answers.connections >= len(huge_answers.paths), (huge_answers.connections, huge_answers.paths)
    assert "more than 65536 bytes" in result["stderr"], result["stderr"]


def test_a_trickled_answer_is_read_only_within_the_export_timeout() -> None:
    """One byte every 50 ms, forever as far as the exporter knows: before, a flush waited for
    ``MAX_RESPONSE_BYTES`` of it (an hour); now for the exporter's timeout."""
    for collector in Collector(10 * MAX_RESPONSE_BYTES, trickle=True).serve():
        result = _export(collector, rounds=1, OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="1")
        assert collector.paths, "nothing exported: the test would prove nothing"
        assert max(collector.sent) < MAX_RESPONSE_BYTES, collector.sent
        assert "too slowly" in result["stderr"], result["stderr"]


def test_a_small_answer_is_read_whole_and_the_connection_kept() -> None:
    for collector in Collector(12).serve():
        result = _export(collector, rounds=3)
        assert result["flushed"] == [True, True, True], result
        assert collector.sent == [12] * len(collector.paths), collector.sent
        assert len(collector.paths) >= 9, collector.paths
        assert collector.connections <= 3, collector.connections  # one per exporter's session, kept alive
        assert "OTLP collector" not in result["stderr"], result["stderr"]


def test_a_trickled_status_line_and_headers_end_the_export_at_its_timeout() -> None:
    """Before, the flush waited for the whole head (50 minutes here) and nothing was logged; now the
    exchange ends at the exporter's 1 s timeout, the connection closed and the collector named."""
    for collector in Collector(0, trickle_head=True).serve():
        result = _export(collector, rounds=1, OTEL_EXPORTER_OTLP_TIMEOUT="1")
        assert sorted(set(collector.paths)) == ["/v1/logs", "/v1/metrics", "/v1/traces"], collector.paths
        assert max(collector.sent) < len(SLOW_HEAD) // 10, collector.sent  # the exporter stopped reading
        assert f"OTLP collector {collector.endpoint}/v1/traces sent no whole answer within 1 s" in result["stderr"]
