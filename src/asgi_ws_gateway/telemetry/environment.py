"""The ``OTEL_*`` variables the gateway's own providers read, checked before they are built.

The SDK takes a value it cannot parse as its default (logging a traceback) and raises a bare
``ValueError`` (exit 1, no variable named) for one it can parse but refuses, such as a schedule
delay of 0 or a negative limit. It drops an ``OTEL_EXPORTER_OTLP_HEADERS`` entry it cannot parse
(the collector's API key, often) and an ``OTEL_RESOURCE_ATTRIBUTES`` entry without ``=``, printing
each, credential and all, where no redaction reaches. A gateway that exports must start as
configured or not at all, so each problem is a start-up ``ConfigError`` naming the variable, and
never quoting a header's value.

Each number has a ceiling too, which the SDK lacks: a schedule delay or export interval past
``threading.TIMEOUT_MAX`` killed the export thread at start-up (one traceback on stderr, then not
one span or point for the life of the process), an OTLP timeout of ``1e10`` s made every gRPC export
fail, and a count limit past ``sys.maxsize`` made every span with an event raise. The ceilings are
what no sane setting exceeds: durations a day, queues :data:`MAX_QUEUE_SIZE` items, and so on.

Text has ceilings as well (2026-12-05): an endpoint :data:`MAX_ENDPOINT` characters, the headers and
the resource attributes :data:`MAX_LIST` (each export carries them: a megabyte of headers was a
megabyte more per batch, and a gRPC collector refuses metadata past its own limit, every export
failing), and a problem quotes at most 40 characters of what it found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import unquote

from .exporter_files import exporter_file_problems

Signal = Literal["traces", "metrics", "logs"]

DAY_MS = 86_400_000
"""The longest ``OTEL_BSP_*``, ``OTEL_BLRP_*`` and ``OTEL_METRIC_EXPORT_*`` duration: a day, in milliseconds."""
DAY_SECONDS = 86_400.0
"""The longest ``OTEL_EXPORTER_OTLP_*TIMEOUT``: a day, in seconds."""
MAX_QUEUE_SIZE = 100_000
"""The most spans or log records a batch processor may hold: about 5 KB each, 500 MB with the collector down."""
MAX_COUNT_LIMIT = 10_000
"""The highest attribute, event or link count limit (the gateway's spans carry a few dozen)."""
MAX_LENGTH_LIMIT = 1_048_576
"""The highest attribute value length limit, in characters (a collector takes 4 MiB messages by default)."""

MAX_ENDPOINT = 2048
"""The longest ``OTEL_EXPORTER_OTLP_*ENDPOINT``: a URL, as the configuration's (``config.limits.MAX_URL``)."""
MAX_LIST = 65_536
"""The longest ``OTEL_EXPORTER_OTLP_*HEADERS`` and ``OTEL_RESOURCE_ATTRIBUTES``, in characters."""
MAX_SERVICE_NAME = 256
"""The longest ``OTEL_SERVICE_NAME``: a name on every span, point and record."""

_Range = tuple[int, int, str]  # the least value the SDK takes, the most a sane setting needs, the unit
_MS: _Range = (1, DAY_MS, " ms (a day)")
_SIZE: _Range = (1, MAX_QUEUE_SIZE, "")
_COUNT: _Range = (0, MAX_COUNT_LIMIT, "")
_LENGTH: _Range = (0, MAX_LENGTH_LIMIT, " characters")
_ATTRIBUTE_LIMITS = (("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", _LENGTH), ("OTEL_ATTRIBUTE_COUNT_LIMIT", _COUNT))
_WHOLE: dict[Signal, tuple[tuple[str, _Range], ...]] = {
    "traces": (
        ("OTEL_BSP_SCHEDULE_DELAY", _MS), ("OTEL_BSP_MAX_QUEUE_SIZE", _SIZE),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _SIZE), ("OTEL_BSP_EXPORT_TIMEOUT", _MS), *_ATTRIBUTE_LIMITS,
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", _LENGTH), ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", _COUNT),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", _COUNT), ("OTEL_SPAN_LINK_COUNT_LIMIT", _COUNT),
        ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", _COUNT), ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", _COUNT),
    ),
    "metrics": (("OTEL_METRIC_EXPORT_INTERVAL", _MS), ("OTEL_METRIC_EXPORT_TIMEOUT", _MS)),
    "logs": (
        ("OTEL_BLRP_SCHEDULE_DELAY", _MS), ("OTEL_BLRP_MAX_QUEUE_SIZE", _SIZE),
        ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", _SIZE), ("OTEL_BLRP_EXPORT_TIMEOUT", _MS), *_ATTRIBUTE_LIMITS,
        ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", _LENGTH), ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", _COUNT),
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


PURE_PYTHON_VARIABLE = "ASGI_WS_GATEWAY_PURE_PYTHON"
"""A yes (:data:`PURE_PYTHON_YES`): the optional C modules are not used (:mod:`.native`)."""
PURE_PYTHON_YES = ("1", "true", "yes", "on")
PURE_PYTHON_NO = ("", "0", "false", "no", "off")
"""With :data:`PURE_PYTHON_YES`, what :data:`PURE_PYTHON_VARIABLE` may be (stripped, case-blind; unset is a no)."""


def pure_python_problems(environ: Mapping[str, str]) -> list[str]:
    """:data:`PURE_PYTHON_VARIABLE` set to neither a yes nor a no: ``ture`` left the C encoder on without a word."""
    text = environ.get(PURE_PYTHON_VARIABLE, "")
    if text.strip().lower() in (*PURE_PYTHON_YES, *PURE_PYTHON_NO):
        return []
    return [f"{PURE_PYTHON_VARIABLE}: {_shown(text)} is not supported (1, true, yes or on; 0, false, no or off)"]


def environment_problems(signals: Iterable[Signal], environ: Mapping[str, str]) -> list[str]:
    """``VARIABLE: what is wrong`` for each variable read for ``signals`` (numbers, OTLP headers, resource
    attributes) that the SDK would not take as written."""
    problems: list[str] = []
    exported = False
    for signal in signals:
        exported = True
        values: dict[str, int] = {}
        for name, (least, most, unit) in _WHOLE[signal]:
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                values[name] = int(text)
            except ValueError:
                problems.append(f"{name}: {_shown(text)} is not a whole number")
                continue
            if values[name] < least:
                problems.append(f"{name}: {_number(values[name])} is below {least}")
            elif values[name] > most:
                problems.append(f"{name}: {_number(values[name])} is above {most}{unit}")
        prefix = _BATCHES.get(signal)
        if prefix is not None:
            batch = values.get(f"{prefix}_MAX_EXPORT_BATCH_SIZE")
            holds = values.get(f"{prefix}_MAX_QUEUE_SIZE", 2048)  # the SDK's default queue
            if batch is not None and batch > holds:
                problems.append(f"{prefix}_MAX_EXPORT_BATCH_SIZE: {batch} is more than the queue holds ({holds})")
        for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"):
            text = environ.get(name, "").strip()
            if text and (problem := _timeout_problem(text)):
                problems.append(f"{name}: {problem}")
        if signal == "traces":
            problems += _sampler_problems(environ)
        if signal == "metrics":
            problems += _spelled_problems(environ, "OTEL_METRICS_EXEMPLAR_FILTER", _EXEMPLAR_FILTERS, case_blind=False)
        for name in ("OTEL_EXPORTER_OTLP_INSECURE", f"OTEL_EXPORTER_OTLP_{signal.upper()}_INSECURE"):
            problems += _spelled_problems(environ, name, _BOOLEANS)
        problems += _length_problems(
            environ,
            (f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", MAX_ENDPOINT),
            (f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS", MAX_LIST),
        )
        problems += _header_problems(signal, environ)
        problems += _endpoint_problems(signal, environ)
        problems += exporter_file_problems(signal, environ)
    if exported:
        problems += _length_problems(
            environ,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", MAX_ENDPOINT),
            ("OTEL_EXPORTER_OTLP_HEADERS", MAX_LIST),
            ("OTEL_RESOURCE_ATTRIBUTES", MAX_LIST),
            ("OTEL_SERVICE_NAME", MAX_SERVICE_NAME),
        )
        problems += _resource_problems(environ)
    return list(dict.fromkeys(problems))  # OTEL_EXPORTER_OTLP_TIMEOUT once, whatever the signals


def _length_problems(environ: Mapping[str, str], *limits: tuple[str, int]) -> list[str]:
    """Each variable of ``limits`` longer than its ceiling (not quoted: headers hold credentials)."""
    return [
        f"{name}: {len(environ[name]):,} characters, more than {most:,}"
        for name, most in limits
        if len(environ.get(name, "")) > most
    ]


def _shown(text: str) -> str:
    """A variable's text in a problem: quoted, at most 40 characters of it."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _number(value: int) -> str:
    """A whole number in a problem: as written up to 20 digits, else how many digits it has."""
    digits = str(value)
    return digits if len(digits) <= 20 else f"a number of {len(digits.lstrip('-'))} digits"


_SIGNAL_NAMES = ("TRACES", "METRICS", "LOGS")


def header_values(environ: Mapping[str, str]) -> list[str]:
    """The values of every ``OTEL_EXPORTER_OTLP_HEADERS`` and ``OTEL_EXPORTER_OTLP_{SIGNAL}_HEADERS``
    entry, percent-decoded as the exporters send them: the collector's credentials, which the log
    redaction is given (a collector's error may quote one under a name no pattern knows)."""
    names = ["OTEL_EXPORTER_OTLP_HEADERS", *(f"OTEL_EXPORTER_OTLP_{kind}_HEADERS" for kind in _SIGNAL_NAMES)]
    entries = (entry for name in names for entry in _HEADER_DELIMITER.split(environ.get(name, "")))
    return [unquote(value.strip()) for entry in entries if (value := entry.partition("=")[2].strip())]


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


def _timeout_problem(text: str) -> str | None:
    """What is wrong with an OTLP exporter's timeout (seconds, a float), if anything."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        return f"{_shown(text)} is not a positive number"
    if value > DAY_SECONDS:  # 1e10 made every gRPC export fail at once with DEADLINE_EXCEEDED
        return f"{text if len(text) <= 40 else _shown(text)} is above {DAY_SECONDS:g} seconds (a day)"
    return None


_BOOLEANS = ("true", "false")
"""What the SDK reads in ``OTEL_SDK_DISABLED`` and ``OTEL_EXPORTER_OTLP_*INSECURE`` (case-blind): another
value (``1``, ``yes``) it took as ``false`` without a word: exporting, or TLS, where the operator asked otherwise."""
_EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
"""``OTEL_METRICS_EXEMPLAR_FILTER``'s values (exactly): another was a bare ``ValueError`` naming no variable."""


def _spelled_problems(
    environ: Mapping[str, str], name: str, values: tuple[str, ...], *, case_blind: bool = True
) -> list[str]:
    """``name`` set to none of ``values`` (as the SDK compares them: case-blind and stripped, or exactly)."""
    text = environ.get(name)
    if text is None or (text.strip().lower() if case_blind else text) in values:
        return []
    return [f"{name}: {_shown(text)} is not one of {', '.join(values)}"]


def exporter_problems(signals: Iterable[Signal], environ: Mapping[str, str]) -> list[str]:
    """``OTEL_SDK_DISABLED``, and ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` for ``signals`` (those the gateway
    would export itself, with no provider given): the gateway's own exporters are OTLP, so an entry
    other than ``otlp`` or ``none`` (``console``, ``otlp_proto_http``, a typo) was ignored without a word,
    OTLP exported anyway when an endpoint was set and nothing otherwise."""
    problems = _spelled_problems(environ, "OTEL_SDK_DISABLED", _BOOLEANS)
    for signal in signals:
        name = f"OTEL_{signal.upper()}_EXPORTER"
        entries = [e.strip().lower() for e in environ.get(name, "").split(",") if e.strip()]
        others = [entry for entry in entries if entry not in ("otlp", "none")]
        if others:
            problems.append(
                f"{name}: {_shown(others[0])} is not supported by the gateway's own exporters (otlp or none; "
                "another exporter needs a provider of the application's own)"
            )
    return problems


_SAMPLERS = (
    "always_on", "always_off", "parentbased_always_on", "parentbased_always_off", "traceidratio",
    "parentbased_traceidratio",
)  # fmt: skip
"""The samplers the SDK's ``TracerProvider`` takes from ``OTEL_TRACES_SAMPLER``: another is its default, warned."""


def _sampler_problems(environ: Mapping[str, str]) -> list[str]:
    """A sampler the SDK does not know, or a ratio it cannot take: either way it samples every trace
    (``parentbased_always_on``, or a ratio of 1.0), with one warning, where the operator asked for fewer."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "")
    if not sampler:
        return []
    if sampler.lower() not in _SAMPLERS:  # as the SDK reads it: case-blind, not stripped
        return [f"OTEL_TRACES_SAMPLER: {_shown(sampler)} is not supported ({', '.join(_SAMPLERS)})"]
    if not sampler.lower().endswith("traceidratio"):
        return []
    text = environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    if not text:
        return []  # 1.0, as the specification has it (the SDK warns, and takes 1.0)
    try:
        ratio = float(text)
    except ValueError:
        ratio = math.nan
    if not 0 <= ratio <= 1:
        return [f"OTEL_TRACES_SAMPLER_ARG: {_shown(text)} is not a ratio from 0 to 1 (what {sampler} samples)"]
    return []


__all__ = [
    "DAY_MS",
    "DAY_SECONDS",
    "MAX_COUNT_LIMIT",
    "MAX_ENDPOINT",
    "MAX_LENGTH_LIMIT",
    "MAX_LIST",
    "MAX_QUEUE_SIZE",
    "MAX_SERVICE_NAME",
    "PURE_PYTHON_NO",
    "PURE_PYTHON_VARIABLE",
    "PURE_PYTHON_YES",
    "Signal",
    "environment_problems",
    "exporter_problems",
    "header_values",
    "pure_python_problems",
]
