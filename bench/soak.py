"""Scale and soak: many held connections across several gateway processes sharing Redis, then hours of churn.

``python -m bench.soak`` (30 minutes) or ``python -m bench.soak --quick`` (1 minute):

1. **scale**: opens ``--connections`` proxied connections spread over ``--gateways`` processes
   (each a :mod:`bench.soak_gateway`, the standalone gateway with a Redis-backed concurrency cap
   so every handshake takes and holds a lease) and reports memory per connection from the growth
   of the gateways' RSS;
2. **soak**: keeps them open while sending steady echo traffic on them and churning other
   connections (open, echo, close with 1000), sampling each gateway's RSS, open fds and asyncio
   tasks, the Redis key count and the leases held in Redis every ``--interval`` seconds. After
   the warm-up (the first 20%) every series must be flat: the report gives each one's
   least-squares slope per minute and its drift over the window, and counts unexpected close
   codes (anything but the client's own 1000).

Results go to ``--out`` (JSON) and a Markdown table on stdout. The soft fd limit is raised to the
hard limit (20,000 here); each proxied connection costs a gateway two descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as redis
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .procs import HOST, Service, free_port
from .system import raise_fd_limit

WARMUP = 0.2
"""Fraction of the soak excluded from the slopes (pools, caches and the allocator settle)."""


@dataclass
class Sample:
    t: float
    rss: list[int]
    fds: list[int]
    tasks: list[int]
    redis_keys: int
    leases: int


@dataclass
class Outcome:
    connections: int = 0
    kib_per_connection: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    echoes: int = 0
    churned: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)
    unexpected: int = 0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def flatness(samples: list[Sample]) -> dict[str, dict[str, float | bool]]:
    """Per series (summed over gateways): slope per minute, drift over the window, and whether it is flat.

    Flat: the fitted drift over the measured window is under 5% of the series' mean plus a small
    absolute allowance (churn keeps a few connections, fds and tasks in flight at any instant).
    """
    if not samples:
        return {}
    start = samples[0].t + WARMUP * (samples[-1].t - samples[0].t)
    kept = [s for s in samples if s.t >= start]
    window = (kept[-1].t - kept[0].t) if len(kept) > 1 else 0.0
    series = {
        "rss_mib": [(s.t, sum(s.rss) / 2**20) for s in kept],
        "fds": [(s.t, float(sum(s.fds))) for s in kept],
        "tasks": [(s.t, float(sum(s.tasks))) for s in kept],
        "redis_keys": [(s.t, float(s.redis_keys)) for s in kept],
        "redis_leases": [(s.t, float(s.leases)) for s in kept],
    }
    allowance = {"rss_mib": 2.0, "fds": 20.0, "tasks": 30.0, "redis_keys": 2.0, "redis_leases": 10.0}
    report: dict[str, dict[str, float | bool]] = {}
    for name, points in series.items():
        per_second = slope(points)
        mean = sum(y for _, y in points) / len(points)
        drift = per_second * window
        report[name] = {
            "mean": mean,
            "slope_per_min": per_second * 60,
            "drift": drift,
            "flat": abs(drift) <= 0.05 * abs(mean) + allowance[name],
        }
    return report


def _config(upstream: int, redis_url: str, prefix: str) -> dict[str, Any]:
    cap = {"limit-concurrency": {"key": "everyone", "max": 1_000_000, "on_store_error": "closed"}}
    return {
        "store": {"type": "redis", "url": redis_url, "prefix": prefix},
        "apis": [{"name": "echo", "path": "/echo", "upstreams": [f"ws://{HOST}:{upstream}/echo"], "policies": [cap]}],
    }


async def _open(port: int) -> ClientConnection:
    return await connect(f"ws://{HOST}:{port}/echo", compression=None, ping_interval=None, open_timeout=30)


async def _hold(ports: list[int], count: int, batch: int = 200) -> list[ClientConnection]:
    held: list[ClientConnection] = []
    while len(held) < count:
        n = min(batch, count - len(held))
        held += await asyncio.gather(*(_open(ports[(len(held) + i) % len(ports)]) for i in range(n)))
    return held


async def _traffic(held: list[ClientConnection], outcome: Outcome, rate: float) -> None:
    while True:
        ws = random.choice(held)
        try:
            await ws.send("soak")
            await ws.recv()
            outcome.echoes += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            outcome.close_codes[code] += 1
            outcome.unexpected += 1  # nobody was meant to close a held connection
            held.remove(ws)
        await asyncio.sleep(1 / rate)


async def _churn(ports: list[int], outcome: Outcome, rate: float) -> None:
    while True:
        try:
            ws = await _open(random.choice(ports))
            await ws.send("churn")
            await ws.recv()
            await ws.close(1000)
            code = ws.close_code if ws.close_code is not None else 1006
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", None) or 1006
        outcome.close_codes[code] += 1
        outcome.unexpected += code != 1000
        outcome.churned += 1
        await asyncio.sleep(1 / rate)


def _tasks(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text())
    return -1


async def _sample(gateways: list[Service], stats: list[Path], client: redis.Redis, prefix: str, t0: float) -> Sample:
    fds = []
    for gateway in gateways:
        try:
            fds.append(psutil.Process(gateway.pid).num_fds())
        except psutil.NoSuchProcess:
            fds.append(-1)
    keys = leases = 0
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        keys += 1
        if b":conc:" in key:
            leases += int(await client.zcard(key))
    return Sample(
        t=time.monotonic() - t0,
        rss=[g.rss_bytes() for g in gateways],
        fds=fds,
        tasks=[_tasks(p) for p in stats],
        redis_keys=keys,
        leases=leases,
    )


async def run(args: argparse.Namespace, workdir: Path, redis_url: str) -> Outcome:
    outcome = Outcome()
    prefix = f"soak-{int(time.time())}"
    upstream_port = free_port()
    upstream = Service(
        "upstream",
        [sys.executable, "-m", "bench.upstream_server", "--port", str(upstream_port)],
        port=upstream_port,
        log=workdir / "upstream.log",
    ).start()
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(_config(upstream_port, redis_url, prefix)))
    gateways: list[Service] = []
    stats = [workdir / f"tasks-{i}.txt" for i in range(args.gateways)]
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(args.gateways):
            port = free_port()
            argv = [sys.executable, "-m", "bench.soak_gateway", "--config", str(config), "--port", str(port)]
            gateways.append(
                Service(f"gateway-{i}", [*argv, "--stats", str(stats[i])], port=port, log=workdir / f"gw{i}.log")
            )
            gateways[-1].start()
        ports = [g.port for g in gateways]
        warm = await _hold(ports, 10 * len(ports))  # imports, pools and caches, before the baseline
        for ws in warm:
            await ws.close()
        await asyncio.sleep(1)
        baseline = sum(g.rss_bytes() for g in gateways)
        held = await _hold(ports, args.connections)
        await asyncio.sleep(2)
        outcome.connections = len(held)
        outcome.kib_per_connection = (sum(g.rss_bytes() for g in gateways) - baseline) / 1024 / len(held)
        print(f"scale: {len(held)} connections over {len(ports)} gateways, {outcome.kib_per_connection:.1f} KiB each")

        t0 = time.monotonic()
        workers = [
            asyncio.create_task(_traffic(held, outcome, args.rate)),
            asyncio.create_task(_churn(ports, outcome, args.churn)),
        ]
        try:
            while time.monotonic() - t0 < args.duration:
                outcome.samples.append(await _sample(gateways, stats, client, prefix, t0))
                await asyncio.sleep(args.interval)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        outcome.unexpected += sum(not g.alive() for g in gateways)
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    finally:
        for gateway in gateways:
            gateway.stop()
        upstream.stop()
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        await client.aclose()
    return outcome


def _report(outcome: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    flat = flatness(outcome.samples)
    lines = [
        f"Soak: {args.gateways} gateways, {outcome.connections} held connections "
        f"({outcome.kib_per_connection:.1f} KiB each), {args.duration:.0f} s, "
        f"{outcome.echoes} echoes, {outcome.churned} churned connections, "
        f"close codes {dict(outcome.close_codes)}, unexpected {outcome.unexpected}",
        "",
        "| series (sum over gateways) | mean | slope / min | drift over window | flat |",
        "|---|---|---|---|---|",
    ]
    for name, row in flat.items():
        lines.append(
            f"| {name} | {row['mean']:.1f} | {row['slope_per_min']:+.3f} | {row['drift']:+.2f} | "
            f"{'yes' if row['flat'] else 'NO'} |"
        )
    print("\n".join(lines))
    return {
        "settings": vars(args),
        "connections": outcome.connections,
        "kib_per_connection": outcome.kib_per_connection,
        "echoes": outcome.echoes,
        "churned": outcome.churned,
        "close_codes": dict(outcome.close_codes),
        "unexpected": outcome.unexpected,
        "flatness": flat,
        "samples": [asdict(s) for s in outcome.samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 minute, 600 connections, samples every 2 s")
    parser.add_argument("--gateways", type=int, default=3, help="gateway processes (default: %(default)s)")
    parser.add_argument("--connections", type=int, help="held connections (default: 15,000; --quick: 600)")
    parser.add_argument("--duration", type=float, help="soak seconds (default: 1800; --quick: 60)")
    parser.add_argument("--interval", type=float, help="seconds between samples (default: 10; --quick: 2)")
    parser.add_argument("--rate", type=float, default=200, help="echoes/s on held connections (default: %(default)s)")
    parser.add_argument("--churn", type=float, default=20, help="connections opened and closed per second")
    parser.add_argument("--redis", metavar="URL", help="Redis to share (default: a private redis-server)")
    parser.add_argument("--out", type=Path, default=Path("reports/soak.json"))
    args = parser.parse_args(argv)
    args.connections = args.connections or (600 if args.quick else 15_000)
    args.duration = args.duration or (60.0 if args.quick else 1800.0)
    args.interval = args.interval or (2.0 if args.quick else 10.0)
    limit = raise_fd_limit()
    if args.connections + 1000 > limit:
        parser.error(f"--connections {args.connections} needs more open files than the limit {limit} allows")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        redis_server = None
        redis_url = args.redis
        if redis_url is None:
            binary = shutil.which("redis-server")
            if binary is None:
                parser.error("redis-server is not installed: pass --redis URL")
            port = free_port()
            redis_server = subprocess.Popen(
                [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            redis_url = f"redis://{HOST}:{port}/0"
        try:
            outcome = asyncio.run(run(args, workdir, redis_url))
        finally:
            if redis_server is not None:
                redis_server.kill()
                redis_server.wait(5)
    result = _report(outcome, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    flat = all(row["flat"] for row in result["flatness"].values())
    return 0 if flat and outcome.unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Outcome", "Sample", "flatness", "main", "slope"]
