"""From raw samples to results: medians with min-max, ratios to the peers, the issue's targets.

Ratios are ``subject / reference`` of medians: below 1 means the subject costs less (CPU, memory,
latency) or does less (throughput). Ratios to ``direct`` depend on pinning and are given for
latency only.
"""

from __future__ import annotations

from typing import Any, TypedDict

from .stats import Spread, ratio, spread

SCHEMA_VERSION = 1
SUBJECTS = ("gateway", "gateway+policies", "gateway-picows", "gateway-passthrough", "gateway-run")
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
    "scaling": "gateway under uvicorn with 1 and 2 workers (no pinning: every process may use both cores)",
}


class Target(TypedDict):
    target: str
    value: float | None
    limit: float
    met: bool | None
    note: str


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
    references = [*REFERENCES, "gateway"] + (["direct"] if scenario == "latency" else [])
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


def _target(name: str, value: float | None, limit: float, note: str = "") -> Target:
    return {"target": name, "value": value, "limit": limit, "met": None if value is None else value <= limit,
            "note": note}  # fmt: skip


def targets(scenarios: dict[str, Any]) -> list[Target]:
    """The issue's targets, as measured in this run (None where a figure is missing)."""

    def r(scenario: str, subject: str, reference: str, metric: str) -> float | None:
        value = scenarios.get(scenario, {}).get("ratios", {}).get(subject, {}).get(f"vs {reference}", {}).get(metric)
        return None if value is None else float(value)

    def m(scenario: str, path: str, metric: str) -> float | None:
        found = scenarios.get(scenario, {}).get("summary", {}).get(path, {}).get(metric)
        return float(found["median"]) if found else None

    cpu, hs = "proxy_cpu_us_per_message", "proxy_cpu_ms_per_handshake"
    return [
        _target("relay CPU/64 B echo vs minimal relay", r("echo-64B", "gateway", "minimal-relay", cpu), 0.8),
        _target("relay CPU/64 B echo vs asgiproxy", r("echo-64B", "gateway", "asgiproxy", cpu), 0.8),
        _target("relay CPU/16 KiB echo vs asgiproxy", r("echo-16KiB", "gateway", "asgiproxy", cpu), 0.4),
        _target("handshake CPU vs asgiproxy", r("handshake", "gateway", "asgiproxy", hs), 0.7),
        _target("handshake CPU, policies vs bare", r("handshake", "gateway+policies", "gateway", hs), 1.2,
                "validate-jwt + rate-limit-by-key + set-header, telemetry on"),
        _target("telemetry on: CPU/64 B echo vs bare", r("echo-64B", "gateway+policies", "gateway", cpu), 1.05,
                "gateway+policies has telemetry on; handshake policies cost nothing per message"),
        _target("idle KiB/connection at 5,000", m("idle", "gateway", "kib_per_conn@5000"), 30.0),
        _target("idle KiB/connection at 9,000", m("idle", "gateway", "kib_per_conn@9000"), 30.0),
        _target("passthrough CPU/64 B echo vs nginx", r("echo-64B", "gateway-passthrough", "nginx", cpu), 2.0),
        _target("passthrough CPU/16 KiB echo vs nginx", r("echo-16KiB", "gateway-passthrough", "nginx", cpu), 2.0),
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
    return {
        "schema": SCHEMA_VERSION,
        "mode": mode,
        "started": started,
        "seconds": round(seconds, 1),
        "machine": machine,
        "settings": settings,
        "paths": paths,
        "scenarios": scenarios,
        "targets": targets(scenarios),
    }


__all__ = ["HEADLINES", "SCHEMA_VERSION", "Target", "build", "summarise_warnings", "targets"]
