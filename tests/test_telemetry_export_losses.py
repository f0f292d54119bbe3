"""What the gateway's own OTLP exporters lose while a collector fails is counted in ``ws_gateway.telemetry.dropped``.

Real ``asgi-ws-gateway run`` processes, real clients and upstream. Before, a collector down, refusing or too
slow cost spans and metric points that only the log told of (a throttled line per kind and 10 s): the SDK's
batch processor dropped a full queue's spans with a ``Queue full`` line and counted them nowhere the gateway
exports, and a failed batch was lost without a count. Now each is counted by signal and reason, the log
lines as before.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.counted_exporters import CountedSpanExporter
from asgi_ws_gateway.telemetry.export_losses import EXPORT_LOSSES
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
DROPPED = n.TELEMETRY_DROPPED.name
HANDSHAKES = 30


def _start(tmp: Path, upstream: UpstreamServer, environ: dict[str, str]) -> ServerProcess:
    config = write_config(tmp, build_config(upstream, path="/echo", telemetry={}))
    return ready_server(lambda p: [*RUN, str(config), "--port", str(p)], env=environ)


async def _handshakes(server: ServerProcess, count: int = HANDSHAKES) -> None:
    for _ in range(count):
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


def _dropped(receiver: OtlpReceiver) -> dict[tuple[str, str], float]:
    return {
        (p.attributes[n.TELEMETRY_SIGNAL], p.attributes[n.ERROR_TYPE]): p.value
        for p in receiver.latest(DROPPED).values()
    }


async def test_spans_a_dead_collector_cost_are_counted_by_reason(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Spans over OTLP/HTTP to a collector that never answers (a queue of 4, batches of 2), metrics to a working
    receiver: the spans of each failed batch count as ``export_failed``, those the full queue dropped as
    ``queue_full``; the ``Queue full`` line stays one per 10 s. Before: no such metric at all."""
    with OtlpReceiver() as receiver, socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # a collector that takes the connection and never answers: each batch its timeout
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("grpc"),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1",  # seconds: 30 handshakes outpace it on a loaded machine too
            "OTEL_BSP_MAX_QUEUE_SIZE": "4",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with _start(tmp_path, upstream_server, environ) as server:
            await _handshakes(server)
            await asyncio.to_thread(server.wait_for_line, "Queue full")
            await asyncio.to_thread(server.wait_for_line, "Failed to export")
            assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()
            output = server.output()
        dropped = _dropped(receiver)
    assert set(dropped) == {("traces", "queue_full"), ("traces", "export_failed"), ("metrics", "export_failed"),
                            ("logs", "queue_full"), ("logs", "export_failed")}, dropped  # fmt: skip
    assert dropped["traces", "queue_full"] >= 1, output
    assert dropped["traces", "export_failed"] >= 2, output  # a whole batch, at least
    assert dropped["metrics", "export_failed"] == 0
    assert len(re.findall(r"Queue full", output)) <= 2, output  # the first, and one per 10 s window at most


async def test_metric_points_a_refusing_collector_cost_are_counted_once_it_answers(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Metrics over OTLP/HTTP to a collector answering 503, then 200 again: the points of the refused exports
    arrive in the next export that gets through as ``metrics`` ``export_failed``."""
    with OtlpReceiver() as receiver:
        receiver.http_refusal = 503
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http/protobuf"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with _start(tmp_path, upstream_server, environ) as server:
            await _handshakes(server, 3)
            await asyncio.to_thread(server.wait_for_line, "Failed to export metrics batch")
            receiver.http_refusal = None
            assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()
        dropped = _dropped(receiver)
    assert dropped["metrics", "export_failed"] >= 1, dropped
    assert dropped["traces", "export_failed"] == 0


def test_a_batch_whose_export_raised_is_counted_and_the_exception_kept() -> None:
    """An exporter that raises (the processor logs it and goes on) lost its batch: counted, then raised as it was."""

    class Raising(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise RuntimeError("encoder bug")

    before = {(s, r): c for s, r, c in EXPORT_LOSSES.counts()}[("traces", "export_failed")]
    with pytest.raises(RuntimeError, match="encoder bug"):
        CountedSpanExporter(Raising()).export([ReadableSpan(name="a"), ReadableSpan(name="b")])
    after = {(s, r): c for s, r, c in EXPORT_LOSSES.counts()}[("traces", "export_failed")]
    assert after - before == 2
