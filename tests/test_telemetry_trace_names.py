"""Which upstream headers a new ``traceparent`` replaces, decided from their names (``propagation._filtered``): the C
extension's ``trace_names`` against the Python reference, on any header list hypothesis draws (the dropped names in
any case, the prefixes, line breaks, non-ASCII, other shapes), and ``inject`` dropping the same headers with each."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from asgi_ws_gateway.telemetry import current, otlp_wire, propagation

native = pytest.mark.skipif(
    otlp_wire.NATIVE is None,
    reason="the C extension (telemetry/_span_wire.c) is not built or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)

_DROPPED = sorted(propagation._DROPPED_UNTRUSTED | propagation._DROPPED_TRUSTED)
names = st.one_of(
    st.sampled_from([*_DROPPED, "user-agent", "via", "x-forwarded-for", "uberctx-user", "ot-baggage-k", "uberctx",
                     "ot-baggage", "x-uberctx-a"]),
    st.sampled_from(_DROPPED).map(str.upper), st.sampled_from(_DROPPED).map(str.title),
    st.sampled_from(["a\nuberctx-b", "b3\n", "Uberctx-x", "OT-Baggage-y", "\u212aey", "b\u00b3", "trace\x7fparent"]),
    st.just(""),
    st.text(max_size=20),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_\n\t", max_size=16),
)  # fmt: skip
headers = st.lists(st.tuples(names, st.just("v")), max_size=8)


def _python(headers: list[tuple[str, str]]) -> int:
    """The Python reference's answer as ``trace_names``' bits (1: an untrusted client's, 2: a trusted one's)."""
    untrusted, trusted = propagation._filtered(tuple(name for name, _ in headers))
    return untrusted | trusted << 1


@native
@given(headers=headers)
def test_the_c_answer_is_the_python_answer_or_none(headers: list[tuple[str, str]]) -> None:
    assert otlp_wire.NATIVE is not None
    found = otlp_wire.NATIVE.trace_names(headers, propagation._DROPPED_MASKS)
    if found is None:  # left to Python: a name it does not read as the lower-cased ASCII text Python would
        assert any(not name.isascii() or not name.isprintable() or name != name.lower() for name, _ in headers)
    else:
        assert found == _python(headers)


@native
def test_the_usual_names_are_decided_in_c() -> None:
    """The names every traced handshake's request has, a client's trace headers among them: no Python fallback."""
    assert otlp_wire.NATIVE is not None
    usual = [("user-agent", "v"), ("x-forwarded-for", "v"), ("via", "v")]
    masks = propagation._DROPPED_MASKS
    assert otlp_wire.NATIVE.trace_names(usual, masks) == 0
    assert otlp_wire.NATIVE.trace_names([*usual, ("b3", "v")], masks) == 1
    assert otlp_wire.NATIVE.trace_names([*usual, ("uberctx-user", "v")], masks) == 1
    assert otlp_wire.NATIVE.trace_names([*usual, ("traceparent", "v")], masks) == 3
    assert otlp_wire.NATIVE.trace_names([*usual, ("baggage", "v")], masks) == 3


@native
@pytest.mark.parametrize("shape", [(("b3", "v"),), [["b3", "v"]], [(b"b3", "v")], [(1, "v")], [()], [("b3", "v"), ()]])
def test_other_shapes_are_left_to_python(shape: Any) -> None:
    assert otlp_wire.NATIVE is not None
    assert otlp_wire.NATIVE.trace_names(shape, propagation._DROPPED_MASKS) is None


@given(headers=headers, trusted=st.booleans())
def test_inject_drops_what_the_names_say(headers: list[tuple[str, str]], trusted: bool) -> None:
    """``inject`` with the default propagators: the request keeps a header unless the reference drops it, then gets
    the ``traceparent`` (with or without the extension, whichever this run has)."""
    context = SpanContext(2**100 + 1, 2**60 + 1, is_remote=False, trace_flags=TraceFlags(1))
    written = list(headers)
    propagation.inject(written, current.alone(NonRecordingSpan(context)), trusted=trusted)
    dropped = propagation._DROPPED_TRUSTED if trusted else propagation._DROPPED_UNTRUSTED
    kept = [
        (name, value) for name, value in headers
        if name.lower() not in dropped and (trusted or not propagation._UNTRUSTED_PREFIXED(name.lower()))
    ]  # fmt: skip
    if _python(headers) & (2 if trusted else 1):
        assert written[:-1] == kept
    else:
        assert written[:-1] == headers
    assert written[-1][0] == "traceparent"
