"""What telemetry costs per connection in-process, counted in instructions: a cut's effect without the
real gateway's run-to-run noise.

``telemetry_instructions.py`` counts a real gateway, whose event loop moves by ±10-45 k instructions a
handshake between identical runs (Python's type-attribute cache collides differently in each process).
This drives the gateway's own ``HandshakeTrace``/``ConnectionTrace`` instead (handshake → one upstream
attempt → accept → one 64 B message each way → close, a task each, as ``telemetry_handshake_cpu.py``),
with the gateway's lean spans, its OTLP encoder on the batch processor's thread (nothing sent) and its
own duration histograms, under callgrind: ``--warmup`` connections, then ``--warmup + --count``, in two
processes, subtracted; all threads. Identical trees repeat to about 0.1 %.

Modes: ``on`` (traces and metrics), ``traces``, ``metrics``, ``noexport`` (traces and metrics, batches
released unencoded: the encoder's share is ``on`` minus it) and ``off``.

Usage: ``python -m bench.telemetry_connection_instructions [--modes on,off] [--count 1536] [--warmup 512]
[--baseline-src DIR] [--src DIR]`` (``DIR``: another tree's ``src``, counted in the same run; byte-compile it first,
``python -m compileall -q DIR``, or its first process pays for the compiling). Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.traced_connections import CONFIG, discarding_metric_exporter, run_connections

ROOT = Path(__file__).resolve().parent.parent
MODES = ("on", "traces", "metrics", "noexport", "off")


async def _connections(count: int, mode: str) -> None:
    """``count`` traced connections in this process (the counted part)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from asgi_ws_gateway import load_config
    from asgi_ws_gateway.telemetry import Telemetry, lean_provider, providers
    from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
    from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder

    encoder = SpanEncoder()

    class Encoding(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if mode != "noexport":
                encoder.encode(spans)
            return SpanExportResult.SUCCESS

    config = load_config(CONFIG)
    tracer_provider = None
    if mode in ("on", "traces", "noexport"):
        # The gateway's own provider's ids (providers.py): the C extension's generator where the tree has one.
        own_ids = getattr(lean_provider, "own_id_generator", lambda: None)
        tracer_provider = LeanTracerProvider(resource=Resource.create(), id_generator=own_ids())
        tracer_provider.add_span_processor(
            BatchSpanProcessor(Encoding(), max_queue_size=count * 3 + 512, schedule_delay_millis=3_600_000)
        )
    os.environ["OTEL_TRACES_EXPORTER"] = "none"  # traces: the provider above, or none
    os.environ["OTEL_METRICS_EXPORTER"] = "none" if mode in ("off", "traces") else "otlp"
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000"
    providers._metric_exporter = lambda protocol: discarding_metric_exporter()
    telemetry = Telemetry(config, tracer_provider=tracer_provider)
    gc.collect()
    gc.freeze()  # start-up's objects out of the collections the connections cause
    await run_connections(telemetry, config, count, messages=True)
    if tracer_provider is not None:
        tracer_provider.force_flush()  # the encoding of what is still queued counts too


def _instructions(src: Path, mode: str, count: int) -> int:
    """All threads' instructions of one process running ``count`` connections from ``src``."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p", "--separate-threads=no",
             sys.executable, "-m", "bench.telemetry_connection_instructions", "--inner", mode, "--count", str(count)],
            check=True, capture_output=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        total = 0
        for path in Path(out).iterdir():
            for line in path.read_text().splitlines():
                if line.startswith("summary:"):
                    total += int(line.split()[1])
        return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes", default="on,off", help=f"comma-separated, of {','.join(MODES)} (default: %(default)s)"
    )
    parser.add_argument("--count", type=int, default=1536, help="counted connections (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=512, help="connections before them (default: %(default)s)")
    parser.add_argument("--baseline-src", type=Path, help="another tree's src, counted as the -baseline rows")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="the src of the other rows (default: this checkout's)"
    )
    parser.add_argument("--inner", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(_connections(args.count, args.inner))
        return 0
    trees = [("", args.src)] + ([("-baseline", args.baseline_src)] if args.baseline_src else [])
    print(f"instructions per connection, in-process, {args.count} after {args.warmup} (all threads)")
    for mode in (mode.strip() for mode in args.modes.split(",") if mode.strip()):
        for suffix, src in trees:
            warm = _instructions(src, mode, args.warmup)
            counted = _instructions(src, mode, args.warmup + args.count)
            print(f"{mode + suffix:20s} {(counted - warm) / args.count / 1000:9.1f} k")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
