"""The soak's verdict logic (pure): slopes and what counts as flat. The soak itself is ``python -m bench.soak``."""

from __future__ import annotations

import pytest

from bench.soak import Sample, flatness, slope


def _samples(rss_mib: list[float], *, fds: int = 1000, tasks: int = 2000, leases: int = 600) -> list[Sample]:
    return [
        Sample(t=10.0 * i, rss=[int(m * 2**20)], fds=[fds], tasks=[tasks], redis_keys=1, leases=leases)
        for i, m in enumerate(rss_mib)
    ]


def test_slope_is_least_squares() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 1), (1, 0), (2, 1), (3, 0)]) == pytest.approx(-0.2)
    assert slope([(5, 1)]) == 0.0
    assert slope([(5, 1), (5, 9)]) == 0.0


def test_steady_series_are_flat_after_warm_up() -> None:
    """A rise during the warm-up (first 20%) and noise afterwards do not count as a leak."""
    rss = [100, 150, 200, 200.5, 199.8, 200.2, 200.1, 199.9, 200.3, 200.0]
    report = flatness(_samples(rss))
    assert all(row["flat"] for row in report.values()), report
    assert report["rss_mib"]["slope_per_min"] == pytest.approx(0.0, abs=0.2)


def test_a_steady_leak_is_not_flat() -> None:
    """1 MiB per sample (6 MiB/min) on a 200 MiB process drifts past 5% + 2 MiB over the window."""
    report = flatness(_samples([200.0 + i for i in range(20)]))
    assert report["rss_mib"]["flat"] is False
    assert report["rss_mib"]["slope_per_min"] == pytest.approx(6.0)
    assert report["fds"]["flat"] is True


def test_leaked_leases_are_not_flat() -> None:
    samples = _samples([200.0] * 20)
    for i, sample in enumerate(samples):
        sample.leases = 600 + 5 * i
    assert flatness(samples)["redis_leases"]["flat"] is False
