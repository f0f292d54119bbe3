"""Writing results: the JSON, a PNG chart, and the generated block of ``docs/performance.md``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RATIO_COLUMNS = (
    ("echo-64B", "proxy_cpu_us_per_message"), ("echo-16KiB", "proxy_cpu_us_per_message"),
    ("echo-64B", "messages_per_s"), ("handshake", "proxy_cpu_ms_per_handshake"), ("handshake", "handshakes_per_s"),
    ("latency", "rtt_p50_us"), ("latency", "rtt_p99_us"), ("idle", "kib_per_conn@5000"),
)  # fmt: skip
ORDER = ("direct", "nginx", "asgiproxy", "fastapi-proxy-lib", "minimal-relay", "gateway", "gateway+policies",
         "gateway-picows", "gateway-passthrough")  # fmt: skip


def write(results: dict[str, Any], *, out_dir: Path, docs: Path | None) -> None:
    """Write ``results.json`` and ``results.png`` to ``out_dir``; update ``docs`` if given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    chart(results, out_dir / "results.png")
    if docs is not None:
        update_docs(docs, markdown(results, chart_path=out_dir / "results.png", docs=docs))


def _spread(results: dict[str, Any], scenario: str, path: str, metric: str) -> dict[str, float] | None:
    found: dict[str, float] | None = results["scenarios"].get(scenario, {}).get("summary", {}).get(path, {}).get(metric)
    return found


def _paths(results: dict[str, Any], scenario: str) -> list[str]:
    present = results["scenarios"].get(scenario, {}).get("summary", {})
    return [p for p in ORDER if p in present] + sorted(p for p in present if p not in ORDER)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def cell(results: dict[str, Any], scenario: str, path: str, metric: str, digits: int = 0, spread: bool = True) -> str:
    found = _spread(results, scenario, path, metric)
    if found is None:
        return "—"
    text = fmt(found["median"], digits)
    if spread and found["n"] > 1 and found["min"] != found["max"]:
        text += f" ({fmt(found['min'], digits)}–{fmt(found['max'], digits)})"  # noqa: RUF001
    return text


def _ratio_cell(results: dict[str, Any], subject: str, reference: str, scenario: str, metric: str) -> str:
    ratios = results["scenarios"].get(scenario, {}).get("ratios", {})
    value = ratios.get(subject, {}).get(f"vs {reference}", {}).get(metric)
    return "—" if value is None else f"{value:.2f}"


def _bars(ax: Any, results: dict[str, Any], scenario: str, metrics: Sequence[tuple[str, str]], title: str) -> None:
    paths = _paths(results, scenario)
    width = 0.8 / max(1, len(metrics))
    for i, (metric, label) in enumerate(metrics):
        medians, lows, highs = [], [], []
        for path in paths:
            found = _spread(results, scenario, path, metric)
            median = found["median"] if found else 0.0
            medians.append(median)
            lows.append(median - found["min"] if found else 0.0)
            highs.append(found["max"] - median if found else 0.0)
        xs = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(paths))]
        ax.bar(xs, medians, width, yerr=[lows, highs], capsize=2, label=label)
    ax.set_xticks(range(len(paths)), paths, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    if len(metrics) > 1:
        ax.legend(fontsize=6)


def chart(results: dict[str, Any], path: Path) -> None:
    """Six panels of medians with min-max whiskers: CPU per echo, throughput, latency, handshakes, memory."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    cpu = "proxy_cpu_us_per_message"
    _bars(axes[0][0], results, "echo-64B", [(cpu, "64 B")], "proxy CPU µs per 64 B echo (lower is better)")
    _bars(axes[0][1], results, "echo-16KiB", [("proxy_cpu_us_per_message", "16 KiB")], "proxy CPU µs per 16 KiB echo")
    _bars(axes[0][2], results, "handshake", [("proxy_cpu_ms_per_handshake", "CPU ms")], "proxy CPU ms per handshake")
    _bars(axes[1][0], results, "echo-64B", [("messages_per_s", "64 B")], "echoes/s, 50 connections, 64 B (pinned)")
    _bars(axes[1][1], results, "latency", [("rtt_p50_us", "p50"), ("rtt_p99_us", "p99")], "round trip µs, 1 connection")
    levels = [k for k in ("kib_per_conn@1000", "kib_per_conn@5000", "kib_per_conn@9000")
              if any(k in s for s in results["scenarios"].get("idle", {}).get("summary", {}).values())]  # fmt: skip
    if not levels:  # quick runs use smaller levels
        summary = results["scenarios"].get("idle", {}).get("summary", {})
        levels = sorted({k for s in summary.values() for k in s if k.startswith("kib_per_conn@")})
    _bars(axes[1][2], results, "idle", [(k, k.split("@")[1]) for k in levels], "KiB per idle proxied connection")
    machine = results["machine"]
    fig.suptitle(f"asgi-ws-gateway bench ({results['mode']}, {results['started']}) — {machine['cpu']}, "
                 f"{machine['cores']} cores, proxy pinned to CPU {machine['proxy_cpus']}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any], *, chart_path: Path, docs: Path) -> str:
    """The generated block: machine, main table, ratios, targets, scaling, warnings."""
    machine, versions = results["machine"], results["machine"]["versions"]
    lines = [
        f"Run of {results['started']} ({results['mode']} mode, {results['seconds']:.0f} s; "
        f"{results['settings']['rounds']} rounds, idle {results['settings']['idle_rounds']}), "
        f"medians with (min–max) over rounds.",  # noqa: RUF001
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, Python "
        f"{machine['python']}; proxy pinned to CPU {machine['proxy_cpus']}, generator + upstream + bench "
        f"to CPU {machine['load_cpus']}" + ("" if machine["pinning"] else " (pinning unavailable: not pinned)") + ".",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "",
    ]
    try:
        rel = chart_path.resolve().relative_to(docs.resolve().parent.parent)
        lines += [f"![bench chart](../{rel})", ""]
    except ValueError:
        pass
    header = ["path", "CPU µs / 64 B echo", "CPU µs / 16 KiB echo", "echoes/s 64 B", "MB/s 16 KiB", "handshakes/s",
              "CPU ms / handshake", "connect p50/p99 ms", "RTT p50/p99 µs", "KiB / idle conn 1k/5k/9k"]  # fmt: skip
    rows = []
    for path in ORDER:
        if not any(path in s.get("summary", {}) for s in results["scenarios"].values()):
            continue
        idle = "/".join(cell(results, "idle", path, f"kib_per_conn@{n}", 1, spread=False) for n in (1000, 5000, 9000))
        rows.append([
            f"`{path}`",
            cell(results, "echo-64B", path, "proxy_cpu_us_per_message", 1),
            cell(results, "echo-16KiB", path, "proxy_cpu_us_per_message", 1),
            cell(results, "echo-64B", path, "messages_per_s"),
            cell(results, "echo-16KiB", path, "mb_per_s", 1),
            cell(results, "handshake", path, "handshakes_per_s"),
            cell(results, "handshake", path, "proxy_cpu_ms_per_handshake", 2),
            cell(results, "handshake", path, "connect_p50_ms", 2, False) + " / "
            + cell(results, "handshake", path, "connect_p99_ms", 2, False),
            cell(results, "latency", path, "rtt_p50_us", 0, False) + " / "
            + cell(results, "latency", path, "rtt_p99_us", 0, False),
            idle,
        ])  # fmt: skip
    lines += [*_table(header, rows), ""]
    lines += ["Ratios of medians, subject / reference: for CPU, latency and memory below 1 is better, for "
              "echoes/s and handshakes/s above 1 is better.", ""]  # fmt: skip
    ratio_rows = []
    for subject in ("gateway", "gateway+policies", "gateway-picows", "gateway-passthrough"):
        for reference in ("nginx", "asgiproxy", "fastapi-proxy-lib", "minimal-relay", "gateway", "direct"):
            row = [_ratio_cell(results, subject, reference, scenario, metric) for scenario, metric in RATIO_COLUMNS]
            if any(v != "—" for v in row):
                ratio_rows.append([f"`{subject}` / `{reference}`", *row])
    lines += [*_table(["ratio", "CPU/64 B", "CPU/16 KiB", "echoes/s", "CPU/handshake", "handshakes/s", "RTT p50",
                       "RTT p99", "KiB/conn 5k"], ratio_rows), ""]  # fmt: skip
    lines += ["Targets of issue 6, as measured in this run:", ""]
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines += [*_table(["target", "measured", "limit", "met"], [
        [t["target"], "—" if t["value"] is None else f"{t['value']:.2f}", f"{t['limit']:g}",
         verdict[t["met"]] + (f" ({t['note']})" if t["note"] else "")]
        for t in results["targets"]
    ]), ""]  # fmt: skip
    scaling = results["scenarios"].get("scaling", {}).get("summary", {})
    if scaling:
        lines += ["Scaling (gateway, echo 64 B, 50 connections, nothing pinned):", ""]
        lines += [*_table(["workers", "echoes/s", "CPU µs / echo (all workers)"], [
            [name.split("x")[-1], cell(results, "scaling", name, "messages_per_s"),
             cell(results, "scaling", name, "proxy_cpu_us_per_message", 1)] for name in sorted(scaling)
        ]), ""]  # fmt: skip
    warned = [(scenario, path, w) for scenario, s in results["scenarios"].items()
              for path, ws in s.get("warnings", {}).items() for w in ws]  # fmt: skip
    if warned:
        lines += ["Warnings (saturation, failures):", ""]
        lines += [f"- {scenario} / `{path}`: {w}" for scenario, path, w in warned] + [""]
    notes = [f"- `{name}`: {info['note']}" for name, info in results["paths"].items() if info.get("note")]
    notes += [
        f"- `{name}` skipped: {info['skipped']}" for name, info in results["paths"].items() if info.get("skipped")
    ]
    lines += ["Paths:", "", *notes]
    return "\n".join(lines)


def rerender(results_json: Path, docs: Path | None) -> None:
    """Redraw the chart and the docs block from a results file (targets recomputed)."""
    from .aggregate import summarise_warnings, targets

    results = json.loads(results_json.read_text())
    results["targets"] = targets(results["scenarios"])
    for scenario in results["scenarios"].values():
        scenario["warnings"] = summarise_warnings(scenario["samples"])
    results_json.write_text(json.dumps(results, indent=1) + "\n")
    chart(results, results_json.with_suffix(".png"))
    if docs is not None:
        update_docs(docs, markdown(results, chart_path=results_json.with_suffix(".png"), docs=docs))


def update_docs(docs: Path, block: str) -> None:
    """Replace the text between the bench markers of ``docs`` (appending them if absent)."""
    text = docs.read_text() if docs.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    docs.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


if __name__ == "__main__":  # python -m bench.report RESULTS.json [DOCS.md]
    import sys

    rerender(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)


__all__ = ["chart", "markdown", "rerender", "update_docs", "write"]
