"""The upstream request loses a client's trace headers by their names alone, remembered or not.

``propagation.inject`` decides from the request's header names whether the ``traceparent`` it writes
must replace some (a client's ``traceparent``/``tracestate``, its baggage and, untrusted, other tracers'
formats and ``uberctx-``/``ot-baggage-`` items); the decision is remembered by the names as sent
(``propagation._filtered``). Each request here is compared with the rule written out name by name
(what ``inject`` did before it remembered anything), cold and warm, for trusted and untrusted clients.
With the C extension, usual names (lower-case ASCII) are decided by its ``trace_names`` and not remembered
(``tests/test_telemetry_trace_names.py`` holds it to the Python answer); the remembering is the Python path's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags

from asgi_ws_gateway.telemetry import propagation

CONTEXT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
TRACEPARENT = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
NAMES = [
    "host", "user-agent", "x-forwarded-for", "sec-websocket-key", "origin", "Authorization",
    "traceparent", "TraceParent", "tracestate", "baggage", "BAGGAGE", "b3", "X-B3-TraceId", "uber-trace-id",
    "x-datadog-trace-id", "newrelic", "sentry-trace", "uberctx-user", "UberCtx-Tenant", "ot-baggage-user",
    "x-uberctx-user", "baggage-ot-baggage-", "uberctx-", "a\nuberctx-b", "x\not-baggage-y", "",
]  # fmt: skip
"""Names that are dropped for one kind of client or both, names that only contain such a name, and others."""

header_names = st.one_of(st.sampled_from(NAMES), st.text(st.characters(codec="latin-1"), max_size=12))
header_lists = st.lists(st.tuples(header_names, st.text(max_size=4)), max_size=12)


@pytest.fixture(autouse=True)
def forgotten() -> Iterator[None]:
    propagation._names_filtered.clear()
    yield
    propagation._names_filtered.clear()


def _per_name(headers: list[tuple[str, str]], trusted: bool) -> list[tuple[str, str]]:
    """The rule, name by name: what a ``traceparent`` from the default propagators replaces."""
    dropped = {"traceparent", "tracestate", "baggage"}
    if not trusted:
        dropped |= propagation._UNTRUSTED_CONTEXT
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in dropped and (trusted or not name.lower().startswith(("uberctx-", "ot-baggage-")))
    ]
    return [*kept, TRACEPARENT]


def _injected(headers: list[tuple[str, str]], trusted: bool) -> list[tuple[str, str]]:
    written = list(headers)
    propagation.inject(written, Context(), trace.NonRecordingSpan(CONTEXT), trusted=trusted)
    return written


@settings(max_examples=300, deadline=None)
@given(headers=header_lists, trusted=st.booleans())
def test_remembered_names_drop_what_the_per_name_rule_drops(headers: list[tuple[str, str]], trusted: bool) -> None:
    """Cold, then warm (the names remembered), then for the other kind of client under the same names."""
    expected = _per_name(headers, trusted)
    assert _injected(headers, trusted) == expected
    assert _injected(headers, trusted) == expected
    assert _injected(headers, not trusted) == _per_name(headers, not trusted)


def test_the_same_tuples_stay_when_nothing_is_dropped() -> None:
    headers = [("host", "a"), ("user-agent", "b")]
    written = _injected(headers, False)
    assert written[:2] == headers and all(a is b for a, b in zip(written, headers, strict=False))


@pytest.fixture
def remembering(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python path, which remembers names (the extension's ``trace_names`` decides usual names without it)."""
    monkeypatch.setattr(propagation, "_trace_names", None)


@pytest.mark.usefixtures("remembering")
def test_names_past_the_length_bound_are_decided_but_not_remembered() -> None:
    long = [("x-" + "a" * propagation._NAMES_LONGEST, "v"), ("uberctx-user", "admin")]
    assert _injected(long, False) == [long[0], TRACEPARENT]
    assert propagation._names_filtered == {}
    assert _injected([("uberctx-user", "admin")], False) == [TRACEPARENT]
    assert len(propagation._names_filtered) == 1


@pytest.mark.usefixtures("remembering")
def test_the_remembered_names_are_forgotten_together_when_full() -> None:
    for index in range(propagation._NAMES_REMEMBERED):
        _injected([(f"x-{index}", "v")], True)
    assert len(propagation._names_filtered) == propagation._NAMES_REMEMBERED
    assert _injected([("tracestate", "client"), ("b3", "1")], True) == [("b3", "1"), TRACEPARENT]
    assert len(propagation._names_filtered) == 1
