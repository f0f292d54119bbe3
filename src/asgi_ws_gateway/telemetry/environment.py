"""The ``OTEL_*`` variables the gateway's own providers read, checked before they are built.

The SDK takes a value it cannot parse as its default (logging a traceback) and raises a bare
``ValueError`` (exit 1, no variable named) for one it can parse but refuses, such as a schedule
delay of 0 or a negative limit. It drops an ``OTEL_EXPORTER_OTLP_HEADERS`` entry it cannot parse
(the collector's API key, often) and an ``OTEL_RESOURCE_ATTRIBUTES`` entry without ``=``, printing
each, credential and all, where no redaction reaches. A gateway that exports must start as
configured or not at all, so each problem is a start-up ``ConfigError`` naming the variable, and
never quoting a header's value.
"""

from __future__ import annotations

import math
import re
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
# What the OTLP exporters' parser (opentelemetry.util.re.parse_env_headers, liberal) takes: a header
# name, "=", a value of printable ASCII (URL-encoded or not) without "," ";" "/" or DEL.
_HEADER_ENTRY = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)
_HEADER_DELIMITER = re.compile(r"[ \t]*,[ \t]*")


def environment_problems(signals: Iterable[Signal], environ: Mapping[str, str]) -> list[str]:
    """``VARIABLE: what is wrong`` for each variable read for ``signals`` (numbers, OTLP headers, resource
    attributes) that the SDK would not take as written."""
    problems: list[str] = []
    exported = False
    for signal in signals:
        exported = True
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
        problems += _header_problems(signal, environ)
        problems += _endpoint_problems(signal, environ)
    if exported:
        problems += _resource_problems(environ)
    return list(dict.fromkeys(problems))  # OTEL_EXPORTER_OTLP_TIMEOUT once, whatever the signals


def _header_problems(signal: Signal, environ: Mapping[str, str]) -> list[str]:
    """The entries of the headers variable ``signal``'s exporter reads that its parser would drop,
    by number: the text is not shown, it may hold a credential (``x-api-key:KEY``, ``api-key KEY``)."""
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS"
    name = specific if environ.get(specific) else "OTEL_EXPORTER_OTLP_HEADERS"
    entries = _HEADER_DELIMITER.split(environ.get(name, ""))
    bad = [str(i) for i, entry in enumerate(entries, 1) if entry and not _HEADER_ENTRY.fullmatch(entry.strip())]
    if not bad:
        return []
    return [
        f"{name}: entry {', '.join(bad)} of {len(entries)} is not name=value (a header name, '=', a value of "
        "printable ASCII without a comma, semicolon, quote or backslash: URL-encode those); not shown: it may "
        "hold a credential"
    ]


def _endpoint_problems(signal: Signal, environ: Mapping[str, str]) -> list[str]:
    """An endpoint with a user name or password: the gRPC exporter prints it without its scheme in
    every failed export (``exporting metrics to user:password@host``), which no redaction can tell
    from text, and cannot resolve it; a credential goes in the headers variable instead."""
    found = []
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        text = environ.get(name, "").strip()
        authority = (text.partition("://")[2] if "://" in text else text).split("/", 1)[0].split("?", 1)[0]
        if "@" in authority:
            found.append(
                f"{name}: must not carry credentials (user:password@): send them with "
                "OTEL_EXPORTER_OTLP_HEADERS (authorization=Basic%20...)"
            )
    return found


def _resource_problems(environ: Mapping[str, str]) -> list[str]:
    """Entries of ``OTEL_RESOURCE_ATTRIBUTES`` without ``=``, which the SDK drops (a ``service.name``
    meant, a ``;`` for a ``,``)."""
    entries = environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    bad = [str(i) for i, entry in enumerate(entries, 1) if entry.strip() and "=" not in entry]
    if not bad:
        return []
    return [f"OTEL_RESOURCE_ATTRIBUTES: entry {', '.join(bad)} of {len(entries)} is not key=value"]


def _positive_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


__all__ = ["Signal", "environment_problems"]
