"""A client's ``tracestate`` reaches the handshake span's link bounded, as its other values do.

An untrusted client's ``traceparent`` is recorded as a link of the handshake span, and the link kept
the client's ``tracestate`` as the SDK's parser read it, not cut as its User-Agent, Host and path are
(512 characters each): 7.8 KB of state in two header lines (each within the head limits), held on every
queued handshake span (2,048 of them while the collector is down) and exported by the SDK's encoder
(``ASGI_WS_GATEWAY_OTLP_ENCODER=sdk``) or any other span processor. And the SDK's parser logged a WARNING
per handshake for a state it refused (a member out of format, with its text; over 32 members or 8,192
characters) and for a ``traceparent`` over 512 characters: 18 lines from 20 hostile handshakes under ``run``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import load_config
from asgi_ws_gateway.log_throttle import RepeatFilter
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import Telemetry
from asgi_ws_gateway.telemetry.propagation import client_trace
from support.configs import build_config

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
TRACEPARENT = (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
MEMBERS = [f"{'k' * 200}{index:03d}={'v' * 256}" for index in range(17)]
"""17 members of 460 characters each (7.8 KB): about the most the SDK's parser keeps (8,192 characters)."""
STATE = [(b"tracestate", ",".join(MEMBERS[:9]).encode()), (b"tracestate", ",".join(MEMBERS[9:]).encode())]
"""Two header lines of 4.1 and 3.7 KB: each within the head limits."""
SHORT = [(b"tracestate", b"vendor=opaque-value,other=1"), (b"tracestate", ("a" * 100 + "=" + "b" * 200).encode())]


def test_the_linked_trace_state_is_at_most_512_characters_of_whole_members() -> None:
    found = client_trace([TRACEPARENT, *STATE])
    assert (found.trace_id, found.span_id, found.is_remote, found.trace_flags) == (TRACE_ID, SPAN_ID, True, 1)
    assert len(found.trace_state.to_header()) <= 512  # it was 7,836
    assert not found.trace_state  # every member is longer than 128 characters: W3C's first to drop


def test_a_usual_trace_state_is_kept_as_sent_and_a_long_one_loses_its_long_members_first() -> None:
    assert client_trace([TRACEPARENT, SHORT[0]]).trace_state.to_header() == "vendor=opaque-value,other=1"
    state = client_trace([TRACEPARENT, *SHORT, *STATE]).trace_state
    assert state.to_header() == "vendor=opaque-value,other=1"


def test_the_handshake_span_s_link_keeps_the_client_s_ids_and_a_bounded_state(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    config = load_config(build_config("ws://127.0.0.1:9/echo"))
    telemetry = Telemetry(config, tracer_provider=spans[0])
    scope = {
        "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
        "client": ("10.1.2.3", 4567), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"gw"), TRACEPARENT, *STATE],
    }  # fmt: skip
    stats = RelayStats()
    stats.closed_by, stats.close_code = "client", 1000
    telemetry.handshake(config.apis[0], scope).accepted("ws://127.0.0.1:9/echo", None, stats).closed(stats)
    (handshake,) = [span for span in spans[1].get_finished_spans() if span.name == "GET /ws/echo"]
    (link,) = handshake.links
    assert (link.context.trace_id, link.context.span_id) == (TRACE_ID, SPAN_ID)
    assert len(link.context.trace_state.to_header()) <= 512


BAD_STATES = {
    "a member not in W3C's format (its text: the client's)": [(b"tracestate", b"ok=1,Api_Key=hunter2 secret")],
    "33 members (W3C's limit is 32)": [(b"tracestate", ",".join(f"k{i}=v" for i in range(33)).encode())],
    "over 8,192 characters in three lines": [(b"tracestate", ",".join(f"k{i}-{j}=v" for j in range(500)).encode())
                                             for i in range(3)],
}  # fmt: skip


@pytest.mark.parametrize("headers", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_a_bad_trace_state_is_read_without_a_warning_and_keeps_its_good_members(
    headers: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's parser wrote a WARNING per handshake with such a state (the first bad member as sent):
    every handshake of a client's choosing, past every throttle of the gateway's, its text in clear."""
    caplog.set_level(logging.DEBUG)
    found = client_trace([TRACEPARENT, *headers])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert (found.trace_id, found.span_id, found.is_remote) == (TRACE_ID, SPAN_ID, True)
    assert len(found.trace_state.to_header()) <= 512
    assert 0 < len(found.trace_state) <= 32  # the good members, within W3C's count


def test_a_traceparent_past_the_sdk_s_512_characters_is_no_link_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    long = (b"traceparent", TRACEPARENT[1] + b"-" + b"x" * 600)
    assert not client_trace([long, (b"tracestate", b"a=1")]).is_valid
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


PROPAGATION_LOGGERS = ("opentelemetry.baggage.propagation", "opentelemetry.trace.span",
                       "opentelemetry.trace.propagation.tracecontext")  # fmt: skip
"""Where the SDK's default propagators warn of what they could not read: a trusted client's text."""


@pytest.fixture
def unthrottled() -> Iterator[None]:
    """No throttle on :data:`PROPAGATION_LOGGERS` left by another test (they are process-wide), before or after."""

    def remove() -> None:
        for name in PROPAGATION_LOGGERS:
            found = logging.getLogger(name)
            for kept in [f for f in found.filters if isinstance(f, RepeatFilter)]:
                found.removeFilter(kept)

    remove()
    yield
    remove()


@pytest.mark.usefixtures("unthrottled")
def test_a_trusted_client_s_bad_baggage_and_state_are_a_line_per_kind_not_one_per_entry(
    spans: tuple[TracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """``trust_client_trace: true`` trusts any client: 20 handshakes, each with 50 baggage entries out of
    format and a state with one bad member, wrote 1,020 WARNING lines (70 KB) under ``run``, one per
    entry, each quoting it. The extraction is the SDK's (its propagators are the operator's choice);
    its lines are throttled as the attribute limits' are: the first of each kind, then one per 10 s."""
    config = load_config(build_config("ws://127.0.0.1:9/echo", telemetry={"trust_client_trace": True}))
    telemetry = Telemetry(config, tracer_provider=spans[0])
    caplog.set_level(logging.DEBUG)
    bad = [(b"baggage", ",".join(f"bad entry {i}" for i in range(50)).encode()), (b"tracestate", b"Bad=1")]
    for _ in range(20):
        scope = {"type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
                 "client": ("10.1.2.3", 4567), "headers": [TRACEPARENT, *bad]}  # fmt: skip
        telemetry.handshake(config.apis[0], scope).abandoned("client went away")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name in PROPAGATION_LOGGERS]
    assert len(lines) == 2, lines  # the baggage's kind and the state's, once each (1,020 before)
    handshakes = [span for span in spans[1].get_finished_spans() if span.name == "GET /ws/echo"]
    assert len(handshakes) == 20 and {span.context.trace_id for span in handshakes} == {TRACE_ID}  # continued


def test_a_trusted_client_s_long_trace_state_rides_on_its_spans_bounded(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A continued trace's ``tracestate`` is every span's of it (the handshake's, each attempt's) and goes
    upstream: the SDK reads up to 8,192 characters, which under ``run`` made a connection's spans 19,675 bytes
    (3,351 with the state cut; a hostile untrusted one's: 3,376). It is kept as an untrusted client's link's is,
    to 512 characters of whole members (W3C: propagate at least 512, drop those over 128 first)."""
    config = load_config(build_config("ws://127.0.0.1:9/echo", telemetry={"trust_client_trace": True}))
    telemetry = Telemetry(config, tracer_provider=spans[0])
    short = [f"s{i}=" + "a" * 100 for i in range(4)]
    members = short + [f"k{i:02d}{'x' * 100}=" + "v" * 150 for i in range(28)]  # 32 members, 7.5 KB
    state = (b"tracestate", ",".join(members).encode())
    scope = {"type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
             "client": ("10.1.2.3", 4567), "headers": [TRACEPARENT, state]}  # fmt: skip
    telemetry.handshake(config.apis[0], scope).abandoned("client went away")
    (handshake,) = spans[1].get_finished_spans()
    assert handshake.context.trace_id == TRACE_ID  # continued
    assert handshake.context.trace_state.to_header() == ",".join(short)  # it was 7,5xx characters
