"""The SDK's per-attribute warnings under ``OTEL_*_LIMIT`` variables are throttled, not one per handshake.

With a value length limit set, ``opentelemetry.attributes`` logged "String attribute value exceeds max
length" for every value it cut: an unauthenticated client with a long User-Agent made one WARNING line
per handshake, refused ones too (and 28 a connection at a limit of 0), past every throttle of the
gateway's own. Now the first line of each kind is written at once, then one per 10 s with how many,
on the lean spans' path and the SDK's (``ASGI_WS_GATEWAY_SPANS=sdk``) alike, and for exported log
records; the spans and records still arrive, cut to the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, ReceivedLog, ReceivedSpan
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

LOGGERS = ("opentelemetry.attributes", "asgi_ws_gateway.telemetry.lean_spans")
"""Where the attribute limits warn (the SDK's cleaning, the lean span's "dict is full")."""
INTERVAL = 10.0
"""Seconds between two lines of one kind (the first is at once)."""
HANDSHAKES = 40
LONG_AGENT = "u" * 4000


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in LOGGERS:
            self.lines.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[_Recorder]:
    """The WARNING lines of :data:`LOGGERS`, as a handler on the root logger sees them; no throttle left
    over from another test (they are process-wide) before or after."""
    _remove_throttles()
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    try:
        yield recorder
    finally:
        logging.getLogger().removeHandler(recorder)
        _remove_throttles()


def _remove_throttles() -> None:
    for name in LOGGERS:
        found = logging.getLogger(name)
        for kept in [f for f in found.filters if type(f).__name__ == "RepeatFilter"]:
            found.removeFilter(kept)


def _assert_throttled(lines: list[str], kind: str, started: float) -> None:
    """Every line is of ``kind``; the first came at once, then at most one per interval."""
    assert lines, "no warning at all: the limit was not applied"
    assert all(line.startswith(kind) for line in lines), lines[:3]
    allowed = 2 + int((time.monotonic() - started) / INTERVAL)  # the first, and one per interval begun since
    assert len(lines) <= allowed, f"{len(lines)} lines, e.g. {lines[:3]}"


def _spans(otlp: OtlpReceiver, name: str) -> Callable[[], list[ReceivedSpan]]:
    return lambda: [span for span in otlp.spans() if span.name == name]


def _collect(get: Callable[[], list[Any]], count: int) -> list[Any]:
    """What ``get`` returns once it holds ``count`` items, or after 20 s (run in a thread: it polls)."""
    deadline = time.monotonic() + 20.0
    while len(found := get()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


CASES = {
    "value-length": ({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100"}, "String attribute value exceeds max length of 100"),
    "span-value-length": (
        {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100"}, "String attribute value exceeds max length of 100",
    ),
    "value-length-0": ({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "0"}, "String attribute value exceeds max length of 0"),
    "span-count": ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3"}, "Attributes dict is full"),
}  # fmt: skip


@pytest.mark.parametrize("spans", ["gateway", "sdk"])
@pytest.mark.parametrize(("variables", "kind"), CASES.values(), ids=CASES.keys())
async def test_refused_handshakes_with_a_long_user_agent_make_a_bounded_number_of_warnings(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, warnings: _Recorder,
    spans: str, variables: dict[str, str], kind: str,
) -> None:  # fmt: skip
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        monkeypatch.setenv("ASGI_WS_GATEWAY_SPANS", spans)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            started = time.monotonic()
            for _ in range(HANDSHAKES):
                status, _, _ = await expect_status(server.url("/ws/guarded"), user_agent_header=LONG_AGENT)
                assert status == 403
            refused = await asyncio.to_thread(_collect, _spans(otlp, "GET /ws/guarded"), HANDSHAKES)
    _assert_throttled(warnings.lines, kind, started)
    assert len(refused) == HANDSHAKES
    _assert_within_limits(refused, variables)


def _assert_within_limits(spans: list[ReceivedSpan], variables: dict[str, str]) -> None:
    for span in spans:
        if "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in variables:
            assert len(span.attributes) == int(variables["OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"])
        else:
            (limit,) = map(int, variables.values())
            assert span.attributes[n.USER_AGENT] == LONG_AGENT[:limit]
            assert all(len(v) <= limit for v in span.attributes.values() if isinstance(v, str))


@pytest.mark.parametrize("spans", ["gateway", "sdk"])
async def test_relayed_connections_at_a_length_limit_of_0_make_a_bounded_number_of_warnings(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, warnings: _Recorder, spans: str
) -> None:
    """Every string attribute is cut at 0: 28 lines a connection, before."""
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        monkeypatch.setenv("ASGI_WS_GATEWAY_SPANS", spans)
        monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "0")
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            started = time.monotonic()
            for i in range(20):
                async with await connect(server.url("/ws/echo"), user_agent_header=LONG_AGENT) as ws:
                    await ws.send(f"m{i}")
                    assert await ws.recv() == f"m{i}"
            closed = await asyncio.to_thread(_collect, _spans(otlp, "connection echo"), 20)
    _assert_throttled(warnings.lines, "String attribute value exceeds max length of 0", started)
    assert len(closed) == 20
    assert all(v == "" for span in closed for v in span.attributes.values() if isinstance(v, str))


async def test_exported_access_records_with_a_long_path_make_a_bounded_number_of_warnings(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, warnings: _Recorder
) -> None:
    """``export_logs``: the access records' attributes meet ``OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT``."""
    path = "/ws/headers/" + "p" * 2000
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "32")
        with UvicornServer(ProbedGateway(telemetry_config(upstream, export_logs=True))) as server:
            started = time.monotonic()
            for _ in range(HANDSHAKES):
                async with await connect(server.url(path)):
                    pass
            records: list[ReceivedLog] = await asyncio.to_thread(_collect, otlp.logs, HANDSHAKES)
    _assert_throttled(warnings.lines, "String attribute value exceeds max length of 32", started)
    assert len(records) == HANDSHAKES
    assert all(record.attributes[n.URL_PATH] == path[:32] for record in records)


def test_the_filter_writes_the_first_at_once_then_one_line_per_interval_with_how_many() -> None:
    from asgi_ws_gateway.log_throttle import RepeatFilter

    now = [0.0]
    throttle = RepeatFilter(interval=10.0, clock=lambda: now[0])

    def warn(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord | None:
        record = logging.LogRecord("opentelemetry.attributes", level, __file__, 1, msg, args, None)
        return record if throttle.filter(record) else None

    cut = "String attribute value exceeds max length of %d, truncating."
    first = warn(cut, 100)
    assert first is not None and first.getMessage() == "String attribute value exceeds max length of 100, truncating."
    assert [warn(cut, 100) for _ in range(5)] == [None] * 5
    other = warn(
        "Attributes dict is full. Dropping the oldest key-value pair from attributes to make space for the new"
        " key-value pair."
    )
    assert other is not None  # another kind: its own count
    assert warn("%s", "debug lines pass", level=logging.DEBUG) is not None
    now[0] = 10.0
    later = warn(cut, 100)
    assert later is not None
    assert (
        later.getMessage()
        == "String attribute value exceeds max length of 100, truncating. (5 more since the last such line)"
    )
    assert warn(cut, 100) is None
