"""A collector that keeps failing costs the gateway's log a line per kind of failure and 10 s, not per batch.

Real ``asgi-ws-gateway run`` processes exporting traces and metrics over OTLP: over HTTP to a real
collector answering 503 (then recovering), over gRPC to a port where nothing listens. Before, the SDK
and its exporters logged an ERROR per failed batch and signal (a span batch every 100 ms, metrics
every 200 ms here: dozens of lines in 3 s, thousands through an outage); now the first line of each
kind at once, then at most one per 10 s saying how many it stands for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.log_throttle import RepeatFilter, by_text_but_numbers
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver, Protocol
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
HANDSHAKES = 36
FAILURE = re.compile(r"Failed to export|Transient error|Exception while exporting|Queue full|timed out")
"""What the SDK (1.45) and its OTLP exporters log per failed batch, retry or timeout."""
WINDOW = 10.0  # RepeatFilter's interval, seconds


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture
def unreachable() -> Iterator[int]:
    """A port bound and not listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _start(tmp: Path, upstream: UpstreamServer, endpoint: str, protocol: Protocol) -> ServerProcess:
    config = write_config(tmp, build_config(upstream, path="/echo", telemetry={}))
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "failure-lines-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",  # seconds: a retry's backoff outlasts it, so an ERROR per batch
    }
    return ready_server(lambda p: [*RUN, str(config), "--port", str(p)], env=environ)


async def _handshakes(server: ServerProcess) -> None:
    """A few dozen handshakes over about 3 s: a span batch per 100 ms, a metric export per 200 ms."""
    for _ in range(HANDSHAKES):
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        await asyncio.sleep(0.08)


def _failure_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if FAILURE.search(line)]


def _assert_throttled(lines: list[str], since: float, output: str) -> None:
    """At most the first line of each kind plus one per 10 s window each: kinds being the lines but for
    their numbers and counts (one signal's 503s, another's; a refused connection...)."""
    kinds = {re.sub(r"0x[0-9a-fA-F]+|\d+", "#", line.split(" (", 1)[0]) for line in lines}
    windows = math.ceil((time.monotonic() - since) / WINDOW)
    assert lines, output
    assert len(lines) <= len(kinds) * (1 + windows), f"{len(lines)} lines of {len(kinds)} kinds:\n" + "\n".join(lines)


async def test_a_collector_answering_503_is_a_line_per_kind_and_window_then_recovers(
    tmp_path: Path, upstream_server: UpstreamServer, receiver: OtlpReceiver
) -> None:
    """OTLP/HTTP, traces and metrics, every export answered 503 through 36 handshakes: before, 40-60 ERROR
    lines; now the first per signal at once and no more within the window. Then the collector answers
    200 again and the next handshake's span arrives."""
    receiver.http_refusal = 503
    since = time.monotonic()
    with _start(tmp_path, upstream_server, receiver.endpoint("http/protobuf"), "http/protobuf") as server:
        await _handshakes(server)
        await asyncio.to_thread(server.wait_for_line, "Failed to export metrics batch")
        await asyncio.to_thread(server.wait_for_line, "Failed to export spans batch")
        assert receiver.spans() == []
        lines = _failure_lines(server.output())
        _assert_throttled(lines, since, server.output())
        receiver.http_refusal = None
        await _handshakes(server)
        await asyncio.to_thread(receiver.wait_for_span, lambda span: True, 20.0)
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


async def test_an_unreachable_grpc_collector_is_a_line_per_kind_and_window(
    tmp_path: Path, upstream_server: UpstreamServer, unreachable: int
) -> None:
    """OTLP/gRPC to a port where nothing listens: each batch's UNAVAILABLE is an ERROR per signal, which the
    SDK's own filter cut to one line per 20 s for all signals: the metrics' failure went unseen behind the
    traces' (the same format string), or the other way round. Now each signal's first line at once."""
    since = time.monotonic()
    with _start(tmp_path, upstream_server, f"http://127.0.0.1:{unreachable}", "grpc") as server:
        await _handshakes(server)
        await asyncio.to_thread(server.wait_for_line, "Failed to export metrics", timeout=10)
        await asyncio.to_thread(server.wait_for_line, "Failed to export traces", timeout=10)
        _assert_throttled(_failure_lines(server.output()), since, server.output())
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


def test_lines_differing_in_numbers_are_one_kind_and_repeats_leave_out_the_traceback() -> None:
    """Pure logic: two batches' 503s (another status, port, backoff) are one kind, another signal or cause
    is another; the repeated line names the exception but carries no traceback (the first keeps it)."""
    now = [0.0]
    throttle = RepeatFilter(clock=lambda: now[0], kind=by_text_but_numbers)

    def passed(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord | None:
        error = None
        if exc_info:
            try:
                raise ConnectionResetError(104, "reset")
            except ConnectionResetError:
                error = sys.exc_info()
        record = logging.LogRecord("sdk", logging.ERROR, __file__, 1, message, args, error)
        return record if throttle.filter(record) else None

    spans = "Failed to export %s batch code: %s, reason: %s"
    assert passed(spans, "spans", 503, "Service Unavailable") is not None
    assert passed(spans, "spans", 502, "Service Unavailable") is None
    assert passed(spans, "metrics", 503, "Service Unavailable") is not None
    assert passed(spans, "spans", None, "HTTPConnection object at 0x7f3a9c: refused") is not None
    assert passed(spans, "spans", None, "HTTPConnection object at 0x7e11b0: refused") is None
    assert passed("Exception while exporting %s.", "span", exc_info=True) is not None
    assert passed("Exception while exporting %s.", "span", exc_info=True) is None
    now[0] = 10.0
    repeated = passed("Exception while exporting %s.", "span", exc_info=True)
    assert repeated is not None and repeated.exc_info is None
    assert repeated.getMessage() == (
        "Exception while exporting span. [ConnectionResetError, the traceback as in the first such line] "
        "(1 more since the last such line)"
    )
    again = passed(spans, "spans", 504, "Service Unavailable")
    assert again is not None and again.getMessage().endswith("(1 more since the last such line)")  # the 502
