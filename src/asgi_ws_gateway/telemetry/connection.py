"""The connection span, from accept until both sides are closed, and what is recorded at close.

By default the span is the root of its own trace, linked to the handshake span: a span open for
hours must not hold the handshake's trace open (each trace gets its own sampling decision). For
backends that ignore links, it names its handshake's trace and span ids as attributes, and
``telemetry.connection_parent: handshake`` makes it a child of the handshake span instead. It is
current while the connection is relayed, so the relay's pumps (and message policies) see it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode

from .._context import CONNECTION
from ..messages.action_keys import action_key
from . import current
from . import names as n
from .hex_ids import hex_ids
from .lean_spans import LeanSpan
from .otlp_wire import END_OWN as end_own
from .values import address_text, client_path, client_text

if TYPE_CHECKING:
    from ..relay.stats import RelayStats
    from .core import Telemetry
    from .metrics import MeteredConnection
    from .tracing import Attrs, HandshakeTrace

_ABNORMAL_CLOSE = frozenset({1006, 1011, 1014, 1015})
_EMPTY = Context()
"""No span, no baggage: what the connection span's context is made on (contexts are immutable: shared)."""
_new = object.__new__


def _link(context: SpanContext) -> Link:
    """``Link(context)``: the same object (no attributes), without its two ``__init__`` frames and ``super()``."""
    link = _new(Link)
    link._context = context
    link._attributes = None
    return link


class ConnectionTrace:
    """Telemetry of one accepted connection, until both sides are closed."""

    def __init__(
        self, handshake: HandshakeTrace, telemetry: Telemetry, backend: str, subprotocol: str | None, stats: RelayStats
    ) -> None:
        self.span: Span | None = None
        self._handshake = handshake
        self._telemetry = telemetry
        self._backend = backend
        self._subprotocol = subprotocol
        self._started = time.perf_counter()
        self._ended: float | None = None  # both sides closed, when something was still to release then
        self._closed = False
        self._otel_token: object | None = None
        self._live: MeteredConnection | None = None
        self._stats = stats
        api = handshake.api
        if telemetry.start_span is not None:
            attrs = self._attributes()
            links: tuple[Link, ...] = ()
            parent = _EMPTY  # a new trace
            if handshake.span is not None:
                span = handshake.span
                context = span._context if type(span) is LeanSpan else span.get_span_context()
                if context[5]:  # a SpanContext is (trace id, span id, remote, flags, state, valid): no property calls
                    links = (_link(context),)
                    # trace.format_trace_id and format_span_id (valid ids fit their 16 and 8 bytes)
                    attrs[n.HANDSHAKE_TRACE_ID], attrs[n.HANDSHAKE_SPAN_ID] = hex_ids(context)
                    if telemetry.config.connection_parent == "handshake":
                        parent = current.with_span(handshake.span, _EMPTY)
            self.span = telemetry.start_span(api.connection_span, parent, SpanKind.INTERNAL, attrs, links)
            self._otel_token = current.attach(current.alone(self.span))
            if handshake._events is not None:
                handshake._events.span = self.span
        if telemetry.metrics is not None:
            self._live = telemetry.metrics.opened(api.name, stats)
        self._token = CONNECTION.set(self)  # the relay's pumps, created next, inherit it

    def _attributes(self) -> Attrs:
        handshake = self._handshake
        path = handshake.path if handshake.path is not None else client_path(handshake.scope.get("path", ""))
        attrs: Attrs = {
            n.HTTP_ROUTE: handshake.api.route, n.URL_PATH: path,
            n.API: handshake.api.name, n.BACKEND: self._backend,
        }  # fmt: skip
        client = handshake.scope.get("client")
        if handshake.client is not None:
            attrs[n.CLIENT_ADDRESS] = handshake.client
        elif client:  # bounded and escaped as the handshake span's: a server may have taken it from a header
            attrs[n.CLIENT_ADDRESS] = handshake.peer_address or address_text(client[0])
        if self._subprotocol:
            attrs[n.SUBPROTOCOL] = self._subprotocol
        if handshake.subject is not None:
            attrs[n.ENDUSER_ID] = handshake.subject
        if handshake.subscription is not None:
            attrs[n.SUBSCRIPTION] = handshake.subscription
        return attrs

    def policy_action(self, policy: str, action: str, direction: str, reason: str = "") -> None:
        """Count a custom message policy's action (``direction``: ``inbound`` or ``outbound``, or
        ``client_to_upstream`` / ``upstream_to_client``; a reason that is not a code is ``_OTHER``): a dict
        increment in the relay's counters, which the ``ws_gateway.policy.actions`` metric reads."""
        key = action_key(policy, action, direction, reason)  # each part bounded: the metric makes a series of it
        self._stats.policy_actions[key] = self._stats.policy_actions.get(key, 0) + 1

    def ended(self) -> None:
        """Both sides are closed, and :meth:`closed` comes once what the connection holds is released (its
        concurrency lease, whose failure is logged before the access line): the duration ends now."""
        self._ended = time.perf_counter()

    def closed(self, stats: RelayStats) -> None:
        """Both sides are closed: end the span, record the metrics, write the access log (once)."""
        if self._closed:
            return
        self._closed = True
        seconds = (time.perf_counter() if self._ended is None else self._ended) - self._started
        side = stats.closed_by or "gateway"
        code = stats.close_code if stats.close_code is not None else 1006
        reason = client_text(stats.close_reason)  # a peer's text (at most 123 bytes): may carry a token
        span = self.span
        if span is not None:
            attrs: Attrs = {
                n.CLOSE_SIDE: side, n.CLOSE_CODE: code, n.CLOSE_REASON: reason,
                n.MESSAGES_IN: stats.messages_in, n.BYTES_IN: stats.bytes_in,
                n.MESSAGES_OUT: stats.messages_out, n.BYTES_OUT: stats.bytes_out,
            }  # fmt: skip
            if code in _ABNORMAL_CLOSE:
                span.set_status(StatusCode.ERROR, f"closed with {code}")
            end_own(span, attrs)
        if self._otel_token is not None:
            current.detach(self._otel_token)
        try:  # noqa: SIM105  (contextlib.suppress: three Python calls per connection)
            CONNECTION.reset(self._token)
        except ValueError:  # reset from another context: nothing to restore
            pass
        telemetry = self._telemetry
        if telemetry.metrics is not None and self._live is not None:
            telemetry.metrics.closed(self._live, side, code, seconds)
        if telemetry.access.enabled:
            fields = self._handshake.fields()
            # Item by item, in this order (the JSON line's): ``update`` with keywords built a dict of them
            # first (~8.6 k instructions against ~5.9 k, counted in process).
            fields["status"], fields["outcome"], fields["closed_by"] = 101, "accepted", side
            fields["close_code"], fields["close_reason"], fields["duration"] = code, reason, round(seconds, 6)
            fields["messages_in"], fields["bytes_in"] = stats.messages_in, stats.bytes_in
            fields["messages_out"], fields["bytes_out"] = stats.messages_out, stats.bytes_out
            fields["backend"], fields["subprotocol"] = self._backend, self._subprotocol
            telemetry.access.write(fields, span)


__all__ = ["ConnectionTrace"]
