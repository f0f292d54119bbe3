"""A collector that keeps failing costs the gateway's log a line per kind of failure and 10 s, not per batch.

Real ``asgi-ws-gateway run`` processes exporting traces and metrics over OTLP: over HTTP to a real
collector answering 503 (then recovering), over gRPC to a port where nothing listens. Before, the SDK
and its exporters logged an ERROR per failed batch and signal (a span batch every 100 ms, metrics
every 200 ms here: dozens of lines in 3 s, thousands through an outage); now the first line of each
kind at once, then at most one per 10 s saying how many it stands for.

The same for the other ways a collector fails, each a real server here: OTLP/HTTP answering 429 (retried by
the SDK), redirecting (307: a failed export, never followed) or resetting the connection, and gRPC answering
UNAVAILABLE (retried); a cause that changes mid-outage (429, then resets) gets its own first line; and past
the window a kind's next line says how many it stands for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from asgi_ws_gateway.log_throttle import RepeatFilter, by_text_but_numbers
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver, Protocol
from support.processes import ServerProcess, ready_server
from support.servers import served_in_thread
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


def _start(
    tmp: Path, upstream: UpstreamServer, endpoint: str, protocol: Protocol, timeout: str = "0.5"
) -> ServerProcess:
    config = write_config(tmp, build_config(upstream, path="/echo", telemetry={}))
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "failure-lines-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_TIMEOUT": timeout,  # seconds: 0.5, a retry's backoff outlasts it: an ERROR per batch
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


class FailingCollector:
    """A real OTLP/HTTP collector that fails every export one way: ``status`` (429, or 307 to another
    address), or ``reset`` (the request read, the connection reset: an RST, no answer)."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.requests = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.requests += 1
                if collector.failure == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                status = int(collector.failure)
                self.send_response(status)
                if status == 307:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def finish(self) -> None:
                with contextlib.suppress(OSError):  # (reset: the socket is closed already)
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="failing-collector", daemon=True)

    def __enter__(self) -> FailingCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Unavailable(grpc.GenericRpcHandler):
    """Every call answered UNAVAILABLE: a gRPC collector that is up and refuses (overloaded, draining)."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector overloaded")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def unavailable_grpc() -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([_Unavailable()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop(grace=None).wait(5)


FAILURES = {
    "429": ("Failed to export metrics batch", "Failed to export spans batch"),
    "307": ("answered 307, a redirect to", "answered 307, a redirect to"),
    "reset": ("Failed to export metrics batch", "Failed to export spans batch"),
}
"""Each HTTP failure and what each signal's first line holds (a redirect: the metrics' and spans' own
lines both name it; told apart by the path, ``/v1/metrics`` and ``/v1/traces``)."""


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failing_http_collector_is_a_line_per_kind_and_window(
    tmp_path: Path, upstream_server: UpstreamServer, failure: str
) -> None:
    """OTLP/HTTP, traces and metrics, every export answered 429 (retried, Retry-After absent), redirected
    (307: a failed export, never followed) or reset: each signal's failure gets its first line at once,
    and no kind more than one line per window."""
    since = time.monotonic()
    with FailingCollector(failure) as collector, _start(tmp_path, upstream_server, collector.endpoint,
                                                        "http/protobuf") as server:  # fmt: skip
        await _handshakes(server)
        if failure == "307":
            await asyncio.to_thread(server.wait_for_line, "/v1/metrics answered 307", timeout=10)
            await asyncio.to_thread(server.wait_for_line, "/v1/traces answered 307", timeout=10)
        else:
            for first in FAILURES[failure]:
                await asyncio.to_thread(server.wait_for_line, first, timeout=10)
        assert collector.requests > 2 * HANDSHAKES // 10, collector.requests  # (batches every 100/200 ms)
        _assert_each_kind_throttled(_failure_lines(server.output()), since, server.output())
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


async def test_a_grpc_collector_answering_unavailable_is_a_line_per_kind_and_window(
    tmp_path: Path, upstream_server: UpstreamServer, unavailable_grpc: str
) -> None:
    """OTLP/gRPC to a collector that is up and answers every export UNAVAILABLE (retried): each signal's
    failure gets its first line at once (not the traces' alone), no kind more than one per window."""
    since = time.monotonic()
    with _start(tmp_path, upstream_server, unavailable_grpc, "grpc") as server:
        await _handshakes(server)
        await asyncio.to_thread(server.wait_for_line, "Failed to export metrics", timeout=10)
        await asyncio.to_thread(server.wait_for_line, "Failed to export traces", timeout=10)
        _assert_each_kind_throttled(_failure_lines(server.output()), since, server.output())
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


async def test_a_collector_whose_failure_changes_gets_a_first_line_for_each_cause(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """429s, then resets: with a timeout that leaves room for a retry (3 s), the SDK's retry warning names
    each cause, and the second cause's first line is not counted into the first's. (With a timeout shorter
    than the first backoff, about 1 s, the SDK gives up without a retry and its line names no cause: 429 and
    reset both read "due to timeout, max retries or shutdown", one kind.)"""
    since = time.monotonic()
    with FailingCollector("429") as collector, _start(tmp_path, upstream_server, collector.endpoint,
                                                      "http/protobuf", timeout="3") as server:  # fmt: skip
        await _handshakes(server)
        collector.failure = "reset"
        await _handshakes(server)
        await asyncio.to_thread(server.wait_for_line, "Connection reset by peer')) encountered", times=2)
        lines = _failure_lines(server.output())
        _assert_each_kind_throttled(lines, since, server.output())
        for signal in ("spans", "metrics"):
            for cause in ("Too Many Requests", "Connection reset by peer"):
                assert [line for line in lines if cause in line and f"exporting {signal} batch" in line], lines
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


async def test_a_collector_failing_past_the_window_gets_one_line_more_with_its_count(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """Past the 10 s window a kind's next line comes, once, saying how many it stands for."""
    since = time.monotonic()
    with FailingCollector("429") as collector, _start(tmp_path, upstream_server, collector.endpoint,
                                                      "http/protobuf") as server:  # fmt: skip
        await asyncio.to_thread(server.wait_for_line, "more since the last such line", timeout=WINDOW + 20)
        lines = _failure_lines(server.output())
        _assert_each_kind_throttled(lines, since, server.output())
        repeated = [line for line in lines if "more since the last such line" in line]
        assert all(re.search(r"\((\d+) more since the last such line\)", line) for line in repeated), repeated
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()


REPEATED = re.compile(r" \(\d+ more since the last such line\)$")


def _assert_each_kind_throttled(lines: list[str], since: float, output: str) -> None:
    """Each kind (the line but for its numbers): its first line, then at most one per window begun since,
    and each after the first says how many it stands for."""
    assert lines, output
    by_kind: dict[str, list[str]] = {}
    for line in lines:
        kind = re.sub(r"0x[0-9a-fA-F]+|\d+", "#", REPEATED.sub("", line))
        by_kind.setdefault(kind, []).append(line)
    windows = math.ceil((time.monotonic() - since) / WINDOW)
    for kind, found in by_kind.items():
        assert len(found) <= windows, f"{len(found)} lines of one kind in {windows} window(s): {kind}\n" + output
        assert all("more since the last such line" in line for line in found[1:]), found


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


def test_a_burst_of_distinct_reasons_does_not_lump_later_kinds_for_good() -> None:
    """Pure logic: a collector's reason phrase is part of a line's kind, so 2,000 distinct ones (letters: no
    number to fold) fill the filter's table. Before, its entries were never freed: every kind seen after,
    however long after, shared one count, its first line saying '(1935 more since the last such line)' of
    other kinds' lines, and a second new failure within 10 s of it was not written. Now a spent kind
    (nothing held back, its window over) gives its place to a new one, a few per window: each new kind's
    first line is written at once after the burst, and a collector answering every export with another
    reason still costs a few lines per window, not one per export."""
    now = [0.0]
    throttle = RepeatFilter(clock=lambda: now[0], kind=by_text_but_numbers)
    spans = "Failed to export %s batch code: %s, reason: %s"

    def passed(*args: object) -> logging.LogRecord | None:
        record = logging.LogRecord("sdk", logging.ERROR, __file__, 1, spans, args, None)
        return record if throttle.filter(record) else None

    def reason(i: int) -> str:
        letters = "abcdefghijklmnopqrstuvwxyz"
        return f"Bad {letters[i % 26]}{letters[i // 26 % 26]}{letters[i // 676 % 26]}"

    for i in range(2000):
        passed("spans", 400, reason(i))
    assert len(throttle._logs) == RepeatFilter.MAX_MESSAGES
    now[0] = 30.0  # the burst's window is over: its kinds' entries hold nothing back
    first = passed("metrics", 503, "Service Unavailable")
    now[0] = 31.0
    second = passed("logs", 503, "Service Unavailable")
    assert first is not None
    assert first.getMessage() == "Failed to export metrics batch code: 503, reason: Service Unavailable"
    assert second is not None, "a second new kind was hidden behind the first"
    assert second.getMessage() == "Failed to export logs batch code: 503, reason: Service Unavailable"

    written = []  # 20 exports a second for 100 s, each answered with another reason
    for i in range(2000):
        now[0] = 100.0 + i / 20
        if (record := passed("spans", 400, reason(2000 + i))) is not None:
            written.append(record.getMessage())
    windows = 100 / WINDOW
    assert len(written) <= (RepeatFilter.FREED_PER_INTERVAL + 1) * (windows + 1), len(written)
    assert any("of any kind past the first 64" in line for line in written)
    assert len(throttle._logs) == RepeatFilter.MAX_MESSAGES


SECRET = "collector-echoed-4b1d"


class _EchoesACredential(BaseHTTPRequestHandler):
    """A collector refusing every export with a reason phrase that quotes a credential (as one echoing the
    exporter's header back might), 400: not retried, the SDK's line quotes the reason."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(400, f"Bad Request: invalid api_key={SECRET} (Authorization: Bearer {SECRET})")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def echoing() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoesACredential)
    server.daemon_threads = True
    yield from served_in_thread(server)


async def test_a_collectors_reason_phrase_is_redacted_as_a_peers_free_text(
    tmp_path: Path, upstream_server: UpstreamServer, echoing: ThreadingHTTPServer
) -> None:
    """The SDK's export failure quotes the collector's reason phrase as a plain string, which the log's
    redaction read as the gateway's own text (only an exception argument marked a line as quoting a peer):
    'api_key=<value>' and 'Bearer <value>' from a collector were written as they came."""
    endpoint = f"http://127.0.0.1:{echoing.server_address[1]}"
    with _start(tmp_path, upstream_server, endpoint, "http/protobuf") as server:
        await _handshakes(server)
        await asyncio.to_thread(server.wait_for_line, "Failed to export spans batch")
        output = server.output()
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, output
    lines = [line for line in output.splitlines() if "Failed to export" in line]
    assert lines and all("api_key=REDACTED" in line for line in lines), output
    assert SECRET not in output, output
