"""The bench runs end to end in its quick mode (``--smoke``: its shortest windows) and writes well-formed
results (no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.nginx import nginx_binary
from bench.paths import PATHS, _redis_answers, by_name
from bench.runner import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
PER_PATH = ("echo-64B", "echo-16KiB", "latency", "handshake")

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        # --smoke: the quick run's every path and scenario, with shorter windows and fewer idle connections
        [sys.executable, "-m", "bench", "--quick", "--smoke", "--out", str(out), "--docs", str(out / "performance.md")],
        cwd=ROOT,
        check=True,
        timeout=400,
    )
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    docs = (out / "performance.md").read_text()
    assert "<!-- bench:begin -->" in docs and "| issue | target | value | limit | verdict |" in docs
    return data


def _numbers(metrics: dict[str, Any]) -> bool:
    return all(v is None or (isinstance(v, float | int) and math.isfinite(v)) for v in metrics.values())


def test_quick_results_are_well_formed(results: dict[str, Any]) -> None:
    """Every scenario has a sample per runnable path that runs it, with finite numbers and no failure."""
    assert results["schema"] == 1 and results["mode"] == "quick"
    assert set(results["scenarios"]) == set(SCENARIOS)
    runnable = [name for name, info in results["paths"].items() if info["skipped"] is None]
    assert {"direct", "asgiproxy", "fastapi-proxy-lib", "gateway", "gateway-run"} <= set(runnable)
    specs = {p.name: p for p in PATHS}
    for scenario in PER_PATH:
        by_path = results["scenarios"][scenario]["samples"]
        wanted = {n for n in runnable if scenario in (specs[n].scenarios or PER_PATH)}
        assert set(by_path) == wanted, scenario
        for path, samples in by_path.items():
            for sample in samples:
                assert _numbers(sample["metrics"]), (scenario, path)
                assert not [w for w in sample["warnings"] if w.startswith("failed")], (scenario, path)
                assert sample["metrics"]["errors"] == 0, (scenario, path)
    idle = results["scenarios"]["idle"]["summary"]
    assert set(idle) == set(runnable) - {"direct"}
    level = max(results["settings"]["timing"]["idle_levels"])  # ramped on the proxies the rounds started
    for path, samples in results["scenarios"]["idle"]["samples"].items():
        for sample in samples:
            assert sample["metrics"].get(f"open@{level}") == level, (path, sample)
            assert not sample["warnings"], (path, sample)
    assert set(results["scenarios"]["scaling"]["summary"]) == {"gateway-run x1", "gateway-run x2"}
    assert all(t["met"] in (True, False, None) for t in results["targets"])
    assert {t["issue"] for t in results["targets"]} == {13, 14}


def test_scaling_records_what_the_cores_allowed(results: dict[str, Any]) -> None:
    """Per worker count: echoes/s, CPU per echo, the ratios to one worker, and the cores the load side used."""
    rows = results["scaling"]
    assert [row["workers"] for row in rows] == [1, 2]
    why = results["scenarios"]["scaling"]["warnings"]  # a figure the bench could not measure says why here
    for row in rows:
        assert all(value is not None and value >= 0 for value in row.values()), (row, why)
        assert row["messages_per_s"] and row["proxy_cpu_us_per_message"] and row["efficiency"], (row, why)
    assert results["machine"]["cores"] >= 1


def test_only_uninstallable_peers_are_skipped(results: dict[str, Any]) -> None:
    """Python peers come with the bench extra; only nginx (a Debian package) may be missing, and the
    Redis-backed path when no Redis answers."""
    skipped = {name for name, info in results["paths"].items() if info["skipped"] is not None}
    on_redis = {"gateway-run+policies", "gateway-run+policies-fresh"}
    assert skipped <= {"nginx"} | (on_redis if _redis_answers() is not None else set())
    assert set(results["paths"]) == {p.name for p in by_name(None)}


def test_quick_run_includes_nginx(results: dict[str, Any]) -> None:
    """nginx is measured when it is installed."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/install-nginx.sh)")
    assert "nginx" in results["scenarios"]["echo-64B"]["summary"]
