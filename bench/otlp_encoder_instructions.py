"""What the OTLP span encoder costs per connection, in-process: the gateway's own spans, encoded batch by batch.

Drives the gateway's own ``HandshakeTrace``/``ConnectionTrace`` (as ``telemetry_handshake_cpu.py`` does:
handshake, one upstream attempt, accept, close; three spans a connection) with a batch span processor
whose exporter only keeps each batch, then encodes the kept batches with one ``SpanEncoder`` (as an
exporter keeps it), ``--batches`` after ``--warmup``. Each connection has its own client address and
byte counts (values that do not repeat, as in production) when ``--varied``. The spans are released
batch by batch, as the export thread releases them, so their deallocation is counted too.

Prints the encoding's CPU time per connection. For instructions, run it under callgrind twice and
subtract (``--batches 0`` gives the capture alone: the same batches captured, none encoded)::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m bench.otlp_encoder_instructions --batches 20
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m bench.otlp_encoder_instructions --batches 0

(difference / (20 * 512 / 3) connections). ``--check`` compares every batch with the SDK encoder's bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

BATCH = 512  # the SDK's OTEL_BSP_MAX_EXPORT_BATCH_SIZE default
SCOPE: dict[str, Any] = {
    "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
    "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"python/websockets"), (b"sec-websocket-version", b"13")],
}  # fmt: skip


async def capture(connections: int, varied: bool) -> list[list[Any]]:
    """The batches the batch span processor hands its exporter for ``connections`` traced connections."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from asgi_ws_gateway import load_config
    from asgi_ws_gateway.relay.stats import RelayStats
    from asgi_ws_gateway.telemetry import Telemetry, TracedConnector
    from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
    from asgi_ws_gateway.upstream.base import UpstreamConnection, UpstreamRequest
    from asgi_ws_gateway.upstream.request import build_request

    batches: list[list[Any]] = []

    class Keep(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            batches.append(list(spans))
            return SpanExportResult.SUCCESS

    class Upstream:
        async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
            return cast("UpstreamConnection", object())

    config = load_config({"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/echo"]}]})
    provider = LeanTracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(Keep(), max_queue_size=connections * 3 + BATCH,
                                                   schedule_delay_millis=3_600_000))  # fmt: skip
    os.environ["OTEL_TRACES_EXPORTER"] = os.environ["OTEL_METRICS_EXPORTER"] = "none"
    telemetry = Telemetry(config, tracer_provider=provider)
    api, backend = config.apis[0], config.apis[0].upstreams[0]
    connector = TracedConnector(Upstream(), api.name, backend)
    for index in range(connections):
        scope = SCOPE
        if varied:
            scope = {**SCOPE, "client": (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 5555)}
        handshake = telemetry.handshake(api, scope)
        await connector.connect(build_request(api, backend, scope, {}))
        stats = RelayStats()
        trace = handshake.accepted(backend.label, None, stats)
        stats.closed_by, stats.close_code = "client", 1000
        if varied:
            stats.messages_in, stats.bytes_in = index % 17, index * 61 % 100_003
            stats.messages_out, stats.bytes_out = index % 13, index * 89 % 1_000_003
        trace.closed(stats)
    provider.force_flush()
    provider.shutdown()
    return [batch for batch in batches if len(batch) == BATCH]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 512 spans encoded (default: %(default)s)")
    parser.add_argument(
        "--captured", type=int, default=20, help="batches captured, at least --batches (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=4, help="batches encoded before (default: %(default)s)")
    parser.add_argument("--varied", action="store_true", help="client addresses and byte counts new per connection")
    parser.add_argument("--null", action="store_true", help="release the batches unencoded: the floor")
    parser.add_argument("--check", action="store_true", help="compare each batch with the SDK encoder's bytes")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder

    total = args.warmup + max(args.batches, args.captured)
    batches = asyncio.run(capture(total * BATCH // 3 + 1, args.varied))
    encoder = SpanEncoder()
    for batch in batches[: args.warmup]:
        encoder.encode(batch)
    measured = batches[args.warmup : args.warmup + args.batches]
    del batches[: args.warmup + args.batches]  # the rest is kept, never released (os._exit)
    if args.check:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        for batch in measured:
            assert encoder.encode(batch) == encode_spans(batch).SerializeToString()
        print("same bytes as the SDK encoder")
        return 0
    encode = (lambda batch: b"") if args.null else encoder.encode
    started = time.process_time()
    while measured:
        encode(measured.pop(0))  # the batch released after it, as the export thread does
    elapsed = time.process_time() - started
    if args.batches:
        print(f"{elapsed / (args.batches * BATCH / 3) * 1e6:.2f} us CPU per connection ({args.batches} batches)")
    sys.stdout.flush()
    os._exit(0)  # the batches not encoded are never released: only the encoded ones' deallocation counts


if __name__ == "__main__":
    sys.exit(main())
