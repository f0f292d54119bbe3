"""What a ``gateway-run+policies`` handshake costs, counted in instructions: this tree against another.

``bench.compare --run-policies`` measures CPU time, which this 2-core machine's neighbours move by
±20 % between rounds (more while other benches run). This counts the instructions of the gateway's
event-loop thread instead, under valgrind's callgrind, as ``bench/telemetry_instructions.py`` does:
``asgi-ws-gateway run`` with the bench's policy set (``validate-jwt`` ES256, ``rate-limit-by-key``
on the Redis at 127.0.0.1:6379 under a fresh prefix, ``set-header``) and telemetry exported over
OTLP/gRPC to a discarding receiver, as the ``gateway-run+policies`` path runs it; ``--openers``
clients, each with its own token (the token cache hits after each one's first handshake, in the warmup), open,
echo 64 B and close, ``--warmup`` handshakes uninstrumented, then ``--handshakes`` counted.

Callgrind counts user-space instructions only: the kernel's side of a system call (the send to
Redis on loopback is a third of that call's CPU) is not in the figure, so it understates what
fewer or cheaper system calls save. Other threads (the span export) are shown apart.

    python -m bench.policies_instructions [--against main | --baseline-src DIR] [--bare] [--handshakes 400]
        [--no-telemetry] [--store redis|memory] [--cache-sim [--last-level BYTES]] [--batched-export]
        [--repeat N]

(``--bare``: this tree's ``gateway-run`` too, without policies or telemetry: the reference of
issue 13's ``gateway-run+policies`` <= 1.2 x ``gateway-run``. ``--no-telemetry``: the policy set
without telemetry, to count the policies' own cost apart from the spans'. ``--only validate-jwt,...``:
those of the set's policies only, to count what each adds; ``set-header`` and ``rate-limit-by-key``
read ``{jwt.sub}``, so keep ``validate-jwt`` with them. ``--store memory``: ``rate-limit-by-key`` on the
in-process store, to count what the Redis call adds. ``--cache-sim [--last-level 1048576]``: valgrind's
cache and branch simulation as ``bench.telemetry_instructions --cache-sim`` runs it, the second level
sized as the EPYC machine's 1 MiB L2: the misses per handshake and callgrind's cycle estimate, which
follow the CPU time where the instructions alone do not — the set touches more of the L2 than its
instructions say.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import telemetry_instructions as counted
from . import telemetry_overhead as overhead
from .apps import policy_set
from .credentials import PUBLIC_KEY_PEM, mint
from .paths import REDIS_URL

HOST = overhead.HOST
BARE = "gateway-run"
"""The name of the reference counted with ``--bare``: this tree's ``gateway-run`` (no policies, no telemetry)."""


async def _handshakes(url: str, count: int, tokens: list[str]) -> None:
    from websockets.asyncio.client import connect

    openers = len(tokens)

    async def opener(index: int, share: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        for _ in range(share):
            async with connect(url, additional_headers=headers, compression=None, proxy=None, open_timeout=120) as ws:
                await ws.send(overhead.PAYLOAD)
                await ws.recv()

    shares = [count // openers + (1 if i < count % openers else 0) for i in range(openers)]
    await asyncio.gather(*(opener(i, share) for i, share in enumerate(shares)))


def gateway_setup(
    name: str, src: Path, args: argparse.Namespace, receiver_port: int, upstream_port: int, tmp: Path
) -> tuple[Path, dict[str, str]]:
    """``asgi-ws-gateway run``'s configuration file and environment for ``name``: :data:`BARE`, or the
    policy set (``args.only``, ``args.store``; telemetry if ``args.telemetry``, ``args.batched_export``)."""
    api: dict[str, object] = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{upstream_port}/"]}
    document: dict[str, object] = {"apis": [api]}
    env = overhead._quiet_env() | {"PYTHONPATH": f"{src}:{overhead.ROOT}"}
    if name != BARE:  # gateway-run+policies; the bare one is gateway-run (no policies, no telemetry)
        policies = policy_set(PUBLIC_KEY_PEM)["policies"]
        if args.only:  # a part of the set, to count what each policy adds
            policies = [entry for entry in policies if next(iter(entry)) in args.only]
        api["policies"] = policies
        if args.store == "redis":
            document["store"] = {"type": "redis", "url": REDIS_URL, "prefix": f"bench-{uuid.uuid4().hex[:12]}"}
    if name != BARE and args.telemetry:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{receiver_port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "asgi-ws-gateway-bench", "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
        }  # fmt: skip
        if args.batched_export:  # only full batches leave, as at the bench's rates (see --batched-export)
            env["OTEL_BSP_SCHEDULE_DELAY"] = "3600000"
    config = tmp / f"gateway-{_file_name(name)}.json"
    config.write_text(json.dumps(document))
    return config, env


def _file_name(name: str) -> str:
    """``name`` (a tree's: ``--against origin/main``) as a file name's part."""
    return name.replace("/", "_")


def _measure(
    name: str, src: Path, args: argparse.Namespace, receiver_port: int, upstream_port: int, tmp: Path
) -> dict[str, float]:
    config, env = gateway_setup(name, src, args, receiver_port, upstream_port, tmp)
    port = overhead._free_port()
    prefix = tmp / f"callgrind-{_file_name(name)}"
    for stale in tmp.glob(prefix.name + ".*"):
        stale.unlink()
    simulate = counted.cache_sim_options(args)
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", *simulate,
        f"--callgrind-out-file={prefix}",
        sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(port),
    ]  # fmt: skip
    gateway = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        overhead._wait_listening(port, timeout=300)
        url = f"ws://{HOST}:{port}/ws/echo"
        # Each opener's token minted once, as gateway-run+policies' openers hold theirs (bench.loadgen
        # --bearer pool): its first verification is in the warmup, every counted handshake a cache hit.
        # (Minted again for the counted handshakes, the four misses were ~16 k of a handshake's count at 400.)
        tokens = [mint(f"opener-{index}") for index in range(args.openers)]
        asyncio.run(_handshakes(url, args.warmup, tokens))
        time.sleep(2)
        counted._control("--instr=on", str(gateway.pid))
        counted._control("--zero", str(gateway.pid))
        asyncio.run(_handshakes(url, args.handshakes, tokens))
        counted._control("--dump", str(gateway.pid))
    finally:
        counted.stop(gateway)
    counts = counted.per_handshake(prefix, args.handshakes)
    return counts | counted.cache_per_handshake(prefix, args.handshakes) if simulate else counts


def _last_level(counts: dict[str, float], thread: str = "") -> float:
    """The simulated last level's misses per handshake: instruction fetches, data reads and writes."""
    return sum(counts[thread + event] for event in ("ILmr", "DLmr", "DLmw"))


def _ratio(runs: list[dict[str, float]], reference: list[dict[str, float]], event: str) -> float:
    return statistics.median(r[event] for r in runs) / statistics.median(r[event] for r in reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--against", help="a git revision whose src/ is counted beside this tree's")
    other.add_argument("--baseline-src", help="a source tree's src/ counted beside this tree's")
    parser.add_argument("--handshakes", type=int, default=400, help="counted handshakes (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=200, help="handshakes before counting (default: %(default)s)")
    parser.add_argument("--openers", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--bare", action="store_true", help="also count this tree's gateway-run, the target's reference"
    )
    parser.add_argument(
        "--no-telemetry", dest="telemetry", action="store_false", help="count the policy set without telemetry"
    )
    parser.add_argument(
        "--only", type=lambda text: text.split(","), help="the set's policies to keep, e.g. validate-jwt,set-header"
    )
    parser.add_argument(
        "--store",
        choices=("redis", "memory"),
        default="redis",
        help="rate-limit-by-key's store: the Redis at 127.0.0.1:6379 (the path's) or the in-process one, "
        "to count what the Redis call adds (default: %(default)s)",
    )
    parser.add_argument(
        "--batched-export",
        action="store_true",
        help="spans exported in full batches only (OTEL_BSP_SCHEDULE_DELAY an hour): under valgrind the gateway's "
        "1 s schedule sends a small batch every second, several times the exports per span of the bench's "
        "hundreds of handshakes a second (use --handshakes and --warmup that make whole batches of 512 spans: "
        "4 spans a handshake, e.g. 512 after 256)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="counts of each tree, alternated (default: 1)")
    counted.add_cache_sim_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", help="a directory to keep callgrind's files in (callgrind_annotate reads them)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    with contextlib.ExitStack() as stack:
        tmp = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory()))
        tmp.mkdir(parents=True, exist_ok=True)
        trees = {"this": overhead.ROOT / "src"}
        if args.against:
            from .compare import export_src

            trees[args.against] = export_src(args.against, tmp)
        elif args.baseline_src:
            trees["baseline"] = Path(args.baseline_src)
        if args.bare:
            trees[BARE] = overhead.ROOT / "src"
        upstream_port, receiver_port = overhead.start_upstream_and_receiver(stack)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for round_ in range(args.repeat):
            for name in list(trees) if round_ % 2 == 0 else list(trees)[::-1]:
                results[name].append(_measure(name, trees[name], args, receiver_port, upstream_port, tmp))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"instructions per gateway-run+policies handshake, {args.handshakes} after {args.warmup}, "
          f"{args.openers} openers, telemetry {'on' if args.telemetry else 'off'}")  # fmt: skip
    first = next(iter(results))
    for name, runs in results.items():
        line = "   ".join(f"event loop {r['main'] / 1e3:8.0f} k  other threads {r['other'] / 1e3:6.0f} k" for r in runs)
        ratio = min(r["main"] for r in runs) / min(r["main"] for r in results[first])
        print(f"{name:12} {line}   (event loop {ratio:.3f}x of {first})")
        if args.cache_sim or args.last_level:
            for r in runs:
                misses = ", ".join(f"{e} {r[e]:.0f} ({r['main_' + e]:.0f})" for e in counted.CACHE_EVENTS)
                print(f"{'':12} per handshake, all threads (event loop): {misses}; last-level misses "
                      f"{_last_level(r):.0f} ({_last_level(r, 'main_'):.0f}); estimated cycles "
                      f"{r['cycles'] / 1e3:.0f} k ({r['main_cycles'] / 1e3:.0f} k)")  # fmt: skip
            print(f"{'':12} medians against {first}: estimated cycles {_ratio(runs, results[first], 'cycles'):.3f}x "
                  f"(event loop {_ratio(runs, results[first], 'main_cycles'):.3f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
