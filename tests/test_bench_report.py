"""The bench's arithmetic and report (pure): issue 13's targets, the scaling figures, the tables, the plan."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import aggregate, report
from bench.paths import OPT_IN, PATHS, by_name
from bench.procs import Service
from bench.runner import FULL, QUICK, _idle_plan, estimate_seconds
from bench.scenarios import saturation_warnings

CPU, HS = "proxy_cpu_us_per_message", "proxy_cpu_ms_per_handshake"
MACHINE = {"cpu": "test", "cores": 2, "kernel": "6", "python": "3.11", "pinning": True, "proxy_cpus": "0",
           "load_cpus": "1", "versions": {}}  # fmt: skip


def _rounds(*metrics: dict[str, float]) -> list[dict[str, Any]]:
    return [{"metrics": dict(m), "warnings": []} for m in metrics]


def _samples(*, messages: bool = True, scaling: tuple[float, float] = (10_000.0, 15_000.0)) -> dict[str, Any]:
    """Medians: nginx 10 µs / 20 µs / 0.2 ms / 18 KiB; asgiproxy 40 / 100 / 1.0 / 36; gateway-run 12 / 23 / 0.6 / 17."""
    echo64 = {"nginx": 10.0, "asgiproxy": 40.0, "gateway-run": 12.0, "gateway-run+policies": 12.5}
    echo16 = {"nginx": 20.0, "asgiproxy": 100.0, "gateway-run": 23.0, "gateway-run+policies": 23.0}
    hs = {"nginx": 0.2, "asgiproxy": 1.0, "gateway-run": 0.6, "gateway-run+policies": 0.78}
    idle = {"nginx": 18.0, "asgiproxy": 36.0, "gateway-run": 17.0, "gateway-run+policies": 19.0}
    if messages:
        echo64["gateway-run+messages"], echo16["gateway-run+messages"] = 20.0, 60.0
        hs["gateway-run+messages"], idle["gateway-run+messages"] = 0.9, 31.0
    one, two = scaling
    return {
        # three rounds: the median is the middle value, the others straddle it
        "echo-64B": {p: _rounds({CPU: v * 0.9}, {CPU: v}, {CPU: v * 1.3}) for p, v in echo64.items()},
        "echo-16KiB": {p: _rounds({CPU: v}) for p, v in echo16.items()},
        "handshake": {p: _rounds({HS: v}) for p, v in hs.items()},
        "idle": {p: _rounds({"kib_per_conn@1000": v, "kib_per_conn@5000": v}) for p, v in idle.items()},
        "scaling": {
            "gateway-run x1": _rounds(
                {"messages_per_s": one, CPU: 50.0, "proxy_cpu_util": 0.98, "load_cores": 0.5, "other_cores": 0.0}
            ),
            "gateway-run x2": _rounds(
                {"messages_per_s": two, CPU: 52.0, "proxy_cpu_util": 1.3, "load_cores": 0.7, "other_cores": 0.1}
            ),
        },
    }


def _results(**kwargs: Any) -> dict[str, Any]:
    return aggregate.build(_samples(**kwargs), mode="full", settings={"rounds": 3, "idle_rounds": 2},
                           machine=MACHINE, paths={}, started="2026-12-01T00:00:00", seconds=1.0)  # fmt: skip


def _by_name(results: dict[str, Any]) -> dict[str, aggregate.Target]:
    return {t["target"]: t for t in results["targets"]}


def test_targets_are_issue_13_ratios_of_medians() -> None:
    """Each target reads its path's median against the reference the issue names, with its own limit."""
    t = _by_name(_results())
    expected = {
        "CPU/64 B echo, `gateway-run` / `nginx`": (1.2, True),
        "CPU/16 KiB echo, `gateway-run` / `nginx`": (1.15, False),
        "KiB/idle connection at 5,000, `gateway-run`": (17.0, True),
        "CPU/64 B echo, `gateway-run+messages` / `asgiproxy`": (0.5, True),
        "KiB/idle connection at 5,000, `gateway-run+messages`": (31.0, False),
        "CPU/handshake, `gateway-run` / `asgiproxy`": (0.6, True),
        "CPU/handshake, `gateway-run+policies` / `gateway-run`": (1.3, False),
    }
    for name, (value, met) in expected.items():
        assert t[name]["value"] == pytest.approx(value), name
        assert t[name]["met"] is met, name
        assert t[name]["issue"] == 13 and t[name]["op"] == "<="
    assert [t["issue"] for t in _results()["targets"]].count(14) == 1


def test_a_target_whose_path_is_missing_is_not_measured() -> None:
    """Without gateway-run+messages (another branch's path) its targets are None and the report says so."""
    results = _results(messages=False)
    t = _by_name(results)
    for name in ("CPU/64 B echo, `gateway-run+messages` / `asgiproxy`",
                 "KiB/idle connection at 5,000, `gateway-run+messages`"):  # fmt: skip
        assert t[name]["value"] is None and t[name]["met"] is None
    row = next(line for line in report.targets_table(results) if "`gateway-run+messages` / `asgiproxy`" in line)
    assert "not measured" in row and "| — |" in row


def test_scaling_rows_give_efficiency_cpu_ratio_and_core_ceiling() -> None:
    """2 workers at 1.5x one worker's rate: 0.75; the load side's 0.7 cores and other work's 0.1 leave 1.2 of 2
    for the 2 x 0.98 two workers would use."""
    rows = _results()["scaling"]
    assert [r["workers"] for r in rows] == [1, 2]
    one, two = rows
    assert one["efficiency"] == pytest.approx(1.0) and one["cpu_vs_one"] == pytest.approx(1.0)
    assert two["efficiency"] == pytest.approx(15_000 / 20_000)
    assert two["cpu_vs_one"] == pytest.approx(52 / 50)
    assert two["ceiling"] == pytest.approx(1.2 / 1.96)
    assert one["ceiling"] == pytest.approx(1.0)
    assert two["load_cores"] == pytest.approx(0.7) and two["proxy_cores"] == pytest.approx(1.3)


def test_scaling_target_is_an_at_least_target() -> None:
    """0.75 misses the 0.9 floor, 0.95 meets it (a lower-is-better comparison would invert both)."""
    name = aggregate.SCALING_TARGET
    low = _by_name(_results())[name]
    assert low["op"] == ">=" and low["met"] is False and low["value"] == pytest.approx(0.75)
    assert "0.70 cores" in low["note"] and "other work 0.10" in low["note"] and "at most 0.61" in low["note"]
    high = _by_name(_results(scaling=(10_000.0, 19_000.0)))[name]
    assert high["met"] is True and high["value"] == pytest.approx(0.95)


def test_unpinned_saturation_counts_other_work_on_the_machine() -> None:
    """Unpinned, the 2 cores are busy only once the proxy, the load side and other work fill 1.8 of them."""
    load = {"generator": 0.4, "upstream": 0.3}
    assert saturation_warnings(load, "0,1", 0.6) == []
    assert saturation_warnings(load, "0,1", 0.6, other=0.6) == [
        "every core busy (0.60 of them other work): throughput is a lower bound"
    ]


def test_issue_table_quotes_each_ratio_against_the_issue_reference() -> None:
    table = "\n".join(report.issue_table(_results()))
    run = next(line for line in table.splitlines() if line.startswith("| `gateway-run` |"))
    assert "12.0 (1.20× nginx)" in run and "23.0 (1.15× nginx)" in run  # noqa: RUF001
    assert "0.60 (0.60× asgiproxy)" in run and "17.0 (0.94× nginx)" in run  # noqa: RUF001
    messages = next(line for line in table.splitlines() if line.startswith("| `gateway-run+messages` |"))
    assert "20.0 (0.50× asgiproxy)" in messages  # noqa: RUF001
    policies = next(line for line in table.splitlines() if line.startswith("| `gateway-run+policies` |"))
    assert "0.78 (1.30× gateway-run)" in policies  # noqa: RUF001
    nginx = next(line for line in table.splitlines() if line.startswith("| `nginx` |"))
    assert "×" not in nginx  # noqa: RUF001


def test_markdown_has_the_issue_scaling_and_target_tables(tmp_path: Path) -> None:
    results = _results()
    text = report.markdown(results, chart_path=tmp_path / "results.png", docs=tmp_path / "docs" / "performance.md")
    for heading in ("| path | CPU µs / 64 B echo | CPU µs / 16 KiB echo | CPU ms / handshake | KiB / idle connection",
                    "| workers | echoes/s |", "| issue | target | value | limit | verdict |"):  # fmt: skip
        assert heading in text
    assert "kept 0.70 cores busy and other work on the machine 0.10" in text and "at most 0.61" in text
    assert "| 13 | CPU/64 B echo, `gateway-run` / `nginx` | 1.20 | ≤ 1.2 | met |" in text
    assert "≥ 0.9 | **not met**" in text


def test_chart_is_drawn_with_paths_or_scenarios_missing(tmp_path: Path) -> None:
    """A run of some paths, or of the scaling scenario alone, still gets its chart."""
    report.chart(_results(messages=False), tmp_path / "some-paths.png")
    scaling_only = _results()
    scaling_only["scenarios"] = {"scaling": scaling_only["scenarios"]["scaling"]}
    scaling_only["targets"] = aggregate.targets(scaling_only["scenarios"], 2)
    report.chart(scaling_only, tmp_path / "scaling-only.png")
    for name in ("some-paths.png", "scaling-only.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_idle_plan_stops_at_the_issue_level() -> None:
    """Paths stop at 5,000 but gateway-run and nginx (9,000); fastapi-proxy-lib ramps once."""
    paths = {p.name: p for p in PATHS}
    assert _idle_plan(paths["fastapi-proxy-lib"], FULL) == (1, (1000, 5000))
    assert _idle_plan(paths["asgiproxy"], FULL) == (2, (1000, 5000))
    assert _idle_plan(paths["gateway"], FULL) == (2, (1000, 5000))
    assert _idle_plan(paths["gateway-run"], FULL) == (2, (1000, 5000, 9000))
    assert _idle_plan(paths["nginx"], FULL) == (2, (1000, 5000, 9000))
    assert _idle_plan(paths["fastapi-proxy-lib"], QUICK) == (1, (50,))


def test_default_run_leaves_out_the_opt_in_paths() -> None:
    names = [p.name for p in by_name(None)]
    assert not OPT_IN & set(names) and "gateway-run" in names
    assert [p.name for p in by_name(["gateway-picows"])] == ["gateway-picows"]
    assert next(p for p in PATHS if p.name == "direct").scenarios == ("latency",)


def test_full_run_plan_fits_20_minutes_with_the_issue_13_paths() -> None:
    """The estimate (a model of the plan, not a timing) of the default paths plus the two issue-13 paths
    other branches add stays within the 20-minute budget."""
    paths = by_name(None)
    names = {p.name for p in paths}
    run = next(p for p in paths if p.name == "gateway-run")
    extra = [p for p in (run, run) if not {"gateway-run+messages", "gateway-run+policies"} <= names]
    assert estimate_seconds([*paths, *extra], FULL) <= 20 * 60
    assert estimate_seconds([*paths, *extra], FULL) > estimate_seconds(paths, FULL) or not extra


def test_instruction_counts_are_summed_per_thread_across_dumps(tmp_path: Path) -> None:
    """``bench.telemetry_instructions`` reads callgrind's per-thread dump files (``<prefix>.<dump>-<thread>``):
    each thread's totals added over dumps, the prefix's own file (no thread) and other files ignored."""
    from bench.telemetry_instructions import _thread_totals

    prefix = tmp_path / "callgrind-on"
    for name, total in (("callgrind-on.1-01", 2000), ("callgrind-on.1-02", 30), ("callgrind-on.2-01", 500)):
        (tmp_path / name).write_text(f"version: 1\ncmd: python\nevents: Ir\nsummary: {total}\nfn=x\n")
    (tmp_path / "callgrind-on").write_text("summary: 7\n")
    (tmp_path / "callgrind-off.1-01").write_text("summary: 9\n")
    assert _thread_totals(prefix) == {1: 2500, 2: 30}


def test_a_service_is_started_only_when_its_own_process_listens(tmp_path: Path) -> None:
    """Another process on the chosen port (a test's server, a path started at the same time) answers
    too: the bench measured that one. A service whose process does not listen is not started."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        service = Service("idle", [sys.executable, "-c", "import time; time.sleep(30)"], port=port,
                          log=tmp_path / "log")  # fmt: skip
        try:
            with pytest.raises(RuntimeError, match="nothing listens"):
                service.start(timeout=1)
        finally:
            service.stop()


def test_cache_simulation_events_are_summed_per_thread_and_weighed_into_cycles(tmp_path: Path) -> None:
    """``--cache-sim`` dumps name several events: each thread's are read by name and added over dumps, and the
    cycle estimate weighs a first-level miss or a mispredicted branch 10, a last-level miss 100."""
    from bench.telemetry_instructions import _thread_events, cache_per_handshake, estimated_cycles

    events = "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim"
    for name, summary in (
        ("callgrind-on.1-01", "1000 0 0 10 20 5 1 2 0 0 7 0 3"),
        ("callgrind-on.2-01", "500 0 0 0 10 0 0 1 0 0 0 0 0"),
        ("callgrind-on.1-02", "300 0 0 2 0 0 0 0 0 0 1 0 0"),
    ):
        (tmp_path / name).write_text(f"version: 1\n{events}\nsummary: {summary}\nfn=x\n")
    threads = _thread_events(tmp_path / "callgrind-on")
    assert threads[1]["Ir"] == 1500 and threads[1]["D1mr"] == 30 and threads[1]["DLmr"] == 3
    assert threads[2] == {**dict.fromkeys(events.split()[1:], 0), "Ir": 300, "I1mr": 2, "Bcm": 1}
    # main: 1500 + 10 * (10 + 30 + 5) + 100 * (1 + 3) + 10 * (7 + 3); thread 2: 300 + 10 * 2 + 10 * 1
    assert estimated_cycles(threads[1]) == 1500 + 450 + 400 + 100
    per = cache_per_handshake(tmp_path / "callgrind-on", 10)
    assert per["main_cycles"] == 245.0 and per["cycles"] == (2450 + 330) / 10
    assert per["D1mr"] == 3.0 and per["main_Bcm"] == 0.7 and per["Bcm"] == 0.8


def test_telemetry_overhead_splits_cpu_by_thread_against_off_whole(tmp_path: Path) -> None:
    """The loop and other-threads parts are what each adds over off's whole CPU per handshake in the same round
    (off has no other thread: a ratio to its zero would be meaningless), so the two add up to the whole's cost."""
    import argparse

    from bench.telemetry_overhead import MEASURES, _report

    def rounds(**values: list[float]) -> dict[str, list[float]]:
        return {measure: values.get(measure, [1.0, 1.0]) for measure in MEASURES}

    off = rounds(handshakes_cpu=[1000.0, 800.0], handshakes_loop=[1000.0, 800.0], handshakes_others=[0.0, 0.0])
    on = rounds(handshakes_cpu=[1100.0, 900.0], handshakes_loop=[1080.0, 880.0], handshakes_others=[20.0, 20.0])
    args = argparse.Namespace(rounds=2, seconds=1.0, conns=4, pin=True)
    costs = {"histogram_record_us": 1.0, "slot_increment_us": 0.1}
    result = _report({"off": off, "on": on}, {"spans": 0, "metric_exports": 0}, costs, args)["on"]
    assert result["handshakes_others"]["round_ratios"] == [1.02, 1.025]
    assert result["handshakes_loop"]["round_ratios"] == [1.08, 1.1]
    assert result["handshakes_cpu"]["cost_percent"] == pytest.approx(
        result["handshakes_loop"]["cost_percent"] + result["handshakes_others"]["cost_percent"], abs=0.01
    )


def test_thread_cpu_is_read_per_live_thread(tmp_path: Path) -> None:
    """Each live thread of a process is read, the main thread under the process id; a thread that ended is not."""
    import os
    import threading
    import time

    from bench.telemetry_overhead import thread_cpu_seconds

    ready, done = threading.Event(), threading.Event()

    def wait() -> None:
        ready.set()
        done.wait()

    worker = threading.Thread(target=wait)
    worker.start()
    ready.wait()
    during = thread_cpu_seconds(os.getpid())
    done.set()
    worker.join()
    # join() returns once the thread's Python state is gone; the kernel may list its task a moment longer.
    for _ in range(500):
        after = thread_cpu_seconds(os.getpid())
        if worker.native_id not in after:
            break
        time.sleep(0.01)
    assert os.getpid() in during and worker.native_id in during
    assert os.getpid() in after and worker.native_id not in after
    assert all(seconds >= 0 for seconds in during.values())
    assert thread_cpu_seconds(-1) == {}
