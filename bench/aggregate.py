"""From raw samples to results: medians with min-max, ratios to the peers, the issues' targets.

Ratios are ``subject / reference`` of medians: below 1 means the subject costs less (CPU, memory,
latency) or does less (throughput). Ratios to ``direct`` depend on pinning and are given for
latency only.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from .stats import Spread, ratio, spread

SCHEMA_VERSION = 1
SUBJECTS = ("gateway", "gateway+policies", "gateway-picows", "gateway-passthrough", "gateway-run",
            "gateway-run+messages", "gateway-run+policies", "gateway-run+policies-fresh",
            "gateway-run+telemetry")  # fmt: skip
REFERENCES = ("nginx", "asgiproxy", "fastapi-proxy-lib", "minimal-relay")

HEADLINES: dict[str, tuple[str, ...]] = {
    "echo-64B": ("proxy_cpu_us_per_message", "messages_per_s", "mb_per_s"),
    "echo-16KiB": ("proxy_cpu_us_per_message", "messages_per_s", "mb_per_s"),
    "latency": ("rtt_p50_us", "rtt_p99_us", "proxy_cpu_us_per_message"),
    "handshake": ("proxy_cpu_ms_per_handshake", "handshakes_per_s", "connect_p50_ms", "connect_p99_ms"),
    "idle": ("kib_per_conn@1000", "kib_per_conn@5000", "kib_per_conn@9000"),
    "scaling": ("messages_per_s", "proxy_cpu_us_per_message"),
}
DESCRIPTIONS = {
    "echo-64B": "echo throughput, 50 connections, closed loop, 64 B binary messages",
    "echo-16KiB": "echo throughput, 50 connections, closed loop, 16 KiB binary messages",
    "latency": "round-trip latency at light load: 1 connection, 64 B",
    "handshake": "handshake rate: 16 concurrent openers doing open / one echo / close",
    "idle": "RSS of the proxy process tree per open idle connection (both legs), over a warm baseline",
    "scaling": "asgi-ws-gateway run with 1 and 2 workers, echo 64 B (no pinning: every process may use every core)",
}
CPU, HANDSHAKE_CPU = "proxy_cpu_us_per_message", "proxy_cpu_ms_per_handshake"


class Target(TypedDict):
    """One target of an issue as measured in a run: ``met`` is None when the figure is missing."""

    issue: int
    target: str
    value: float | None
    op: Literal["<=", ">="]
    limit: float
    met: bool | None
    note: str


class ScalingRow(TypedDict):
    """The scaling scenario at one worker count (medians over rounds; None where a figure is missing).

    ``efficiency`` is echoes/s(N) / (N x echoes/s(1)); ``cpu_vs_one`` the proxy CPU per echo with N
    workers over one worker's (1.0: no cross-worker overhead); ``ceiling`` the efficiency the cores
    the load side and other work left free allow at most: min(N x u1, cores - load - other) / (N x u1),
    u1 being the cores one worker used.
    """

    workers: int
    messages_per_s: float | None
    proxy_cpu_us_per_message: float | None
    proxy_cores: float | None
    load_cores: float | None
    other_cores: float | None
    efficiency: float | None
    cpu_vs_one: float | None
    ceiling: float | None


def _summary(path_samples: list[dict[str, Any]]) -> dict[str, Spread]:
    names = sorted({name for sample in path_samples for name in sample["metrics"]})
    out: dict[str, Spread] = {}
    for name in names:
        result = spread([sample["metrics"].get(name) for sample in path_samples])
        if result is not None:
            out[name] = result
    return out


def _median(summary: dict[str, dict[str, Spread]], path: str, metric: str) -> float | None:
    found = summary.get(path, {}).get(metric)
    return float(found["median"]) if found else None


def _ratios(scenario: str, summary: dict[str, dict[str, Spread]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """subject -> "vs <reference>" -> metric -> ratio."""
    references = [*REFERENCES, "gateway", "gateway-run"] + (["direct"] if scenario == "latency" else [])
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for subject in SUBJECTS:
        if subject not in summary:
            continue
        for reference in references:
            if reference == subject or reference not in summary:
                continue
            row = {m: ratio(_median(summary, subject, m), _median(summary, reference, m)) for m in HEADLINES[scenario]}
            if any(v is not None for v in row.values()):
                out.setdefault(subject, {})[f"vs {reference}"] = row
    return out


def _target(issue: int, name: str, value: float | None, limit: float, note: str = "", *,
            at_least: bool = False) -> Target:  # fmt: skip
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"issue": issue, "target": name, "value": value, "op": ">=" if at_least else "<=", "limit": limit,
            "met": met, "note": note}  # fmt: skip


def _median_of(scenarios: dict[str, Any], scenario: str, path: str, metric: str) -> float | None:
    found = scenarios.get(scenario, {}).get("summary", {}).get(path, {}).get(metric)
    return float(found["median"]) if found else None


def scaling_rows(scenarios: dict[str, Any], cores: int | None) -> list[ScalingRow]:
    """The scaling scenario per worker count, with the ratios to one worker and what the cores allowed."""
    summary = scenarios.get("scaling", {}).get("summary", {})
    by_workers = {int(name.rsplit(" x", 1)[1]): name for name in summary if " x" in name}

    def m(name: str | None, metric: str) -> float | None:
        return None if name is None else _median_of(scenarios, "scaling", name, metric)

    one = by_workers.get(1)
    rate1, cpu1, cores1 = m(one, "messages_per_s"), m(one, CPU), m(one, "proxy_cpu_util")
    rows: list[ScalingRow] = []
    for n in sorted(by_workers):
        name = by_workers[n]
        rate, load, other = m(name, "messages_per_s"), m(name, "load_cores"), m(name, "other_cores")
        ceiling = None
        if cores and load is not None and cores1:
            ceiling = max(0.0, min(n * cores1, cores - load - (other or 0.0))) / (n * cores1)
        rows.append({
            "workers": n, "messages_per_s": rate, "proxy_cpu_us_per_message": m(name, CPU),
            "proxy_cores": m(name, "proxy_cpu_util"), "load_cores": load, "other_cores": other,
            "efficiency": ratio(rate, None if rate1 is None else n * rate1), "cpu_vs_one": ratio(m(name, CPU), cpu1),
            "ceiling": ceiling,
        })  # fmt: skip
    return rows


SCALING_TARGET = "scaling, `gateway-run`: echoes/s(N) / (N * echoes/s(1))"


def _scaling_target(rows: list[ScalingRow], cores: int | None) -> Target:
    top = rows[-1] if rows and rows[-1]["workers"] > 1 else None
    if top is None:
        return _target(13, SCALING_TARGET, None, 0.9, at_least=True)
    n = top["workers"]
    note = f"N = {n} on {cores} cores"
    if top["load_cores"] is not None:
        note += f"; generator + upstream kept {top['load_cores']:.2f} cores busy"
    if top["other_cores"] is not None:
        note += f", other work {top['other_cores']:.2f}"
    if top["ceiling"] is not None:
        note += f", so the free cores allowed at most {top['ceiling']:.2f}"
    if top["cpu_vs_one"] is not None:
        note += f"; CPU per echo {n} workers / 1: {top['cpu_vs_one']:.2f}"
    return _target(13, SCALING_TARGET, top["efficiency"], 0.9, note, at_least=True)


def targets(scenarios: dict[str, Any], cores: int | None = None) -> list[Target]:
    """Issues 13 and 14's targets, as measured in this run (value None where a path or figure is missing).

    Args:
        scenarios: the ``scenarios`` of a result (summaries per path).
        cores: the machine's core count, for what the scaling target could reach here.
    """

    def r(scenario: str, subject: str, reference: str, metric: str) -> float | None:
        return ratio(_median_of(scenarios, scenario, subject, metric),
                     _median_of(scenarios, scenario, reference, metric))  # fmt: skip

    def idle(path: str) -> float | None:
        return _median_of(scenarios, "idle", path, "kib_per_conn@5000")

    run, messages, policies = "gateway-run", "gateway-run+messages", "gateway-run+policies"
    return [
        _target(13, "CPU/64 B echo, `gateway-run` / `nginx`", r("echo-64B", run, "nginx", CPU), 1.2),
        _target(13, "CPU/16 KiB echo, `gateway-run` / `nginx`", r("echo-16KiB", run, "nginx", CPU), 1.1),
        _target(13, "KiB/idle connection at 5,000, `gateway-run`", idle(run), 20.0),
        _target(13, "CPU/64 B echo, `gateway-run+messages` / `asgiproxy`",
                r("echo-64B", messages, "asgiproxy", CPU), 0.6, "size limit + rate limit + JSON Schema"),
        _target(13, "KiB/idle connection at 5,000, `gateway-run+messages`", idle(messages), 30.0),
        _target(13, "CPU/handshake, `gateway-run` / `asgiproxy`", r("handshake", run, "asgiproxy", HANDSHAKE_CPU),
                0.7, "run defaults: access log on"),
        _target(13, "CPU/handshake, `gateway-run+policies` / `gateway-run`",
                r("handshake", policies, run, HANDSHAKE_CPU), 1.2,
                "validate-jwt + rate-limit-by-key on Redis + set-header, telemetry on; a token per opener, reused"),
        _scaling_target(scaling_rows(scenarios, cores), cores),
        _target(14, "CPU/handshake, `gateway-run+telemetry` / `gateway-run`",
                r("handshake", "gateway-run+telemetry", run, HANDSHAKE_CPU), 1.1,
                "every handshake traced, metrics every 10 s, OTLP/gRPC; bench/telemetry_overhead.py: the relay"),
    ]  # fmt: skip


def summarise_warnings(by_path: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Each path's distinct warnings, with the number of rounds that gave them."""
    out: dict[str, list[str]] = {}
    for path, rounds in by_path.items():
        counts: dict[str, int] = {}
        for sample in rounds:
            for warning in dict.fromkeys(sample["warnings"]):
                counts[warning] = counts.get(warning, 0) + 1
        if counts:
            out[path] = [f"{w} ({n} of {len(rounds)} rounds)" for w, n in counts.items()]
    return out


def build(
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    *,
    mode: str,
    settings: dict[str, Any],
    machine: dict[str, Any],
    paths: dict[str, Any],
    started: str,
    seconds: float,
    estimated_seconds: float | None = None,
) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for name, by_path in samples.items():
        summary = {path: _summary(rounds) for path, rounds in by_path.items()}
        warnings = summarise_warnings(by_path)
        scenarios[name] = {
            "description": DESCRIPTIONS.get(name, ""),
            "headline": list(HEADLINES.get(name, ())),
            "samples": by_path,
            "summary": summary,
            "ratios": _ratios(name, summary) if name in HEADLINES and name != "scaling" else {},
            "warnings": warnings,
        }
    cores = machine.get("cores")
    return {
        "schema": SCHEMA_VERSION,
        "mode": mode,
        "started": started,
        "seconds": round(seconds, 1),
        "estimated_seconds": None if estimated_seconds is None else round(estimated_seconds),
        "machine": machine,
        "settings": settings,
        "paths": paths,
        "scenarios": scenarios,
        "scaling": scaling_rows(scenarios, cores),
        "targets": targets(scenarios, cores),
    }


__all__ = [
    "HEADLINES",
    "SCHEMA_VERSION",
    "ScalingRow",
    "Target",
    "build",
    "scaling_rows",
    "summarise_warnings",
    "targets",
]
