"""What a ``gateway-run+policies`` handshake costs in CPU time, user and system apart, and in system calls.

``bench.policies_instructions`` counts user-space instructions: the kernel's side of a system call (the
Redis call's send and receive) is not in its figures. This runs the same two gateways without valgrind,
``gateway-run`` and ``gateway-run+policies`` (the set on Redis, telemetry exported to a discarding
receiver), each pinned to CPU 0 as ``python -m bench`` pins the proxy, this process (the ``--openers``
clients, each with its own token) on CPU 1; in alternated rounds of ``--handshakes`` handshakes it reads
each gateway's user and system CPU time from /proc (all threads, and the event loop's apart) and reports
per-handshake medians. ``--strace``: one more round of each under ``strace -c -f``, its system calls per
handshake (strace slows the gateway: counts, not times). The machine's neighbours move CPU time by ±10-20 %
between rounds: quote medians of several runs, and the instruction counts beside them.

    python -m bench.policies_cpu [--rounds 5] [--handshakes 2000] [--openers 4] [--store redis|memory] [--strace]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import policies_instructions as counted
from . import telemetry_overhead as overhead
from .credentials import mint
from .system import LOAD_CPUS, PROXY_CPUS, pin_self, pinned
from .telemetry_instructions import stop

POLICIES = "gateway-run+policies"
WARMUP = 300
"""Handshakes before the first round (each opener's token verified once, the caches filled)."""


def _cpu(pid: int) -> tuple[float, float, float, float]:
    """User and system seconds of process ``pid`` (all threads), then of its main thread (the event loop)."""
    tick = os.sysconf("SC_CLK_TCK")
    every = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    loop = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(every[11]) / tick, int(every[12]) / tick, int(loop[11]) / tick, int(loop[12]) / tick


def _round(pid: int, url: str, args: argparse.Namespace, tokens: list[str]) -> dict[str, float]:
    """µs per handshake of one round: ``user``, ``system`` (all threads), ``loop_user``, ``loop_system``."""
    before = _cpu(pid)
    asyncio.run(counted._handshakes(url, args.handshakes, tokens))
    after = _cpu(pid)
    spent = [(b - a) * 1e6 / args.handshakes for a, b in zip(before, after, strict=True)]
    return dict(zip(("user", "system", "loop_user", "loop_system"), spent, strict=True))


def _syscalls(pid: int, url: str, args: argparse.Namespace, tokens: list[str], out: Path) -> dict[str, float]:
    """System calls per handshake by name, all threads, from ``strace -c -f`` around one round."""
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached to every thread
    asyncio.run(counted._handshakes(url, args.handshakes, tokens))
    tracer.terminate()  # strace writes its summary on SIGTERM
    tracer.wait(30)
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        # % time, seconds, usecs/call, calls, [errors,] syscall
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)$", line)
        if match and match[2] != "total":
            calls[match[2]] = int(match[1]) / args.handshakes
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each gateway, alternated (default: 5)")
    parser.add_argument("--handshakes", type=int, default=2000, help="handshakes a round (default: %(default)s)")
    parser.add_argument("--openers", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--store", choices=("redis", "memory"), default="redis", help="rate-limit-by-key's store")
    parser.add_argument("--strace", action="store_true", help="also count system calls per handshake (strace -c)")
    args = parser.parse_args()
    if args.strace and shutil.which("strace") is None:
        parser.error("strace is not installed (Debian: apt-get install strace)")
    # What policies_instructions.gateway_setup reads: the whole set, telemetry on, its usual export schedule.
    args.only, args.telemetry, args.batched_export = None, True, False
    pin_self(LOAD_CPUS)
    rounds: dict[str, list[dict[str, float]]] = {counted.BARE: [], POLICIES: []}
    calls: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        upstream_port, receiver_port = overhead.start_upstream_and_receiver(stack)
        gateways: dict[str, tuple[int, str]] = {}
        for name in rounds:
            config, env = counted.gateway_setup(name, overhead.ROOT / "src", args, receiver_port, upstream_port, tmp)
            port = overhead._free_port()
            run = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)]
            process = subprocess.Popen(
                pinned(PROXY_CPUS, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            stack.callback(stop, process)
            overhead._wait_listening(port, timeout=60)
            gateways[name] = (process.pid, f"ws://{counted.HOST}:{port}/ws/echo")
        tokens = [mint(f"opener-{index}") for index in range(args.openers)]
        for _, url in gateways.values():
            asyncio.run(counted._handshakes(url, WARMUP, tokens))
        for number in range(args.rounds):
            for name in list(rounds) if number % 2 == 0 else list(rounds)[::-1]:
                rounds[name].append(_round(*gateways[name], args, tokens))
        if args.strace:
            for name, (pid, url) in gateways.items():
                calls[name] = _syscalls(pid, url, args, tokens, tmp / f"strace-{len(calls)}")
    print(f"CPU µs per handshake, medians of {args.rounds} rounds of {args.handshakes} ({args.openers} openers)")
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in rounds.items()}
    for name, m in medians.items():
        print(f"{name:22} user {m['user']:7.1f}  system {m['system']:6.1f}  all {m['user'] + m['system']:7.1f}"
              f"   (event loop: user {m['loop_user']:7.1f}  system {m['loop_system']:6.1f})")  # fmt: skip
    bare, policies = medians[counted.BARE], medians[POLICIES]
    ratios = [
        (p["user"] + p["system"]) / (b["user"] + b["system"])
        for b, p in zip(rounds[counted.BARE], rounds[POLICIES], strict=True)
    ]
    whole = (policies["user"] + policies["system"]) / (bare["user"] + bare["system"])
    print(f"{POLICIES} / {counted.BARE}: all {whole:.3f}"
          f" (per-round median {statistics.median(ratios):.3f}), user {policies['user'] / bare['user']:.3f},"
          f" system {policies['system'] / bare['system']:.3f}")  # fmt: skip
    if calls:
        names = sorted(set(calls[counted.BARE]) | set(calls[POLICIES]), key=lambda n: -calls[POLICIES].get(n, 0))
        print("system calls per handshake (all threads):")
        for call in names:
            b, p = calls[counted.BARE].get(call, 0.0), calls[POLICIES].get(call, 0.0)
            print(f"  {call:18} {b:7.2f} {p:7.2f}  ({p - b:+.2f})")
        print(f"  {'all':18} {sum(calls[counted.BARE].values()):7.2f} {sum(calls[POLICIES].values()):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
