"""What telemetry costs: relay throughput and handshake rate with telemetry on versus off, in one run.

Processes, all on 127.0.0.1: a ``websockets`` echo upstream; an OTLP/gRPC receiver that decodes
and counts what it gets; gateways under uvicorn with the same API: ``off`` (the default: no
``OTEL_*`` variables) and the variants exporting to the receiver: ``on`` (traces and metrics,
default sampling: parent-based always-on; the target), ``sampled`` (10 % of traces), ``metrics``
(no traces), ``failover`` (as ``on``, with ``telemetry.attempt_spans: failover``), and
``on-sdk-encoder``/``failover-sdk-encoder`` (the same with the SDK's OTLP encoder) and
``on-sdk-spans``/``failover-sdk-spans`` (the same with the SDK's spans, ``ASGI_WS_GATEWAY_SPANS=sdk``,
instead of the gateway's lean ones) and ``on-sdk-histograms``/``metrics-sdk-histograms`` (the SDK's
duration histograms, ``ASGI_WS_GATEWAY_HISTOGRAMS=sdk``, instead of the gateway's own). All use the
default batch span processor and collect metrics every second
(more often than the 60 s default, so a collection falls in every round). This process is the load
generator. Each round measures every gateway back to back, in a rotated order, so drift and other
work on the machine fall on all of them; a variant's cost is the median of its per-round ratios to
``off`` in the same round. Rates are wall clock; ``*_cpu`` is the gateway process's own CPU time
per operation (all its threads, from /proc), which other load on the machine disturbs less.

* throughput: ``--conns`` connections, closed loop: send 64 B, wait for the echo, repeat;
  messages/s counts messages relayed (two per round trip).
* handshake rate: ``--conns`` loops of open, one echo, close; handshakes/s completed.

Also reports, per message, what an OpenTelemetry ``Histogram.record`` costs in this SDK against
the relay's own size-slot increment (why sizes are counted in ``RelayStats`` and observed later).

Usage: ``python bench/telemetry_overhead.py [--rounds 11] [--seconds 1.5] [--conns 4] [--variants on,sampled,metrics]
[--baseline-src DIR] [--server uvicorn|run]`` (``run``: every gateway is ``asgi-ws-gateway run`` with its
defaults, the path users get: the splice and the access log, written to a discarded stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 64
HOST = "127.0.0.1"


# -- roles run in child processes -----------------------------------------------------------------


def _upstream(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, HOST, port, compression=None, max_queue=4):
            await asyncio.Future()

    asyncio.run(main())


def _receiver(port: int) -> None:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as m
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t

    counts = {"spans": 0, "metric_exports": 0}

    def traces(request: t.ExportTraceServiceRequest, context: Any) -> t.ExportTraceServiceResponse:
        counts["spans"] += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return t.ExportTraceServiceResponse()

    def metrics(request: m.ExportMetricsServiceRequest, context: Any) -> m.ExportMetricsServiceResponse:
        counts["metric_exports"] += 1
        return m.ExportMetricsServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    for service, handler, request_type, response_type in (
        ("trace.v1.TraceService", traces, t.ExportTraceServiceRequest, t.ExportTraceServiceResponse),
        ("metrics.v1.MetricsService", metrics, m.ExportMetricsServiceRequest, m.ExportMetricsServiceResponse),
    ):
        method = grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(f"opentelemetry.proto.collector.{service}", {"Export": method})]
        )
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    try:
        for _line in sys.stdin:  # the parent asks "counts" and finally closes stdin
            print(json.dumps(counts), flush=True)
    finally:
        server.stop(None)


def _gateway(port: int, config: str) -> None:
    import uvicorn

    from asgi_ws_gateway.standalone import create_app

    uvicorn.run(create_app(config), host=HOST, port=port, ws="websockets-sansio", log_level="warning", lifespan="on")


# -- orchestration ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_upstream_and_receiver(stack: contextlib.ExitStack) -> tuple[int, int]:
    """The echo upstream and OTLP receiver roles in child processes, listening: their ports (stopped with ``stack``)."""
    upstream_port, receiver_port = _free_port(), _free_port()
    stack.enter_context(_child("upstream", "--port", str(upstream_port)))
    stack.enter_context(_child("receiver", "--port", str(receiver_port), stdin=True))
    _wait_listening(upstream_port)
    _wait_listening(receiver_port)
    return upstream_port, receiver_port


@contextmanager
def _child(
    role: str,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bool = False,
    src: Path | None = None,
    command: list[str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """A role of this script in a child process (``command``: another program, its output dropped)."""
    if command is None:
        command = [sys.executable, str(Path(__file__).resolve()), "--role", role, *args]
    child_env = {**(env if env is not None else os.environ), "PYTHONPATH": str(src or ROOT / "src")}
    pipe = subprocess.PIPE if stdin else subprocess.DEVNULL
    stdout = pipe if stdin else (subprocess.DEVNULL if role == "run" else None)  # run's access log: dropped
    process = subprocess.Popen(command, env=child_env, text=True, stdin=pipe, stdout=stdout)
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _quiet_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of process ``pid`` (all its threads: exporters included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process ``pid`` now alive, by thread id (``pid``: the main thread), to
    the nanosecond (the scheduler's run time, ``/proc/PID/task/TID/schedstat``). Empty when the process is
    gone; a thread that ends between two readings is missing from the second."""
    seconds: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # ended meanwhile
                seconds[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
    return seconds


async def _throughput(url: str, conns: int, seconds: float) -> float:
    """Messages relayed (two per round trip) by ``conns`` closed loops in ``seconds``."""
    from websockets.asyncio.client import connect

    stop = time.perf_counter() + seconds
    counts = [0] * conns

    async def loop(i: int) -> None:
        async with connect(url, compression=None, proxy=None) as ws:
            while time.perf_counter() < stop:
                await ws.send(PAYLOAD)
                await ws.recv()
                counts[i] += 2

    await asyncio.gather(*(loop(i) for i in range(conns)))
    return float(sum(counts))


async def _handshakes(url: str, conns: int, seconds: float) -> float:
    """Handshakes completed (open, one echo, close) by ``conns`` loops in ``seconds``."""
    from websockets.asyncio.client import connect

    stop = time.perf_counter() + seconds
    counts = [0] * conns

    async def loop(i: int) -> None:
        while time.perf_counter() < stop:
            async with connect(url, compression=None, proxy=None) as ws:
                await ws.send(PAYLOAD)
                await ws.recv()
            counts[i] += 1

    await asyncio.gather(*(loop(i) for i in range(conns)))
    return float(sum(counts))


def _record_costs() -> dict[str, float]:
    """Microseconds per message: OTel Histogram.record versus the relay's size-slot increment."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    histogram = provider.get_meter("bench").create_histogram("size", "By")
    attributes = {"ws_gateway.api.name": "echo", "ws_gateway.message.direction": "client_to_upstream"}
    slots = [0] * 22
    size = 64
    number = 100_000

    def increment() -> None:
        slots[size.bit_length()] += 1

    def nothing() -> None:
        pass

    def per_call(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6

    base = per_call(nothing)
    costs = {
        "histogram_record_us": per_call(lambda: histogram.record(size, attributes)) - base,
        "slot_increment_us": per_call(increment) - base,
    }
    provider.shutdown()
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["upstream", "receiver", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=11, help="rounds per variant and measure (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one round (default: %(default)s)")
    parser.add_argument("--conns", type=int, default=4, help="concurrent connections (default: %(default)s)")
    parser.add_argument(
        "--variants",
        default="on,sampled,metrics",
        help="telemetry-on variants to compare with off (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-src",
        help="a source tree (e.g. `git archive main src | tar -x -C DIR`, then DIR/src) for the -baseline variants",
    )
    parser.add_argument(
        "--server",
        choices=["uvicorn", "run"],
        default="uvicorn",
        help="uvicorn's websockets-sansio and the relay, or `asgi-ws-gateway run` with its defaults "
        "(the splice, the access log) (default: %(default)s)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="gateways on CPU 0; this load generator, the upstream and the receiver on the others, as `python -m "
        "bench` pins the proxy (default: on with 2 or more CPUs)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.role == "upstream":
        _upstream(args.port)
        return 0
    if args.role == "receiver":
        _receiver(args.port)
        return 0
    if args.role == "gateway":
        _gateway(args.port, args.config)
        return 0
    return _run(args)


SDK_ENCODER = {"ASGI_WS_GATEWAY_OTLP_ENCODER": "sdk"}
SDK_SPANS = {"ASGI_WS_GATEWAY_SPANS": "sdk"}
SDK_HISTOGRAMS = {"ASGI_WS_GATEWAY_HISTOGRAMS": "sdk"}
VARIANTS: dict[str, dict[str, str]] = {
    "on": {},
    "on-sdk-spans": SDK_SPANS,
    "failover-sdk-spans": SDK_SPANS,
    "sampled": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "metrics": {"OTEL_TRACES_EXPORTER": "none"},
    "on-sdk-histograms": SDK_HISTOGRAMS,
    "metrics-sdk-histograms": {"OTEL_TRACES_EXPORTER": "none", **SDK_HISTOGRAMS},
    "failover": {},
    "on-sdk-encoder": SDK_ENCODER,
    "failover-sdk-encoder": SDK_ENCODER,
    "on-baseline": {},
    "metrics-baseline": {"OTEL_TRACES_EXPORTER": "none"},
}
"""Telemetry-on variants, each compared with the ``off`` gateway: default sampling (the target),
10 % of traces sampled, metrics only, default sampling with ``attempt_spans: failover``, and ``on``
and ``failover`` with the SDK's OTLP encoder instead of the gateway's (how it was before it had one),
or with the SDK's spans instead of the gateway's lean ones (``-sdk-spans``), ``on`` and ``metrics``
with the SDK's duration histograms instead of the gateway's own (``-sdk-histograms``); ``-baseline``: ``on`` or
``metrics`` run from the source tree ``--baseline-src`` names (another commit's ``src``, for a
before/after in the same rounds)."""
TELEMETRY: dict[str, dict[str, str]] = {
    "failover": {"attempt_spans": "failover"},
    "failover-sdk-spans": {"attempt_spans": "failover"},
    "failover-sdk-encoder": {"attempt_spans": "failover"},
}
"""The gateway's ``telemetry`` section per variant (default: none)."""


GATEWAY_CPUS = {0}
"""With ``--pin``: the gateways' CPU, every thread of theirs (export threads included, so their cost is counted
where the event loop pays it: its caches)."""
LOAD_CPUS = set(range(1, os.cpu_count() or 1))
"""With ``--pin``: the load generator's (this process's), the upstream's and the receiver's CPUs, so that their
work neither takes the gateways' core nor evicts what the gateways keep in its caches."""


def _run(args: argparse.Namespace) -> int:
    variants = ["off", *args.variants.split(",")]
    upstream_port, receiver_port = _free_port(), _free_port()
    ports = {variant: _free_port() for variant in variants}
    if args.pin:  # inherited by the upstream and the receiver started below
        os.sched_setaffinity(0, LOAD_CPUS)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{upstream_port}/"], "compression": None}
        configs = {}
        for variant in variants:
            configs[variant] = Path(tmp) / f"gateway-{variant}.json"
            configs[variant].write_text(json.dumps({"apis": [api], "telemetry": TELEMETRY.get(variant, {})}))
        exporting = {
            **_quiet_env(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{receiver_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "asgi-ws-gateway-bench",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }
        stack.enter_context(_child("upstream", "--port", str(upstream_port)))
        receiver = stack.enter_context(_child("receiver", "--port", str(receiver_port), stdin=True))
        pids = {}
        for variant in variants:
            env = _quiet_env() if variant == "off" else {**exporting, **VARIANTS[variant]}
            src = None
            if variant.endswith("-baseline"):
                if not args.baseline_src:
                    raise SystemExit(f"{variant} needs --baseline-src")
                src = Path(args.baseline_src)
            listen = str(ports[variant])
            if args.server == "run":  # the default path: the project's protocol class, the splice, the access log
                run = [sys.executable, "-m", "asgi_ws_gateway", "run", str(configs[variant]), "--port", listen]
                gateway = stack.enter_context(_child("run", env=env, src=src, command=run))
            else:
                gateway = stack.enter_context(
                    _child("gateway", "--port", listen, "--config", str(configs[variant]), env=env, src=src)
                )
            if args.pin:  # before it starts its threads: they inherit it
                os.sched_setaffinity(gateway.pid, GATEWAY_CPUS)
            pids[variant] = gateway.pid
        for port in (upstream_port, receiver_port, *ports.values()):
            _wait_listening(port)
        results = asyncio.run(_measure(args, ports, pids))
        assert receiver.stdin is not None and receiver.stdout is not None
        receiver.stdin.write("counts\n")
        receiver.stdin.flush()
        received = json.loads(receiver.stdout.readline())
    report = _report(results, received, _record_costs(), args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


Results = dict[str, dict[str, list[float]]]
"""variant -> measure -> per-round values; measures: ``throughput``/``handshakes`` (per second of
wall clock) and ``throughput_cpu``/``handshakes_cpu`` (gateway CPU microseconds per operation)."""
THREAD_PARTS = ("_loop", "_others")
PARTS = ("cpu", "user", "sys", *(part[1:] for part in THREAD_PARTS))
MEASURES = (
    "throughput", *(f"throughput_{part}" for part in PARTS),
    "handshakes", *(f"handshakes_{part}" for part in PARTS),
)  # fmt: skip
"""``*_cpu``: user + system; ``*_user`` and ``*_sys`` its parts (instruction counts see user time alone, and
the clock-tick split between the two moves between rounds); ``*_loop`` and ``*_others``: the same CPU time
split by thread, to the nanosecond: the event loop's (the main thread) and every other thread's (the batch
span processor's encoding and export, gRPC's threads, the metric reader's; off has none), each one's ratio
what it adds over off's whole CPU time (``*_cpu``) in the same round, so that the two costs add up to about
the whole's."""


async def _measure(args: argparse.Namespace, ports: dict[str, int], pids: dict[str, int]) -> Results:
    urls = {variant: f"ws://{HOST}:{port}/ws/echo" for variant, port in ports.items()}
    results: Results = {v: {k: [] for k in MEASURES} for v in urls}
    for variant in urls:  # warm-up: imports, first connections, caches
        await _throughput(urls[variant], args.conns, 0.5)
        await _handshakes(urls[variant], args.conns, 0.5)

    async def one(variant: str, measure: str, run: Callable[[str, int, float], Any]) -> None:
        pid = pids[variant]
        (user, system), threads, started = _cpu_seconds(pid), thread_cpu_seconds(pid), time.perf_counter()
        ops = await run(urls[variant], args.conns, args.seconds)
        elapsed, (user_after, system_after) = time.perf_counter() - started, _cpu_seconds(pid)
        threads_after = thread_cpu_seconds(pid)
        user, system = user_after - user, system_after - system
        spent = {tid: after - threads.get(tid, 0.0) for tid, after in threads_after.items()}  # a new thread: all
        loop = spent.pop(pid, 0.0)
        results[variant][f"{measure}_loop"].append(loop / ops * 1e6)
        results[variant][f"{measure}_others"].append(sum(spent.values()) / ops * 1e6)
        results[variant][measure].append(ops / elapsed)
        results[variant][f"{measure}_cpu"].append((user + system) / ops * 1e6)
        results[variant][f"{measure}_user"].append(user / ops * 1e6)
        results[variant][f"{measure}_sys"].append(system / ops * 1e6)

    names = list(urls)
    for i in range(args.rounds):  # each round measures every variant, in a rotated order
        order = names[i % len(names) :] + names[: i % len(names)]
        for variant in order:
            await one(variant, "throughput", _throughput)
        for variant in reversed(order):
            await one(variant, "handshakes", _handshakes)
    return results


def _report(
    results: Results, received: dict[str, int], costs: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "rounds": args.rounds, "seconds": args.seconds, "conns": args.conns, "pinned": args.pin, "received": received,
    }  # fmt: skip
    off = results["off"]
    report["off"] = {measure: round(statistics.median(off[measure]), 1) for measure in MEASURES}
    for variant in results:
        if variant == "off":
            continue
        report[variant] = {}
        for measure in MEASURES:
            ons = results[variant][measure]
            if measure.endswith(THREAD_PARTS):  # what the thread adds, over off's whole CPU time in the same round
                whole = off[measure.rpartition("_")[0] + "_cpu"]
                ratios = [1 + (on - base) / total for on, base, total in zip(ons, off[measure], whole, strict=True)]
            else:
                ratios = [on / base for on, base in zip(ons, off[measure], strict=True)]  # paired: same round
            ratio = statistics.median(ratios)
            per_op = measure.endswith(tuple(f"_{part}" for part in PARTS))  # CPU per operation: more is worse
            report[variant][measure] = {
                "median": round(statistics.median(ons), 1),
                "on_off_ratio": round(ratio, 4),
                "cost_percent": round(100 * ((ratio - 1) if per_op else (1 - ratio)), 2),
                "round_ratios": [round(r, 3) for r in ratios],
            }
    report["per_message_us"] = {k: round(v, 3) for k, v in costs.items()}
    return report


def _print(report: dict[str, Any]) -> None:
    pinning = "gateways on CPU 0, the rest on the others" if report["pinned"] else "not pinned"
    print(f"{report['rounds']} rounds x {report['seconds']} s, {report['conns']} connections, 64 B messages, {pinning}")
    units = {"throughput": "msg/s", "handshakes": "hs/s"}
    for measure, per in (("throughput", "msg"), ("handshakes", "hs")):
        units |= {f"{measure}_{part}": f"us {part}/{per}" for part in PARTS}
    print("off:  " + ", ".join(f"{measure} {report['off'][measure]} {units[measure]}" for measure in MEASURES))
    for variant in report:
        if variant not in VARIANTS:
            continue
        print(f"{variant}:")
        for measure in MEASURES:
            r = report[variant][measure]
            print(
                f"  {measure:15} {r['median']:>9.1f} {units[measure]:11} paired ratio {r['on_off_ratio']:.3f}  "
                f"cost {r['cost_percent']:+5.1f}%   rounds {r['round_ratios']}"
            )
    costs = report["per_message_us"]
    print(
        f"per message: OTel Histogram.record {costs['histogram_record_us']:.2f} us, "
        f"RelayStats size-slot increment {costs['slot_increment_us']:.3f} us"
    )
    print(f"receiver got {report['received']['spans']} spans, {report['received']['metric_exports']} metric exports")


if __name__ == "__main__":
    sys.exit(main())
