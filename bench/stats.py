"""Small statistics: medians with min-max over rounds, percentiles, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypedDict


class Spread(TypedDict):
    median: float
    min: float
    max: float
    n: int


def spread(values: Sequence[float | None]) -> Spread | None:
    """Median, min and max of the values that are not None (None if there are none)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return {"median": statistics.median(kept), "min": min(kept), "max": max(kept), "n": len(kept)}


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of already sorted values."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


__all__ = ["Spread", "percentile", "ratio", "spread"]
