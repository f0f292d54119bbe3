"""The numeric ``OTEL_*`` variables the gateway's own providers read, checked before they are built.

The SDK takes a value it cannot parse as its default (logging a traceback) and raises a bare
``ValueError`` (exit 1, no variable named) for one it can parse but refuses, such as a schedule
delay of 0 or a negative limit. A gateway that exports must start as configured or not at all, so
each problem is a start-up ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

Signal = Literal["traces", "metrics", "logs"]

_LIMITS = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)  # fmt: skip
_WHOLE: dict[Signal, tuple[tuple[str, int], ...]] = {  # (variable, the least value the SDK takes)
    "traces": (
        ("OTEL_BSP_SCHEDULE_DELAY", 1), ("OTEL_BSP_MAX_QUEUE_SIZE", 1), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1),
        ("OTEL_BSP_EXPORT_TIMEOUT", 1), *((name, 0) for name in _LIMITS),
    ),
    "metrics": (("OTEL_METRIC_EXPORT_INTERVAL", 1), ("OTEL_METRIC_EXPORT_TIMEOUT", 1)),
    "logs": (
        ("OTEL_BLRP_SCHEDULE_DELAY", 1), ("OTEL_BLRP_MAX_QUEUE_SIZE", 1), ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 1),
        ("OTEL_BLRP_EXPORT_TIMEOUT", 1),
    ),
}  # fmt: skip
_BATCHES = {"traces": "OTEL_BSP", "logs": "OTEL_BLRP"}


def environment_problems(signals: Iterable[Signal], environ: Mapping[str, str]) -> list[str]:
    """``VARIABLE: what is wrong`` for each numeric variable set for ``signals`` that the SDK would not take."""
    problems: list[str] = []
    for signal in signals:
        values: dict[str, int] = {}
        for name, least in _WHOLE[signal]:
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                values[name] = int(text)
            except ValueError:
                problems.append(f"{name}: {text!r} is not a whole number")
                continue
            if values[name] < least:
                problems.append(f"{name}: {values[name]} is below {least}")
        prefix = _BATCHES.get(signal)
        if prefix is not None:
            batch = values.get(f"{prefix}_MAX_EXPORT_BATCH_SIZE")
            holds = values.get(f"{prefix}_MAX_QUEUE_SIZE", 2048)  # the SDK's default queue
            if batch is not None and batch > holds:
                problems.append(f"{prefix}_MAX_EXPORT_BATCH_SIZE: {batch} is more than the queue holds ({holds})")
        for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"):
            text = environ.get(name, "").strip()
            if text and not _positive_number(text):
                problems.append(f"{name}: {text!r} is not a positive number")
    return list(dict.fromkeys(problems))  # OTEL_EXPORTER_OTLP_TIMEOUT once, whatever the signals


def _positive_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


__all__ = ["Signal", "environment_problems"]
