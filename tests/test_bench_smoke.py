"""The bench runs end to end in its quick mode and writes well-formed results (no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.nginx import nginx_binary
from bench.paths import PATHS, _redis_answers
from bench.runner import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
PER_PATH = ("echo-64B", "echo-16KiB", "latency", "handshake")

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--docs", str(out / "performance.md")],
        cwd=ROOT,
        check=True,
        timeout=400,
    )
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    assert "<!-- bench:begin -->" in (out / "performance.md").read_text()
    return data


def _numbers(metrics: dict[str, Any]) -> bool:
    return all(v is None or (isinstance(v, float | int) and math.isfinite(v)) for v in metrics.values())


def test_quick_results_are_well_formed(results: dict[str, Any]) -> None:
    """Every scenario has a sample per runnable path, with finite numbers and no failure."""
    assert results["schema"] == 1 and results["mode"] == "quick"
    assert set(results["scenarios"]) == set(SCENARIOS)
    runnable = [name for name, info in results["paths"].items() if info["skipped"] is None]
    assert {"direct", "asgiproxy", "fastapi-proxy-lib", "gateway", "gateway+policies"} <= set(runnable)
    for scenario in PER_PATH:
        by_path = results["scenarios"][scenario]["samples"]
        assert set(by_path) == set(runnable), scenario
        for path, samples in by_path.items():
            for sample in samples:
                assert _numbers(sample["metrics"]), (scenario, path)
                assert not [w for w in sample["warnings"] if w.startswith("failed")], (scenario, path)
                assert sample["metrics"]["errors"] == 0, (scenario, path)
    idle = results["scenarios"]["idle"]["summary"]
    assert set(idle) == set(runnable) - {"direct"}
    assert set(results["scenarios"]["scaling"]["summary"]) == {"gateway x1", "gateway x2"}
    assert all(t["met"] in (True, False, None) for t in results["targets"])


def test_only_uninstallable_peers_are_skipped(results: dict[str, Any]) -> None:
    """Python peers come with the bench extra; only nginx (a Debian package) may be missing, and the
    Redis-backed path when no Redis answers."""
    skipped = {name for name, info in results["paths"].items() if info["skipped"] is not None}
    assert skipped <= {"nginx"} | ({"gateway-run+policies"} if _redis_answers() is not None else set())
    assert set(results["paths"]) == {p.name for p in PATHS}


def test_quick_run_includes_nginx(results: dict[str, Any]) -> None:
    """nginx is measured when it is installed."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/install-nginx.sh)")
    assert "nginx" in results["scenarios"]["echo-64B"]["summary"]
