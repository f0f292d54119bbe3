"""Metric attributes that carry a peer's number take values from a fixed set, however many it sends.

A client (or a hostile upstream) that closes with one code after another, or an upstream that
refuses handshakes with one status after another, used to add a series per value: 20,000 codes
took a gateway from 96 to 120 MB and an export from 8.7 KB to 385 KB, and past the SDK's 2,000
series per instrument the other APIs' closes were folded into ``otel.metric.overflow``.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.metrics import Metrics

CLOSE_CODE_VALUES = {*range(1000, 1016), "3xxx", "4xxx", n.OTHER}
"""Every value ``ws_gateway.close.code`` may take (docs/telemetry.md)."""


@pytest.fixture
def metered() -> Iterator[tuple[Metrics, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Metrics(provider.get_meter("test"), [("chat", "/ws/chat"), ("feed", "/ws/feed")]), reader
    provider.shutdown()


def _points(reader: InMemoryMetricReader, spec: n.Instrument) -> list[tuple[dict[str, Any], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [(dict(point.attributes or {}), getattr(point, "value", getattr(point, "count", 0)))
            for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
            if metric.name == spec.name for point in metric.data.data_points]  # fmt: skip


@given(st.integers(min_value=0, max_value=65535))
def test_close_code_value_is_one_of_a_fixed_set(code: int) -> None:
    """Defined codes are kept, 3000-3999 and 4000-4999 folded, anything else ``_OTHER``."""
    value = n.close_code_value(code)
    assert value in CLOSE_CODE_VALUES
    if 1000 <= code <= 1015:
        assert value == code and type(value) is int
    elif 3000 <= code < 5000:
        assert value == f"{code // 1000}xxx"
    else:
        assert value == n.OTHER


@given(st.integers(min_value=0, max_value=1000))
def test_status_value_is_a_registered_status_or_its_class(status: int) -> None:
    """Registered statuses are kept; others fold into ``4xx``/``5xx``..., or ``_OTHER`` outside 100-599."""
    value = n.status_value(status)
    if status in {403, 404, 429, 500, 502, 503}:
        assert value == status
    if not 100 <= status <= 599:
        assert value == n.OTHER
    assert value == status or value in {"1xx", "2xx", "3xx", "4xx", "5xx", n.OTHER}


def test_a_thousand_close_codes_each_side_make_at_most_the_fixed_set(
    metered: tuple[Metrics, InMemoryMetricReader],
) -> None:
    """1,000 distinct codes from the client and 1,000 from the upstream of ``chat``: at most 19 series
    per side, and ``feed``'s 1006 and 1011 keep their own series (no ``otel.metric.overflow``)."""
    metrics, reader = metered
    codes = range(0, 65536, 65)  # 1,009 distinct codes across the whole 16-bit range
    for side in ("client", "upstream"):
        for code in codes:
            metrics.closed(metrics.opened("chat", RelayStats()), side, code, 1.0)
    for code in (1006, 1011, 1011):
        metrics.closed(metrics.opened("feed", RelayStats()), "upstream", code, 1.0)
    closes = _points(reader, n.CONNECTION_CLOSES)
    assert all("otel.metric.overflow" not in attrs for attrs, _ in closes)
    chat = [(attrs[n.CLOSE_SIDE], attrs[n.CLOSE_CODE], value) for attrs, value in closes if attrs[n.API] == "chat"]
    for side in ("client", "upstream"):
        values = {code for s, code, _ in chat if s == side}
        assert values <= CLOSE_CODE_VALUES and len(values) <= len(CLOSE_CODE_VALUES)
        assert sum(value for s, _, value in chat if s == side) == len(codes)
    assert ("client", "4xxx", sum(4000 <= c < 5000 for c in codes)) in chat
    feed = {attrs[n.CLOSE_CODE]: value for attrs, value in closes if attrs[n.API] == "feed"}
    assert feed == {1006: 1, 1011: 2}
    assert {label for (series, api, label) in metrics.counts() if series == "closes"} <= {
        str(value) for value in CLOSE_CODE_VALUES
    }


def test_an_upstream_refusing_with_every_status_makes_a_bounded_set(
    metered: tuple[Metrics, InMemoryMetricReader],
) -> None:
    """An upstream that refuses with 400-599 in turn (relayed as they come): registered statuses and
    ``4xx``/``5xx``, on the attempts' and the handshakes' metrics alike."""
    metrics, reader = metered
    backend: dict[str, str | int] = {n.API: "chat", n.BACKEND: "ws://b:1/"}
    for status in range(400, 600):
        metrics.upstream_attempt(backend, 0.01, "upstream_rejected", status)
        metrics.handshake("chat", "error", status, "UpstreamRejected", None, 0.01)
    allowed = {int(s) for s in HTTPStatus} | {"4xx", "5xx"}
    for spec in (n.UPSTREAM_CONNECT_FAILURES, n.UPSTREAM_CONNECT_DURATION, n.HANDSHAKES, n.HANDSHAKE_DURATION):
        statuses = [attrs[n.HTTP_STATUS] for attrs, _ in _points(reader, spec)]
        assert set(statuses) <= allowed and len(statuses) == len(set(statuses)) < 60, spec.name
        assert {"4xx", "5xx", 404, 502} <= set(statuses), spec.name


def test_a_policy_refusing_with_the_clients_words_makes_a_bounded_set(
    metered: tuple[Metrics, InMemoryMetricReader],
) -> None:
    """A plugin policy's ``deny(403, ..., reason=<a client's header>)``: one ``error.type`` series per
    handshake, each quoting the client, until the reasons were kept as a message policy's are (a code,
    the first 64 of the policy); the built-in reasons keep their own series."""
    metrics, reader = metered
    for i in range(200):
        metrics.handshake("chat", "denied", 403, f"Client Text {i}", "tenant-check", 0.01)
    metrics.handshake("chat", "denied", 401, "token_missing", "validate-jwt", 0.01)
    errors = {attrs.get(n.ERROR_TYPE) for attrs, _ in _points(reader, n.HANDSHAKES)}
    assert errors == {n.OTHER, "token_missing"}, errors


def test_a_custom_message_policy_counts_under_bounded_keys() -> None:
    """``ConnectionTrace.policy_action`` (docs/telemetry.md's way for a policy author) bounds its key
    as the pipeline's count does."""
    from asgi_ws_gateway.telemetry.connection import ConnectionTrace

    stats = RelayStats()
    counter = ConnectionTrace.__new__(ConnectionTrace)
    counter._stats = stats
    for i in range(100):
        counter.policy_action("profanity", "drop", "client_to_upstream", f"Said word {i}")
    assert stats.policy_actions == {("profanity", "drop", "inbound", n.OTHER): 100}
