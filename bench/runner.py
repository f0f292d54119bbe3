"""One bench run: start the upstream and every proxy, measure round by round, write the results.

Rounds interleave the paths (each round visits every scenario on every path, in an order rotated
per round), so slow drift in machine noise lands on all paths alike. Idle-memory ramps and the
scaling scenario need fresh proxy processes and run after the interleaved rounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import aggregate
from .paths import PathSpec, StartContext, url, uvicorn_path
from .procs import Service, free_port, taken
from .scenarios import ECHO_16K, ECHO_64, HANDSHAKE, LATENCY, SCALING, Metrics, Scenario, Timing, measure, measure_idle
from .system import ALL_CPUS, LOAD_CPUS, PROXY_CPUS, machine_info, pin_self, pinned, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
ROUND_SCENARIOS: tuple[Scenario, ...] = (ECHO_64, ECHO_16K, LATENCY, HANDSHAKE)
_T = TypeVar("_T")
Samples = dict[str, dict[str, list[dict[str, Any]]]]
"""scenario name -> path name -> one sample per round: ``{"metrics": {...}, "warnings": [...]}``."""


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int
    idle_rounds: int
    timing: Timing
    scenarios: tuple[str, ...]
    idle_on_round_proxies: bool = False
    """The idle ramps measure the proxies the rounds started (still running) rather than fresh ones: for the
    test suite's smoke run, whose figures nobody reads (a proxy's start was most of its CPU)."""


SCENARIOS = ("echo-64B", "echo-16KiB", "latency", "handshake", "idle", "scaling")
SCALING_PATH = "gateway-run"
"""The path the scaling scenario measures: the default, ``asgi-ws-gateway run --workers N``."""
SCALING_WORKERS = (1, 2)
QUICK = Settings("quick", rounds=1, idle_rounds=1, timing=Timing(0.05, 0.15, (50,), 10, 30.0, 0.05),
                 scenarios=SCENARIOS)  # fmt: skip
"""A smoke run: every scenario once, 0.15 s of load each, 50 idle connections (what it costs is mostly
starting the processes; the test suite runs it)."""
SMOKE = dataclasses.replace(QUICK, timing=Timing(0.02, 0.06, (20,), 5, 30.0, 0.01), idle_on_round_proxies=True)
"""The test suite's smoke run (``--quick --smoke``): every path and scenario as in :data:`QUICK`, with
windows of 0.06 s after 0.02 s of warm-up and 20 idle connections, its figures read by nobody (it also
measures :data:`SMOKE_PARALLEL` paths at once, and ramps the idle connections on the proxies the rounds
started)."""
SMOKE_PARALLEL = 3
FULL = Settings("full", rounds=3, idle_rounds=2, timing=Timing(1.0, 4.0, (1000, 5000, 9000), 100, 150.0),
                scenarios=SCENARIOS)  # fmt: skip
"""The real run: 3 interleaved rounds of 4 s windows (2 s for latency), 2 idle ramps to 1,000 / 5,000 (9,000 for
the paths whose :attr:`~bench.paths.PathSpec.idle_max` allows it; fewer ramps for those that say so)."""

SPAWN_SECONDS = 0.4
"""What one measurement costs beyond its warm-up and window here: the generator's start and exit."""
START_SECONDS = 2.0
"""Starting and stopping one proxy."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare_environment() -> None:
    """Children import ``bench`` from this checkout and ``asgi_ws_gateway`` from its ``src``."""
    parts = [str(ROOT / "src"), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    raise_fd_limit()
    pin_self(LOAD_CPUS)


@contextlib.contextmanager
def upstream_server(run_dir: Path) -> Iterator[Service]:
    port = free_port()
    argv = pinned(LOAD_CPUS, [sys.executable, "-m", "bench.upstream_server", "--port", str(port)])
    with Service("upstream", argv, port=port, log=run_dir / "upstream.log").start() as service:
        yield service


def _sample(metrics: Metrics, warnings: list[str]) -> dict[str, Any]:
    return {"metrics": metrics, "warnings": warnings}


def _rotated(items: Sequence[PathSpec], shift: int) -> list[PathSpec]:
    shift %= max(1, len(items))
    return [*items[shift:], *items[:shift]]


def _runs(spec: PathSpec, scenario: str) -> bool:
    return spec.scenarios is None or scenario in spec.scenarios


def _idle_plan(spec: PathSpec, settings: Settings) -> tuple[int, tuple[int, ...]]:
    """How many idle ramps ``spec`` gets, and to which levels."""
    rounds = min(settings.idle_rounds, spec.idle_rounds or settings.idle_rounds)
    levels = tuple(n for n in settings.timing.idle_levels if spec.idle_max is None or n <= spec.idle_max)
    return rounds, levels


def _idle_due(spec: PathSpec, settings: Settings, round_no: int) -> bool:
    """Whether ``spec`` gets an idle ramp in round ``round_no`` (counted from 0)."""
    rounds, levels = _idle_plan(spec, settings)
    return round_no < rounds and bool(levels)


def estimate_seconds(paths: Sequence[PathSpec], settings: Settings) -> float:
    """Roughly how long :func:`run` takes on this machine (the printed estimate; nothing waits on it)."""
    timing = settings.timing
    total = 0.0
    for scenario in (s for s in ROUND_SCENARIOS if s.name in settings.scenarios):
        per = timing.warmup + timing.duration * scenario.window + SPAWN_SECONDS
        total += settings.rounds * per * sum(_runs(p, scenario.name) for p in paths)
    total += START_SECONDS * sum(p.start is not None for p in paths)
    if "idle" in settings.scenarios:
        for spec in (p for p in paths if p.start is not None):
            rounds, levels = _idle_plan(spec, settings)
            ramp = sum(min(timing.idle_budget, n / spec.open_rate) for n in (timing.idle_warm, *levels))
            total += rounds * (START_SECONDS + ramp + timing.settle * (len(levels) + 1) + SPAWN_SECONDS)
    if "scaling" in settings.scenarios and any(p.name == SCALING_PATH for p in paths):
        per = timing.warmup + timing.duration + SPAWN_SECONDS + START_SECONDS
        total += settings.rounds * sum(per + 0.5 * n for n in SCALING_WORKERS)
    return total


def _ensure(proxies: dict[str, Service], spec: PathSpec, ctx: StartContext) -> Service | None:
    """The path's running proxy, restarted if it died since the last measurement."""
    if spec.start is None:
        return None
    service = proxies.get(spec.name)
    if service is None or not service.alive():
        if service is not None:
            log(f"{spec.name} died; restarting it")
        service = proxies[spec.name] = _start(spec, ctx)
    return service


def _start(spec: PathSpec, ctx: StartContext, attempts: int = 3) -> Service:
    """``spec.start(ctx)``, again on another free port when another process bound the one it chose first."""
    assert spec.start is not None
    for attempt in range(attempts):
        try:
            return spec.start(ctx)
        except RuntimeError as exc:
            if not taken(exc) or attempt + 1 == attempts:
                raise
            log(f"{spec.name}: its port was taken meanwhile; starting it on another")
    raise AssertionError("unreachable")


def _each(parallel: int, job: Callable[[PathSpec], _T], specs: Sequence[PathSpec]) -> list[_T]:
    """``job(spec)`` for each of ``specs``, results in their order: one after another, or ``parallel`` at a
    time (the test suite's smoke run, whose figures nobody reads: only that each path answers)."""
    if parallel <= 1:
        return [job(spec) for spec in specs]
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(job, specs))


def run_rounds(
    paths: Sequence[PathSpec],
    settings: Settings,
    upstream: Service,
    run_dir: Path,
    samples: Samples,
    *,
    parallel: int = 1,
    kept: dict[str, Service] | None = None,
) -> None:
    """The rounds of :data:`ROUND_SCENARIOS`, each path's proxy started once for all of them; stopped at the end,
    or left running in ``kept`` (by path name) when it is given."""
    scenarios = [s for s in ROUND_SCENARIOS if s.name in settings.scenarios]
    if not scenarios:
        return
    ctx = StartContext(upstream.port, run_dir, PROXY_CPUS)
    proxies: dict[str, Service] = {} if kept is None else kept
    try:
        _each(parallel, lambda spec: _ensure(proxies, spec, ctx), paths)
        for round_no in range(settings.rounds):
            for scenario in scenarios:

                def one(spec: PathSpec, round_no: int = round_no, scenario: Scenario = scenario) -> dict[str, Any]:
                    proxy = _ensure(proxies, spec, ctx)
                    target = url(proxy.port if proxy else upstream.port)
                    log(f"round {round_no + 1}/{settings.rounds} {scenario.name} {spec.name}")
                    try:
                        metrics, warnings = measure(scenario, target, settings.timing, proxy=proxy,
                                                    upstream=upstream, headers=spec.headers,
                                                    payload=spec.payload, bearer=spec.bearer)  # fmt: skip
                    except RuntimeError as exc:
                        log(f"  failed: {exc}")
                        metrics, warnings = {}, [f"failed: {exc}"]
                    return _sample(metrics, warnings)

                specs = [p for p in _rotated(paths, round_no) if _runs(p, scenario.name)]
                for spec, sample in zip(specs, _each(parallel, one, specs), strict=True):
                    samples[scenario.name].setdefault(spec.name, []).append(sample)
    finally:
        if kept is None:
            for service in proxies.values():
                service.stop()


def run_idle(
    paths: Sequence[PathSpec],
    settings: Settings,
    upstream: Service,
    run_dir: Path,
    samples: Samples,
    *,
    parallel: int = 1,
    running: dict[str, Service] | None = None,
) -> None:
    """The idle ramps, each on a proxy started for it, or on the path's proxy in ``running`` (by path name; started
    there if it is not running, and left running)."""
    ctx = StartContext(upstream.port, run_dir, PROXY_CPUS)
    for round_no in range(settings.idle_rounds):

        def one(spec: PathSpec, round_no: int = round_no) -> dict[str, Any]:
            rounds, levels = _idle_plan(spec, settings)
            log(f"idle round {round_no + 1}/{rounds} {spec.name} to {levels[-1]:,}")
            timing = dataclasses.replace(settings.timing, idle_levels=levels)
            with _start(spec, ctx) if running is None else contextlib.nullcontext(_ensure(running, spec, ctx)) as proxy:
                assert proxy is not None  # paths without a proxy get no idle ramp
                try:
                    metrics, warnings = measure_idle(
                        url(proxy.port), timing, proxy=proxy, headers=spec.headers, payload=spec.payload
                    )
                except RuntimeError as exc:
                    log(f"  failed: {exc}")
                    metrics, warnings = {}, [f"failed: {exc}"]
            return _sample(metrics, warnings)

        specs = [spec for spec in _rotated([p for p in paths if p.start is not None], round_no)
                 if _idle_due(spec, settings, round_no)]  # fmt: skip
        for spec, sample in zip(specs, _each(parallel, one, specs), strict=True):
            samples["idle"].setdefault(spec.name, []).append(sample)


WORKER_READY = "Application startup complete."
"""What each of ``run``'s worker processes logs (at its default level, info) once it serves."""


def _wait_for_workers(proxy: Service, workers: int, timeout: float = 60.0) -> None:
    """Until each of ``proxy``'s ``workers`` has logged :data:`WORKER_READY` since it started. With two or more,
    the supervisor listens before any worker serves; a fixed 0.5 s a worker was too short on a busy machine (the
    load met one worker) and, for one worker, waited for nothing (``run`` listens once it serves)."""
    if workers < 2:
        return
    started = f"Started parent process [{proxy.pid}]"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proxy.log.read_text(errors="replace")
        if started in text and text.split(started)[-1].count(WORKER_READY) >= workers:
            return
        if not proxy.alive():
            raise RuntimeError(f"{proxy.name} exited before its {workers} workers served")
        time.sleep(0.05)
    raise RuntimeError(f"{proxy.name}: {workers} workers did not all serve within {timeout:g} s")


def run_scaling(settings: Settings, upstream: Service, run_dir: Path, samples: Samples, gateway: PathSpec) -> None:
    """The gateway with 1 then 2 workers; the proxy and the generator may use every core (two workers need
    them), so each sample also says how many cores the generator and the upstream kept busy."""
    assert gateway.start is not None
    for round_no in range(settings.rounds):
        for workers in SCALING_WORKERS if round_no % 2 == 0 else SCALING_WORKERS[::-1]:
            name = f"{gateway.name} x{workers}"
            log(f"scaling round {round_no + 1}/{settings.rounds} {name}")
            with gateway.start(StartContext(upstream.port, run_dir, ALL_CPUS, workers)) as proxy:
                _wait_for_workers(proxy, workers)  # every worker serves before the load starts
                try:
                    metrics, warnings = measure(SCALING, url(proxy.port), settings.timing, proxy=proxy,
                                                upstream=upstream, load_cpus=ALL_CPUS)  # fmt: skip
                except RuntimeError as exc:
                    metrics, warnings = {}, [f"failed: {exc}"]
            samples["scaling"].setdefault(name, []).append(_sample(metrics, warnings))


def run(
    paths: Sequence[PathSpec],
    settings: Settings,
    *,
    out_dir: Path,
    docs: Path | None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    parallel: int = 1,
) -> dict[str, Any]:
    """Run the bench; write ``results.json``, ``results.png`` (and ``docs``); return the results.

    ``parallel``: paths started and measured at once in the rounds and the idle ramps (only for the test
    suite's smoke run: measurements side by side disturb one another's figures).
    """
    prepare_environment()
    started = datetime.datetime.now(datetime.UTC)
    available = [p for p in paths if p.unavailable() is None]
    skipped = {p.name: p.unavailable() for p in paths if p.unavailable() is not None}
    for name, reason in skipped.items():
        log(f"skipping {name}: {reason}")
    estimate = estimate_seconds(available, settings)
    log(f"{len(available)} paths, {settings.rounds} rounds: about {estimate / 60:.0f} min on this machine "
        f"(more when it is busy)")  # fmt: skip
    samples: Samples = {name: {} for name in settings.scenarios}
    clock = time.monotonic()
    kept: dict[str, Service] | None = {} if settings.idle_on_round_proxies else None
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp, upstream_server(Path(tmp)) as upstream:
        run_dir = Path(tmp)
        try:
            run_rounds(available, settings, upstream, run_dir, samples, parallel=parallel, kept=kept)
            if "idle" in settings.scenarios:
                run_idle(available, settings, upstream, run_dir, samples, parallel=parallel, running=kept)
        finally:
            for service in (kept or {}).values():
                service.stop()
        gateway = next((p for p in available if p.name == SCALING_PATH), None)
        if "scaling" in settings.scenarios and gateway is not None:
            run_scaling(settings, upstream, run_dir, samples, gateway)
    results = aggregate.build(
        samples,
        mode=settings.mode,
        settings=asdict(settings),
        machine=machine_info(),
        paths={p.name: {"note": p.note, "skipped": skipped.get(p.name)} for p in paths},
        started=started.isoformat(timespec="seconds"),
        seconds=time.monotonic() - clock,
        estimated_seconds=estimate,
    )
    from . import report  # matplotlib is imported only once there is something to draw

    report.write(results, out_dir=out_dir, docs=docs)
    if on_done is not None:
        on_done(results)
    return results


__all__ = [
    "FULL",
    "QUICK",
    "ROOT",
    "SCALING_PATH",
    "SCALING_WORKERS",
    "SMOKE",
    "SMOKE_PARALLEL",
    "Settings",
    "estimate_seconds",
    "log",
    "prepare_environment",
    "run",
    "uvicorn_path",
]
