"""Writing results: the JSON, a PNG chart, and the generated block of ``docs/performance.md``."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first
from matplotlib.ticker import FuncFormatter

from .aggregate import CPU, HANDSHAKE_CPU, ScalingRow, scaling_rows, summarise_warnings, targets

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ("direct", "nginx", "asgiproxy", "fastapi-proxy-lib", "minimal-relay", "gateway", "gateway-passthrough",
         "gateway-run", "gateway-run+messages", "gateway-run+policies", "gateway-run+policies-fresh",
         "gateway-run+telemetry", "gateway+policies", "gateway-picows")  # fmt: skip
IDLE_5K = "kib_per_conn@5000"
ISSUE_COLUMNS = (
    ("echo-64B", CPU, 1, "CPU µs / 64 B echo"), ("echo-16KiB", CPU, 1, "CPU µs / 16 KiB echo"),
    ("handshake", HANDSHAKE_CPU, 2, "CPU ms / handshake"), ("idle", IDLE_5K, 1, "KiB / idle connection (5,000)"),
)  # fmt: skip
"""The columns of issue 13's side-by-side table: scenario, metric, digits, header."""
QUOTED = {"echo-64B": "nginx", "echo-16KiB": "nginx", "handshake": "asgiproxy", "idle": "nginx"}
"""The reference each column's ratio is quoted against, as the issue quotes it ..."""
QUOTED_FOR = {
    ("gateway-run+messages", "echo-64B"): "asgiproxy", ("gateway-run+messages", "echo-16KiB"): "asgiproxy",
    ("gateway-run+policies", "handshake"): "gateway-run", ("gateway-run+policies-fresh", "handshake"): "gateway-run",
    ("gateway-run+telemetry", "handshake"): "gateway-run",
}  # fmt: skip
"""... and where a target compares a path with another reference."""
VERDICT = {True: "met", False: "**not met**", None: "not measured"}


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


def _bars(ax: Any, results: dict[str, Any], scenario: str, metrics: Sequence[tuple[str, str]], title: str,
          *, log: bool = False) -> None:  # fmt: skip
    """Medians per path with min-max whiskers, the value written on each bar; paths without the figure left out."""
    paths = [p for p in _paths(results, scenario) if any(_spread(results, scenario, p, m) for m, _ in metrics)]
    ax.set_title(title, fontsize=9)
    if not paths:
        ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
        return
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
        colours = ["tab:orange" if p.startswith("gateway-run") and len(metrics) == 1 else f"C{i}" for p in paths]
        bars = ax.bar(xs, medians, width, yerr=[lows, highs], capsize=2, label=label, color=colours)
        ax.bar_label(bars, labels=[fmt(m, 1 if m < 10 else 0) if m else "" for m in medians], fontsize=5, padding=1)
    if log:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xticks(range(len(paths)), paths, rotation=35, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    if len(metrics) > 1:
        ax.legend(fontsize=6)


def _scaling_panel(ax: Any, results: dict[str, Any]) -> None:
    rows = _rows_of(results)
    labels = [str(row["workers"]) for row in rows]
    ax.bar(labels, [row["messages_per_s"] or 0.0 for row in rows], 0.5, label="measured", color="tab:orange")
    one = rows[0]["messages_per_s"] if rows and rows[0]["workers"] == 1 else None
    if one:
        ideal = [row["workers"] * one for row in rows]
        ax.plot(labels, ideal, "k--", marker="o", label="N x one worker")
        ceilings = [row["ceiling"] for row in rows]
        if all(c is not None for c in ceilings):
            ax.plot(labels, [i * (c or 0.0) for i, c in zip(ideal, ceilings, strict=True)], "r:", marker="x",
                    label="most the free cores allow")  # fmt: skip
    names = results["scenarios"].get("scaling", {}).get("summary", {})
    path = next(iter(names), "gateway-run x1").rsplit(" x", 1)[0]
    ax.set_title(f"{path}: echoes/s by workers (unpinned)", fontsize=9)
    ax.set_xlabel("workers", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def _targets_panel(ax: Any, results: dict[str, Any]) -> None:
    """Each measured target as value / limit: met below 1 (at or above 1 for an "at least" target)."""
    shown = [t for t in results["targets"] if t["value"] is not None and t["limit"]]
    ax.barh(range(len(shown)), [t["value"] / t["limit"] for t in shown],
            color=["tab:green" if t["met"] else "tab:red" for t in shown])  # fmt: skip
    ax.axvline(1.0, color="k", linewidth=0.8)
    labels = [textwrap.fill(t["target"].replace("`", ""), 34) for t in shown]
    ax.set_yticks(range(len(shown)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_title("targets measured: value / limit (green: met)", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)


def chart(results: dict[str, Any], path: Path) -> None:
    """Six panels: proxy CPU per 64 B echo, per 16 KiB echo and per handshake (log scale), memory per idle
    connection, scaling by workers, and each measured target against its limit."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    _bars(axes[0][0], results, "echo-64B", [(CPU, "64 B")], "proxy CPU µs per 64 B echo (lower is better)", log=True)
    _bars(axes[0][1], results, "echo-16KiB", [(CPU, "16 KiB")], "proxy CPU µs per 16 KiB echo", log=True)
    _bars(axes[0][2], results, "handshake", [(HANDSHAKE_CPU, "CPU ms")], "proxy CPU ms per handshake", log=True)
    summary = results["scenarios"].get("idle", {}).get("summary", {})
    levels = sorted({k for s in summary.values() for k in s if k.startswith("kib_per_conn@")},
                    key=lambda k: int(k.split("@")[1]))  # fmt: skip
    _bars(axes[1][0], results, "idle", [(k, k.split("@")[1]) for k in levels], "KiB per idle proxied connection")
    _scaling_panel(axes[1][1], results)
    _targets_panel(axes[1][2], results)
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


def _median(results: dict[str, Any], scenario: str, path: str, metric: str) -> float | None:
    found = _spread(results, scenario, path, metric)
    return None if found is None else float(found["median"])


def quoted_reference(path: str, scenario: str) -> str | None:
    """The path whose median ``path``'s is quoted against in the issue's table (None: no ratio)."""
    reference = QUOTED_FOR.get((path, scenario), QUOTED.get(scenario))
    return None if reference == path or path == "nginx" else reference


def _issue_cell(results: dict[str, Any], path: str, scenario: str, metric: str, digits: int) -> str:
    value = _median(results, scenario, path, metric)
    if value is None:
        return "—"
    text = fmt(value, digits)
    reference = quoted_reference(path, scenario)
    base = None if reference is None else _median(results, scenario, reference, metric)
    if base:
        text += f" ({value / base:.2f}× {reference})"  # noqa: RUF001
    return text


def _present(results: dict[str, Any], path: str) -> bool:
    return any(path in s.get("summary", {}) for s in results["scenarios"].values())


def issue_table(results: dict[str, Any]) -> list[str]:
    """Issue 13's side-by-side table: each path's median, with its ratio to the reference the issue quotes."""
    rows = [[f"`{path}`", *(_issue_cell(results, path, scenario, metric, digits)
                            for scenario, metric, digits, _ in ISSUE_COLUMNS)]
            for path in ORDER if path != "direct" and _present(results, path)]  # fmt: skip
    return _table(["path", *(header for *_, header in ISSUE_COLUMNS)], rows)


def _rows_of(results: dict[str, Any]) -> list[ScalingRow]:
    found: list[ScalingRow] | None = results.get("scaling")
    return found if found is not None else scaling_rows(results["scenarios"], results["machine"].get("cores"))


def scaling_section(results: dict[str, Any]) -> list[str]:
    """The scaling table, and what the machine's cores allowed, in figures from this run."""
    rows = _rows_of(results)
    if not rows:
        return []
    names = {int(n.rsplit(" x", 1)[1]): n for n in results["scenarios"].get("scaling", {}).get("summary", {})}
    path = names[rows[0]["workers"]].rsplit(" x", 1)[0]
    lines = [f"Scaling (`{path}` with N workers, echo 64 B, 50 connections, nothing pinned):", ""]
    lines += _table(
        ["workers", "echoes/s", "CPU µs / echo (all workers)", "echoes/s(N) / (N × echoes/s(1))",  # noqa: RUF001
         "CPU / echo vs 1 worker", "cores used: proxy", "cores used: generator + upstream", "cores used: other work",
         "most the free cores allow"],
        [[str(row["workers"]), cell(results, "scaling", names[row["workers"]], "messages_per_s"),
          cell(results, "scaling", names[row["workers"]], CPU, 1), fmt(row["efficiency"], 2),
          fmt(row["cpu_vs_one"], 2), fmt(row["proxy_cores"], 2), fmt(row["load_cores"], 2),
          fmt(row.get("other_cores"), 2), fmt(row["ceiling"], 2)]
         for row in rows],
    )  # fmt: skip
    top, cores = rows[-1], results["machine"].get("cores")
    if top["workers"] > 1 and top["load_cores"] is not None:
        lines += [
            "",
            f"The machine has {cores} cores and the load generator and upstream run on them too: with "
            f"{top['workers']} workers they kept {top['load_cores']:.2f} cores busy and other work on the machine "
            f"{fmt(top.get('other_cores'), 2)}, so the free cores allowed at "
            f"most {fmt(top['ceiling'], 2)} of {top['workers']}× one worker's echoes/s; the measured share is "  # noqa: RUF001
            f"{fmt(top['efficiency'], 2)}. The figure that does not depend on free cores: the proxy's CPU per echo "
            f"with {top['workers']} workers is {fmt(top['cpu_vs_one'], 2)}× one worker's "  # noqa: RUF001
            "(1.0: no cross-worker overhead).",
        ]
    return [*lines, ""]


def targets_table(results: dict[str, Any]) -> list[str]:
    """Target | value | limit | met, not met or not measured (with the note)."""
    rows = []
    for t in results["targets"]:
        verdict = VERDICT[t["met"]]
        note = t["note"] if t["value"] is not None else f"this run has no figure for it; {t['note']}".rstrip("; ")
        rows.append([str(t.get("issue", "")), t["target"], fmt(t["value"], 2),
                     ("≥ " if t.get("op") == ">=" else "≤ ") + f"{t['limit']:g}",
                     verdict + (f" ({note})" if note else "")])  # fmt: skip
    return _table(["issue", "target", "value", "limit", "verdict"], rows)


def markdown(results: dict[str, Any], *, chart_path: Path, docs: Path) -> str:
    """The generated block: machine, the issue's table, scaling, targets, every figure, warnings."""
    machine, versions = results["machine"], results["machine"]["versions"]
    settings, estimated = results["settings"], results.get("estimated_seconds")
    took = f"{results['seconds']:.0f} s" + ("" if estimated is None else f", estimated {estimated:.0f} s")
    lines = [
        f"Run of {results['started']} ({results['mode']} mode, {took}; "
        f"{settings['rounds']} rounds, idle {settings['idle_rounds']}), "
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
    lines += ["Side by side (proxy CPU per echo and per handshake, memory per idle proxied connection; medians, "
              "ratios of medians to the path the issue quotes):", "", *issue_table(results), ""]  # fmt: skip
    lines += scaling_section(results)
    lines += ["Targets, as measured in this run:", "", *targets_table(results), ""]
    lines += ["Every figure:", ""]
    header = ["path", "CPU µs / 64 B echo", "CPU µs / 16 KiB echo", "echoes/s 64 B", "MB/s 16 KiB", "handshakes/s",
              "CPU ms / handshake", "connect p50/p99 ms", "RTT p50/p99 µs", "KiB / idle conn 1k/5k/9k"]  # fmt: skip
    rows = []
    for path in ORDER + tuple(sorted(p for p in results["paths"] if p not in ORDER)):
        if not _present(results, path):
            continue
        idle = "/".join(cell(results, "idle", path, f"kib_per_conn@{n}", 1, spread=False) for n in (1000, 5000, 9000))
        rows.append([
            f"`{path}`",
            cell(results, "echo-64B", path, CPU, 1),
            cell(results, "echo-16KiB", path, CPU, 1),
            cell(results, "echo-64B", path, "messages_per_s"),
            cell(results, "echo-16KiB", path, "mb_per_s", 1),
            cell(results, "handshake", path, "handshakes_per_s"),
            cell(results, "handshake", path, HANDSHAKE_CPU, 2),
            cell(results, "handshake", path, "connect_p50_ms", 2, False) + " / "
            + cell(results, "handshake", path, "connect_p99_ms", 2, False),
            cell(results, "latency", path, "rtt_p50_us", 0, False) + " / "
            + cell(results, "latency", path, "rtt_p99_us", 0, False),
            idle,
        ])  # fmt: skip
    lines += [*_table(header, rows), ""]
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
    results = json.loads(results_json.read_text())
    cores = results["machine"].get("cores")
    results["scaling"] = scaling_rows(results["scenarios"], cores)
    results["targets"] = targets(results["scenarios"], cores)
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


__all__ = [
    "chart",
    "issue_table",
    "markdown",
    "quoted_reference",
    "rerender",
    "scaling_section",
    "targets_table",
    "update_docs",
    "write",
]
