"""One measurement of one path: run the generator, read every process's CPU around its window.

The generator prints ``start`` when its window opens and ``result`` when it closes; the bench reads
the proxy's and the upstream's CPU time (from ``/proc``, whole process trees) at those two moments,
so warm-up and teardown are not charged. The generator reports its own CPU time for the window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import psutil

from .procs import Service
from .stats import percentile
from .system import LOAD_CPUS, pinned

Mode = Literal["echo", "latency", "handshake", "idle"]
Metrics = dict[str, float | None]

SATURATED = 0.9
"""CPU utilisation (of one core) from which a process counts as saturated."""


@dataclass(frozen=True)
class Scenario:
    """A load shape (described for readers in :data:`bench.aggregate.DESCRIPTIONS`).

    ``conns`` is connections (echo, latency), concurrent openers (handshake, idle);
    ``window`` scales the run's measurement window (latency needs less than throughput).
    """

    name: str
    mode: Mode
    conns: int = 50
    size: int = 64
    window: float = 1.0


ECHO_64 = Scenario("echo-64B", "echo", 50, 64)
ECHO_16K = Scenario("echo-16KiB", "echo", 50, 16 * 1024)
LATENCY = Scenario("latency", "latency", 1, 64, window=0.5)
HANDSHAKE = Scenario("handshake", "handshake", 16)
IDLE = Scenario("idle", "idle", 64)
SCALING = Scenario("scaling", "echo", 50, 64)


@dataclass(frozen=True)
class Timing:
    warmup: float
    duration: float
    idle_levels: tuple[int, ...]
    idle_warm: int
    idle_budget: float
    settle: float = 1.0
    """Seconds to wait after an idle level is open before reading RSS."""


class Generator:
    """The load generator as a child process speaking the JSON-lines protocol of :mod:`bench.loadgen`."""

    def __init__(self, args: list[str], *, cpus: str = LOAD_CPUS, stdin: bool = False) -> None:
        argv = pinned(cpus, [sys.executable, "-m", "bench.loadgen", *args])
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True
        )

    def events(self, timeout: float) -> Iterator[dict[str, Any]]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            if time.monotonic() > deadline:
                break
            if line.strip():
                yield json.loads(line)

    def tell(self, line: str = "next") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60.0) -> None:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError("load generator did not finish in time") from None
        finally:
            for pipe in (self.process.stdout, self.process.stdin):
                if pipe is not None:
                    pipe.close()
        if code != 0:
            raise RuntimeError(f"load generator exited with {code}")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (user, system, interrupts, stolen) since boot."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))  # fmt: skip


def _header_args(headers: Mapping[str, str]) -> list[str]:
    return [arg for name, value in headers.items() for arg in ("--header", f"{name}:{value}")]


def measure(
    scenario: Scenario,
    url: str,
    timing: Timing,
    *,
    proxy: Service | None,
    upstream: Service,
    headers: Mapping[str, str] | None = None,
    bearer: str | None = None,
    load_cpus: str = LOAD_CPUS,
    payload: str = "bytes",
) -> tuple[Metrics, list[str]]:
    """Run ``scenario`` against ``url`` once; return its metrics and any saturation warnings.

    ``bearer`` (handshake only): the generator's own tokens, ``"pool"`` or ``"fresh"`` (``bench.loadgen --bearer``).
    """
    args = [scenario.mode, "--url", url, "--conns", str(scenario.conns), "--size", str(scenario.size),
            "--warmup", str(timing.warmup), "--duration", str(timing.duration * scenario.window), "--payload", payload,
            *_header_args(headers or {})]  # fmt: skip
    if bearer is not None and scenario.mode == "handshake":
        args += ["--bearer", bearer]
    generator = Generator(args, cpus=load_cpus)
    before: tuple[float, float, float] | None = None
    result: dict[str, Any] | None = None
    for event in generator.events(timeout=timing.warmup + timing.duration * scenario.window + 120):
        if event["event"] == "start":
            before = (proxy.cpu_seconds() if proxy else 0.0, upstream.cpu_seconds(), machine_busy_seconds())
        elif event["event"] == "result":
            after = (proxy.cpu_seconds() if proxy else 0.0, upstream.cpu_seconds(), machine_busy_seconds())
            result = event
            break
    generator.finish()
    if before is None or result is None:
        raise RuntimeError(f"{scenario.name}: the load generator reported no result")
    wall = result["wall"]
    count = result["handshakes" if scenario.mode == "handshake" else "messages"]
    warnings: list[str] = []
    proxy_cpu: float | None = None
    if proxy is not None:
        proxy_cpu = after[0] - before[0]
        if problem := unmeasured_proxy(proxy, proxy_cpu, count):
            warnings.append(problem)
            proxy_cpu = None
    utilisation = {"generator": result["cpu"] / wall, "upstream": (after[1] - before[1]) / wall}
    load = utilisation["generator"] + utilisation["upstream"]
    measured = None if proxy is not None and proxy_cpu is None else load + (proxy_cpu or 0.0) / wall
    metrics: Metrics = {
        "proxy_cpu_util": None if proxy_cpu is None else proxy_cpu / wall,
        "upstream_cpu_util": utilisation["upstream"],
        "generator_cpu_util": utilisation["generator"],
        # cores the load side (generator + upstream) kept busy: what the proxy could not use
        "load_cores": load,
        # cores everything else on the machine kept busy meanwhile (other people's jobs, the bench itself);
        # unknown when the proxy's share of them is
        "other_cores": None if measured is None else max(0.0, (after[2] - before[2]) / wall - measured),
        "errors": float(result["errors"]),
    }
    if scenario.mode == "handshake":
        times = sorted(result["connect_ns"])
        metrics |= {
            "handshakes_per_s": count / wall,
            "proxy_cpu_ms_per_handshake": proxy_cpu * 1e3 / count if proxy_cpu is not None and count else None,
            "connect_p50_ms": _scaled(percentile(times, 0.50), 1e-6),
            "connect_p99_ms": _scaled(percentile(times, 0.99), 1e-6),
        }
    else:
        metrics |= {
            "messages_per_s": count / wall,
            "mb_per_s": count * scenario.size / wall / 1e6,
            "proxy_cpu_us_per_message": proxy_cpu * 1e6 / count if proxy_cpu is not None and count else None,
        }
        if scenario.mode == "latency":
            rtts = sorted(result["rtt_ns"] or [])
            metrics |= {"rtt_p50_us": _scaled(percentile(rtts, 0.50), 1e-3),
                        "rtt_p99_us": _scaled(percentile(rtts, 0.99), 1e-3)}  # fmt: skip
    warnings += saturation_warnings(utilisation, load_cpus, metrics["proxy_cpu_util"] or 0.0,
                                    other=metrics["other_cores"] or 0.0)  # fmt: skip
    return metrics, warnings


def unmeasured_proxy(proxy: Service, cpu: float, count: int) -> str | None:
    """Why ``cpu``, the CPU seconds read for ``proxy`` over a window in which the generator counted
    ``count`` messages or handshakes through it, is no measurement (a warning: its CPU figures are then
    None, never a 0.0 a reader would take for a proxy that costs nothing), or None if it is one."""
    if not proxy.alive():
        return f"proxy CPU not measured: {proxy.name} exited in the window"
    if count and cpu <= 0:
        return (f"proxy CPU not measured: {cpu:.6f} s read for {proxy.name} over a window of {count} "
                "through it (a clock too coarse, or not the processes that relayed them)")  # fmt: skip
    return None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def saturation_warnings(
    utilisation: Mapping[str, float], load_cpus: str, proxy: float = 0.0, *, other: float = 0.0
) -> list[str]:
    """Say when the generator and the upstream (which share the load CPUs) were the bottleneck.

    With more than one load CPU (the scaling scenario, where nothing is pinned) the proxy shares
    them too, and the warning is about the whole machine being busy, other work on it included.
    """
    cores = len(load_cpus.split(","))
    if cores > 1:
        if utilisation["generator"] + utilisation["upstream"] + proxy + other >= SATURATED * cores:
            return [f"every core busy ({other:.2f} of them other work): throughput is a lower bound"]
    elif utilisation["generator"] + utilisation["upstream"] >= SATURATED:
        return ["load side (generator + upstream) saturated its core: throughput is a lower bound"]
    return [f"{name} saturated its core" for name, value in utilisation.items() if value >= SATURATED]


def measure_idle(
    url: str, timing: Timing, *, proxy: Service, headers: Mapping[str, str] | None = None, payload: str = "bytes"
) -> tuple[Metrics, list[str]]:
    """Open ``idle_warm`` connections (the baseline), then each level in turn; RSS per connection."""
    levels = (timing.idle_warm, *timing.idle_levels)
    args = ["idle", "--url", url, "--conns", str(IDLE.conns), "--levels", ",".join(map(str, levels)),
            "--budget", str(timing.idle_budget), "--payload", payload, *_header_args(headers or {})]  # fmt: skip
    generator = Generator(args, stdin=True)
    metrics: Metrics = {}
    warnings: list[str] = []
    base: tuple[int, int] | None = None
    for event in generator.events(timeout=timing.idle_budget * len(levels) + 120):
        if event["event"] == "ready":
            time.sleep(timing.settle)
            rss, open_now, level = proxy.rss_bytes(), event["open"], event["level"]
            if base is None:
                base = (rss, open_now)
                metrics["baseline_rss_mib"] = rss / 2**20
            else:
                added = open_now - base[1]
                metrics[f"kib_per_conn@{level}"] = (rss - base[0]) / 1024 / added if added > 0 else None
                metrics[f"open@{level}"] = float(open_now)
                metrics[f"errors@{level}"] = float(event["errors"])
                metrics[f"open_seconds@{level}"] = event["seconds"]
                if open_now < level:
                    warnings.append(f"only {open_now} of {level} connections open ({event['errors']} errors)")
            generator.tell()
        elif event["event"] == "result":
            break
    generator.finish(timeout=120)
    return metrics, warnings


__all__ = [
    "ECHO_16K",
    "ECHO_64",
    "HANDSHAKE",
    "IDLE",
    "LATENCY",
    "SCALING",
    "Generator",
    "Metrics",
    "Scenario",
    "Timing",
    "measure",
    "measure_idle",
    "saturation_warnings",
    "unmeasured_proxy",
]
