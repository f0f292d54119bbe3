"""What telemetry costs per handshake, counted in instructions: the same on a quiet or a busy machine.

``telemetry_overhead.py`` measures CPU time, which this 2-core machine's neighbours move by ±20 %
between rounds; a change worth 3 % to the traced handshake is lost in that. This counts the
instructions instead: each gateway of ``telemetry_overhead.py`` (same roles: ``websockets`` echo
upstream, OTLP/gRPC receiver, gateway under uvicorn) runs under valgrind's callgrind with
instrumentation off while ``--warmup`` handshakes (open, one 64 B echo, close) warm it, then on for
``--handshakes`` more, by thread: the event loop's thread, and the others (the batch span
processor's encoding and gRPC send, gRPC's own threads).

Periodic work is left out: callgrind slows the gateway ~50-fold, so a timer's work would fall on a
few handshakes instead of hundreds. The metric reader collects hourly here (a collection is per
interval, not per handshake), and the span batches are the SDK's full ones (512 spans): the warm-up
and the measured handshakes are multiples of 512 spans, so the measured export is whole batches.

Usage: ``python -m bench.telemetry_instructions [--handshakes 512] [--variants on,metrics] [--baseline-src DIR]
[--src DIR] [--server uvicorn|run] [--keep DIR] [--cache-sim [--last-level BYTES]]`` (``run``: ``asgi-ws-gateway
run`` with its defaults, the splice and the access log; ``--src``: the other variants' ``src``, default this
checkout's; ``--keep``: callgrind's files, one per variant and thread, for ``callgrind_annotate``; ``--cache-sim``:
valgrind's simulation of the caches and branch predictors as well, misses per handshake and callgrind's cycle
estimate, which weighs what the instruction count leaves out; ``--last-level``: the simulated second level's
size, e.g. the L2's, 1048576 on this machine, where valgrind's default, the L3, hides the misses that cost most
here). The variant ``traces`` is ``on`` without metrics (``OTEL_METRICS_EXPORTER=none``); ``on-batch64``
exports batches of 64 spans (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), not 512;
``on-held`` none while counted (batch and queue of 8192 spans: every span of the warm-up and the count stays
queued), to tell the export thread's share of the misses from the event loop's own.
(``-baseline`` variants run another tree's ``src``, as in ``telemetry_overhead.py``). Each line also gives the
garbage collector's share (``of which GC``) and the ratio without it: a full collection (~36 M instructions)
comes once in 1,600-2,000 handshakes, so a window of 512 holds one or none by chance (``--handshakes 1536``:
one in each). Needs valgrind
(Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import telemetry_overhead as overhead

HOST = overhead.HOST
SPANS_PER_HANDSHAKE = 3  # handshake, upstream connect, connection (attempt_spans: each)
BATCH = 512  # the SDK's OTEL_BSP_MAX_EXPORT_BATCH_SIZE default
VARIANTS = {
    "off": None, "on": {}, "metrics": {"OTEL_TRACES_EXPORTER": "none"}, "traces": {"OTEL_METRICS_EXPORTER": "none"},
    "on-batch64": {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64"},
    "on-held": {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8192", "OTEL_BSP_MAX_QUEUE_SIZE": "8192"},
}  # fmt: skip


async def _handshakes(url: str, count: int) -> None:
    from websockets.asyncio.client import connect

    for _ in range(count):
        async with connect(url, compression=None, proxy=None, open_timeout=120) as ws:
            await ws.send(overhead.PAYLOAD)
            await ws.recv()


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def stop(gateway: subprocess.Popen[bytes]) -> None:
    """End the counted gateway: SIGTERM (callgrind writes its files), SIGKILL after 30 s."""
    gateway.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        gateway.wait(30)
    if gateway.poll() is None:
        gateway.kill()
        gateway.wait()


def per_handshake(prefix: Path, handshakes: int) -> dict[str, float]:
    """Instructions per handshake from callgrind's files: the event loop's thread, the others', and the
    cyclic garbage collector's, on whichever thread it ran (``gc``, part of those)."""
    threads = _thread_totals(prefix)
    main = threads.pop(1, 0)
    return {"main": main / handshakes, "other": sum(threads.values()) / handshakes,
            "gc": _collector(prefix) / handshakes}  # fmt: skip


def _collector(prefix: Path) -> int:
    """The instructions of the garbage collections, all threads (``gc_collect_main``, inclusive).

    A full collection walks every tracked object (~30 M instructions in these gateways) and comes about
    once in 1,600-2,000 handshakes: a window of 512 holds one or none, by chance. This column shows when.
    """
    total = 0
    for path in prefix.parent.glob(prefix.name + ".*-*"):
        listing = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
            check=True, capture_output=True, text=True, timeout=600,
        ).stdout  # fmt: skip
        for line in listing.splitlines():
            if re.search(r":gc_collect_main \[", line):
                total += int(line.split()[0].replace(",", ""))
                break
    return total


def _thread_totals(prefix: Path) -> dict[int, int]:
    """Instructions per thread (1: the main thread) from the dump files ``<prefix>.<dump>-<thread>``."""
    return {thread: events["Ir"] for thread, events in _thread_events(prefix).items()}


def _thread_events(prefix: Path) -> dict[int, dict[str, int]]:
    """Every event callgrind counted (``Ir``; with ``--cache-sim`` also the cache and branch misses) per
    thread (1: the main thread), each thread's dumps added up."""
    totals: dict[int, dict[str, int]] = {}
    for path in prefix.parent.glob(prefix.name + ".*"):
        match = re.search(r"-(\d+)$", path.name)
        if not match:
            continue
        names = ["Ir"]
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                thread = totals.setdefault(int(match[1]), {})
                for name, count in zip(names, line.split()[1:], strict=False):
                    thread[name] = thread.get(name, 0) + int(count)
                break
    return totals


CACHE_EVENTS = ("D1mr", "D1mw", "DLmr", "DLmw", "I1mr", "ILmr", "Bcm", "Bim")
"""What ``--cache-sim`` reports per handshake: first-level and last-level data misses (reads, writes),
instruction-fetch misses, mispredicted conditional and indirect branches (valgrind's simulation of this
machine's caches, not hardware counters)."""


def estimated_cycles(events: dict[str, int]) -> int:
    """callgrind_annotate's cycle estimate: an instruction 1, a first-level miss or a mispredicted branch
    10, a last-level miss 100 (each last-level miss was a first-level one too)."""
    first = events.get("I1mr", 0) + events.get("D1mr", 0) + events.get("D1mw", 0)
    last = events.get("ILmr", 0) + events.get("DLmr", 0) + events.get("DLmw", 0)
    branches = events.get("Bcm", 0) + events.get("Bim", 0)
    return events["Ir"] + 10 * first + 100 * last + 10 * branches


def add_cache_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cache-sim`` and ``--last-level``, read by :func:`cache_sim_options`."""
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches and branch predictors (valgrind's, ~2x slower): misses per handshake "
        "and callgrind's cycle estimate",
    )
    parser.add_argument(
        "--last-level",
        type=int,
        help="with --cache-sim: the simulated last-level cache's size in bytes (8-way, 64 B lines), e.g. the "
        "L2's (1048576 on the AMD EPYC machine), whose misses the L3 (valgrind's default last level) hides",
    )


def cache_sim_options(args: argparse.Namespace) -> list[str]:
    """callgrind's options for ``--cache-sim`` / ``--last-level`` (none without them)."""
    if not (args.cache_sim or args.last_level):
        return []
    options = ["--cache-sim=yes", "--branch-sim=yes"]
    if args.last_level:  # valgrind simulates two levels: the second sized as this CPU's L2, not its L3
        options.append(f"--LL={args.last_level},8,64")
    return options


def cache_per_handshake(prefix: Path, handshakes: int) -> dict[str, float]:
    """The misses and the cycle estimate per handshake, all threads (``<event>``) and the event loop's
    (``main_<event>``), from a ``--cache-sim`` run."""
    threads = _thread_events(prefix)
    main = threads.get(1, {"Ir": 0})
    every: dict[str, int] = {}
    for events in threads.values():
        for name, count in events.items():
            every[name] = every.get(name, 0) + count
    out = {name: every.get(name, 0) / handshakes for name in CACHE_EVENTS}
    out |= {f"main_{name}": main.get(name, 0) / handshakes for name in CACHE_EVENTS}
    out["cycles"] = estimated_cycles(every) / handshakes
    out["main_cycles"] = estimated_cycles(main) / handshakes
    return out


def _measure(
    variant: str, args: argparse.Namespace, receiver_port: int, upstream_port: int, tmp: Path
) -> dict[str, float]:
    name = variant.removesuffix("-baseline")
    config = tmp / f"gateway-{variant}.json"
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{upstream_port}/"], "compression": None}
    config.write_text(json.dumps({"apis": [api]}))
    env = overhead._quiet_env()
    extra = VARIANTS[name]
    if extra is not None:
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{receiver_port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "asgi-ws-gateway-bench", "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
            "OTEL_BSP_SCHEDULE_DELAY": "3600000", **extra,
        })  # fmt: skip
    src = Path(args.baseline_src) if variant.endswith("-baseline") else Path(args.src)
    env["PYTHONPATH"] = str(src)
    port = overhead._free_port()
    prefix = tmp / f"callgrind-{variant}"
    for stale in tmp.glob(prefix.name + ".*"):  # a kept directory's earlier run
        stale.unlink()
    if args.server == "run":  # the default path: the project's protocol class, the splice, the access log
        gateway_command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)]
    else:  # uvicorn's websockets-sansio and the relay, as telemetry_overhead.py runs it
        gateway_command = [
            sys.executable, str(Path(overhead.__file__).resolve()), "--role", "gateway", "--port", str(port),
            "--config", str(config),
        ]  # fmt: skip
    simulate = cache_sim_options(args)
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", *simulate,
        f"--callgrind-out-file={prefix}", *gateway_command,
    ]  # fmt: skip
    gateway = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        overhead._wait_listening(port, timeout=300)
        url = f"ws://{HOST}:{port}/ws/echo"
        asyncio.run(_handshakes(url, args.warmup))
        time.sleep(2)  # the warm-up's whole batches exported
        _control("--instr=on", str(gateway.pid))
        _control("--zero", str(gateway.pid))
        asyncio.run(_handshakes(url, args.handshakes))
        time.sleep(5)  # the last whole batch encoded and sent
        _control("--dump", str(gateway.pid))
    finally:
        stop(gateway)
    counts = per_handshake(prefix, args.handshakes)
    return counts | cache_per_handshake(prefix, args.handshakes) if simulate else counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=512, help="measured handshakes (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=512, help="handshakes before measuring (default: %(default)s)")
    parser.add_argument("--variants", default="on,metrics", help="compared with off (default: %(default)s)")
    parser.add_argument("--baseline-src", help="a source tree's src for the -baseline variants")
    parser.add_argument(
        "--src",
        default=str(overhead.ROOT / "src"),
        help="the src the other variants run (default: this checkout's; another tree's keeps an A/B clean of "
        "edits made meanwhile)",
    )
    parser.add_argument(
        "--server",
        choices=["uvicorn", "run"],
        default="uvicorn",
        help="uvicorn: the gateway under uvicorn's websockets-sansio, as telemetry_overhead.py; run: "
        "`asgi-ws-gateway run` defaults (the splice, the access log) (default: %(default)s)",
    )
    add_cache_sim_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", help="a directory to keep callgrind's files in (callgrind_annotate reads them)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    for count in (args.handshakes, args.warmup):
        if count * SPANS_PER_HANDSHAKE % BATCH:
            parser.error(f"--handshakes and --warmup must make whole batches: multiples of {BATCH}")
    variants = ["off", *args.variants.split(",")]
    unknown = [v for v in variants if v.removesuffix("-baseline") not in VARIANTS]
    if unknown or (any(v.endswith("-baseline") for v in variants) and not args.baseline_src):
        parser.error(
            f"unknown variants {unknown} (known: {', '.join(VARIANTS)}, each with -baseline and --baseline-src)"
        )
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory())
        Path(tmp).mkdir(parents=True, exist_ok=True)
        upstream_port, receiver_port = overhead.start_upstream_and_receiver(stack)
        results = {v: _measure(v, args, receiver_port, upstream_port, Path(tmp)) for v in variants}
    off = results["off"]
    report = {
        variant: {
            **counts,
            "main_vs_off": counts["main"] / off["main"] - 1,
            "total_vs_off": (counts["main"] + counts["other"]) / (off["main"] + off["other"]) - 1,
            "total_no_gc_vs_off": (counts["main"] + counts["other"] - counts["gc"])
            / (off["main"] + off["other"] - off["gc"])
            - 1,
        }
        for variant, counts in results.items()
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"instructions per handshake ({args.server}), {args.handshakes} handshakes after {args.warmup}")
    for variant, r in report.items():
        print(
            f"{variant:18} event loop {r['main'] / 1e3:8.0f} k ({r['main_vs_off']:+.1%})   other threads "
            f"{r['other'] / 1e3:6.0f} k   all {(r['main'] + r['other']) / 1e3:8.0f} k ({r['total_vs_off']:+.1%})"
            f"   of which GC {r['gc'] / 1e3:5.0f} k; all without GC ({r['total_no_gc_vs_off']:+.1%})"
        )
        if args.cache_sim or args.last_level:
            misses = ", ".join(f"{name} {r[name]:.0f} ({r['main_' + name]:.0f})" for name in CACHE_EVENTS)
            print(
                f"{'':18} per handshake, all threads (event loop): {misses}; estimated cycles "
                f"{r['cycles'] / 1e3:.0f} k ({r['cycles'] / off['cycles'] - 1:+.1%}; event loop "
                f"{r['main_cycles'] / 1e3:.0f} k, {r['main_cycles'] / off['main_cycles'] - 1:+.1%})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
