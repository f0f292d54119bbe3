"""What one traced connection costs in CPU, in-process, without sockets or a noisy load generator.

Drives the gateway's own ``HandshakeTrace``/``ConnectionTrace`` through handshake → one upstream
attempt → accept → close ``--count`` times on an event loop, with an SDK tracer provider whose batch
span processor encodes each batch to OTLP protobuf on its thread (as the OTLP exporters do; nothing
is sent), and a meter provider. Prints the process CPU (all threads, including the encoding) per
connection for each mode:

* ``off``: no providers (the default gateway);
* ``each-lean``, ``failover-lean``: traces and metrics, ``telemetry.attempt_spans`` as named, spans
  from the gateway's lean provider (``telemetry.lean_provider``, what its own OTLP export uses), encoded
  by the gateway's encoder (``telemetry.otlp_wire``);
* ``each``, ``failover``: the same with the SDK's tracer provider (``ASGI_WS_GATEWAY_SPANS=sdk``, and
  any provider an application passes or sets globally);
* ``each-sdk-encoder``, ``failover-sdk-encoder``: the same, encoded by the SDK's protobuf encoder
  (``ASGI_WS_GATEWAY_OTLP_ENCODER=sdk``, and every exporter before the gateway had its own);
* ``each-no-encoding``: as ``each``, the exporter dropping batches unencoded: what encoding costs;
* ``each-lean-traces-only``, ``metrics-only``: one of the two signals alone (the split of the cost).

Metrics come from the meter provider the gateway builds from ``OTEL_*`` (its periodic reader; the
exporter discards, the interval is an hour so nothing is collected while measuring), with its own
duration histograms (``--histograms gateway``, :mod:`asgi_ws_gateway.telemetry.histograms`) or the
SDK's (``sdk``: ``ASGI_WS_GATEWAY_HISTOGRAMS=sdk``, and any provider an application passes);
``--histograms gateway,sdk`` measures both, interleaved with the modes.

Usage: ``python -m bench.telemetry_handshake_cpu [--count 3000] [--repeat 3] [--modes off,each-lean,...]
[--histograms gateway,sdk]``. Each measure runs in a fresh process, modes interleaved, so imports and
warm caches fall on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .traced_connections import CONFIG, discarding_metric_exporter, run_connections

ROOT = Path(__file__).resolve().parent.parent

MODES = (
    "off", "each-lean", "failover-lean", "each", "failover", "each-sdk-encoder", "failover-sdk-encoder",
    "each-no-encoding", "each-lean-traces-only", "metrics-only",
)  # fmt: skip


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(mode: str, count: int, histograms: str) -> float:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from asgi_ws_gateway import load_config
    from asgi_ws_gateway.telemetry import Telemetry, providers
    from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
    from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder

    encoder = SpanEncoder()

    def gateway_encoding(spans: Sequence[ReadableSpan]) -> None:
        encoder.encode(spans)

    def sdk_encoding(spans: Sequence[ReadableSpan]) -> None:
        encode_spans(spans).SerializeToString()

    def no_encoding(spans: Sequence[ReadableSpan]) -> None:
        pass

    encode = no_encoding if mode == "each-no-encoding" else sdk_encoding if "sdk" in mode else gateway_encoding

    class Encoding(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode(spans)
            return SpanExportResult.SUCCESS

    attempt_spans = "failover" if mode.startswith("failover") else "each"
    config = load_config({**CONFIG, "telemetry": {"attempt_spans": attempt_spans}})
    tracer_provider: TracerProvider | LeanTracerProvider | None = None
    if mode not in ("off", "metrics-only"):
        tracer_provider = LeanTracerProvider(resource=Resource.create()) if "lean" in mode else TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Encoding(), max_queue_size=count * 3))
    os.environ["OTEL_TRACES_EXPORTER"] = "none"  # traces: the provider above, or none
    os.environ["OTEL_METRICS_EXPORTER"] = "none" if mode == "off" or "traces-only" in mode else "otlp"
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000"
    os.environ[providers.HISTOGRAMS_VARIABLE] = histograms
    providers._metric_exporter = lambda protocol: discarding_metric_exporter()  # exporting nothing
    telemetry = Telemetry(config, tracer_provider=tracer_provider)
    started = _cpu()
    await run_connections(telemetry, config, count)
    if tracer_provider is not None:
        tracer_provider.force_flush()  # the encoding of what is still queued counts too
    return (_cpu() - started) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="connections per measure (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="measures per mode (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to measure (default: all)")
    parser.add_argument(
        "--histograms", default="gateway", help="gateway, sdk or gateway,sdk (both, interleaved; default: %(default)s)"
    )
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the access log would measure the logging module
    kinds = [kind.strip() for kind in args.histograms.split(",") if kind.strip()]
    if not kinds or set(kinds) - {"gateway", "sdk"}:
        parser.error("--histograms: gateway, sdk or gateway,sdk")
    if args.mode:
        print(asyncio.run(_measure(args.mode, args.count, kinds[0])))
        return 0
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)} (known: {', '.join(MODES)})")
    variants = [(mode, kind) for mode in modes for kind in (kinds if mode != "off" else kinds[:1])]
    results: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
    for _ in range(args.repeat):
        for mode, kind in variants:
            command = [sys.executable, "-m", "bench.telemetry_handshake_cpu", "--mode", mode, "--count",
                       str(args.count), "--histograms", kind]  # fmt: skip
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            results[mode, kind].append(float(output))
    for (mode, kind), values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        label = mode if len(kinds) == 1 or mode == "off" else f"{mode} ({kind})"
        print(f"{label:31} median {statistics.median(values):7.1f} us CPU per connection   runs {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
