"""One connection's telemetry: the handshake span and its upstream attempts, then the connection span.

How the middleware drives it (each step is a few attribute writes when telemetry is off)::

    handshake = telemetry.handshake(api, scope)     # starts "GET <route>" (SERVER)
    ... policies, pool.connect(...)                 # TracedConnector: "upstream connect <api>" per attempt
                                                    # (attempt_spans: failover: the first on the handshake span)
    handshake.denied(denial); send the refusal; handshake.release()   # or:
    connection = handshake.accepted(backend, subprotocol, relay.stats)   # ends the handshake span
    ... relay ...
    connection.closed(relay.stats)                  # ends "connection <api>", metrics, access log

The handshake span ends at accept or denial, so it leaves with the exporter's next batch while the
connection is open. The connection span (:mod:`.connection`) is the root of its own trace, linked to
the handshake span (or its child, with ``connection_parent: handshake``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .._context import HANDSHAKE, HandshakeObserver
from .._types import Receive, Scope
from ..config.apis import UpstreamConfig
from ..errors import HandshakeDenied, UpstreamRejected
from ..forwarded import UNIX_SOCKET_PEER, unix_socket_peer
from ..redact import redact_free_text, redact_text, redact_url_remembered
from . import current, propagation
from . import names as n
from .api_info import ApiInfo, BackendInfo
from .connection import ConnectionTrace
from .events import MessageEvents
from .otlp_wire import END_OWN as end_own
from .server_addresses import addressed_server, connected_to
from .values import MAX_CHARS, PLAIN_ADDRESSES, address_text, client_path, client_text, cut, protocol_name

if TYPE_CHECKING:
    from ..relay.stats import RelayStats
    from ..upstream.base import Connector, UpstreamConnection, UpstreamRequest
    from .core import Telemetry

Attrs = dict[str, AttributeValue]
StartSpan = Callable[[str, "Context | None", SpanKind, Attrs, Sequence[Link]], Span]
"""``start_span(name, context, kind, attributes, links)``: a tracer's, or a lean tracer's ``start_owned``."""
T = TypeVar("T")


_ACCEPTED: Attrs = {n.OUTCOME: "accepted", n.HTTP_STATUS: 101}
_UPGRADED: Attrs = {n.HTTP_STATUS: 101}
"""The last attributes of the usual handshake span and upstream attempt, shared: ``end_own`` only reads them."""

_NOTHING: Attrs = {}
"""No last attributes (a store call's span has all of its at start), shared: ``end_own`` only reads them."""

_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)
"""``io_span`` with tracing off (``nullcontext`` keeps no state: one serves every call)."""


def _record_io_error(span: Span, exc: Exception) -> None:
    """``exc``, raised inside an I/O span, recorded on it as ``use_span`` records it, with an error status."""
    if span.is_recording():
        # Redacted as a log line's exception is: a client library's message may quote its request
        # (a URL's query, an Authorization header, a token).
        message = redact_free_text(str(exc))
        stacktrace = redact_free_text("".join(traceback.format_exception(exc)))
        span.record_exception(exc, {"exception.message": message, "exception.stacktrace": stacktrace})
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))


class TracedConnector:
    """A backend's connector whose attempts the handshake in progress traces (a pass-through otherwise)."""

    def __init__(self, inner: Connector, api: str, upstream: UpstreamConfig) -> None:
        self.inner = inner
        self.backend = BackendInfo.of(api, upstream)

    # Neither is a coroutine of its own: each returns the connector's (or the traced attempt's) for the caller
    # to await, two coroutines fewer to create and step through per attempt, telemetry on or off.
    def connect(self, request: UpstreamRequest) -> Coroutine[Any, Any, UpstreamConnection]:
        return self.open(self.inner.connect, request)

    def open(
        self, connect: Callable[[UpstreamRequest], Coroutine[Any, Any, T]], request: UpstreamRequest
    ) -> Coroutine[Any, Any, T]:
        """``connect(request)`` traced as this backend's attempt (passthrough's raw connection too), to await."""
        # The handshake in progress (only telemetry sets HANDSHAKE, always to a HandshakeTrace) and its
        # ``instrumented``, read inline: every attempt passes here, telemetry on or off.
        handshake: HandshakeTrace | None = HANDSHAKE.get()  # type: ignore[assignment]  # (a cast: a call)
        if handshake is None or (handshake.span is None and handshake._telemetry.metrics is None):
            return connect(request)
        return handshake.connect_upstream(connect, request, self.backend)


class HandshakeTrace:
    """Telemetry of one handshake, from the client's upgrade request to accept or denial."""

    _unchecked: tuple[str, ...] = ()  # policies that admitted it unchecked (rare: a class default)

    def __init__(
        self, telemetry: Telemetry, api: ApiInfo, scope: Scope, client: str | None = None, from_proxy: bool = False
    ) -> None:
        self.api = api
        trust = telemetry.trust_client_trace
        # Whose trace context is continued (and its baggage and other formats' headers passed on).
        self.trusted: bool = trust is True or (from_proxy and trust == "trusted_proxies")
        self.scope = scope
        peer = scope.get("client")
        # The client behind trusted proxies when it differs from the TCP peer (then kept as the peer).
        self.client: str | None = address_text(client) if client and (not peer or client != peer[0]) else None
        self.subject: str | None = None
        self.subscription: str | None = None
        self.attempts = 0
        self.span: Span | None = None
        self._telemetry = telemetry
        self._started = time.perf_counter()
        self._finished = False
        self._context: Context | None = None
        self._otel_token: object | None = None
        self._events: MessageEvents | None = None
        self._upstream: Attrs | None = None  # the first attempt, set with the handshake's final attributes
        self.path: str | None = None  # the redacted path, once a span needs it (the connection span reuses it)
        self.peer_address: str | None = None  # the TCP peer's, once the handshake span has it (the connection's too)
        if telemetry.tracer is not None:
            self._start_span(telemetry)
        self._token: Token[HandshakeObserver | None] | None = HANDSHAKE.set(self)

    @property
    def instrumented(self) -> bool:
        """True when spans or metrics are on (the access log is always written)."""
        return self.span is not None or self._telemetry.metrics is not None

    @property
    def writes_access_line(self) -> bool:
        """This connection gets an access-log line (the protocol then writes its own line for it at DEBUG)."""
        return self._telemetry.access.writes_lines

    def _start_span(self, telemetry: Telemetry) -> None:
        assert telemetry.start_span is not None
        headers = self.scope.get("headers") or []
        attrs, traceparent = self._request_attributes(headers)
        links: tuple[Link, ...] = ()
        parent: Context | None = None  # the current context: an in-process parent span is trusted
        if self.trusted:
            parent = propagation.extract(headers)
        elif traceparent:  # a new trace, linked to the client's
            remote = propagation.client_trace(headers)
            if remote.is_valid:
                links = (Link(remote),)
        self.span = telemetry.start_span(self.api.handshake_span, parent, SpanKind.SERVER, attrs, links)
        self._context = current.with_span(self.span, parent)
        self._otel_token = current.attach(self._context)  # policies' own instrumented I/O nests here

    def _request_attributes(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[Attrs, bool]:
        """The HTTP server-span conventions (what the connect and connection spans carry is not
        repeated), and whether the client sent a ``traceparent``."""
        scope = self.scope
        scheme = scope.get("scheme", "ws")
        path = self.path = client_path(scope.get("path", ""))  # a client may put a token in the path itself
        attrs: Attrs = self.api.attributes.copy()  # the mapping proxy's dict, copied in C
        attrs[n.URL_SCHEME] = scheme
        attrs[n.URL_PATH] = path
        client = scope.get("client")
        if client:
            peer = client[0]
            self.peer_address = peer if peer in PLAIN_ADDRESSES else address_text(peer)
        if self.client is not None:
            attrs[n.CLIENT_ADDRESS] = self.client
            if client:
                attrs[n.NETWORK_PEER_ADDRESS] = self.peer_address
            elif unix_socket_peer(scope):  # the proxy on a Unix socket: a peer without an address
                attrs[n.NETWORK_TRANSPORT] = n.NETWORK_TRANSPORT_UNIX
        elif client:
            attrs[n.CLIENT_ADDRESS] = self.peer_address
        named = dict(headers)  # in C; a repeated header's last value, as a loop over them would keep
        agent = named.get(b"user-agent")
        if agent is not None:
            attrs[n.USER_AGENT] = client_text(agent.decode("latin-1"))
        version = named.get(b"sec-websocket-version")
        attrs[n.PROTOCOL_VERSION] = (  # RFC 6455's "13" (every client sends it) without its decoding and cut
            n.PROTOCOL_VERSION_DEFAULT if version is None or version == b"13" else cut(version.decode("latin-1"))
        )
        address, port = addressed_server(named.get(b"host"), scope.get("server"), scheme)
        if address:
            attrs[n.SERVER_ADDRESS] = address if address in PLAIN_ADDRESSES else address_text(address)
        if port is not None:
            attrs[n.SERVER_PORT] = port
        return attrs, b"traceparent" in named

    # -- for policies ---------------------------------------------------------------------------------

    def identify(self, *, subject: str | None = None, subscription: str | None = None) -> None:
        """Name who connects, once a policy knows: on the spans and access log, never on metrics.

        Never pass a token or a key: a subject is a user or client id, a subscription its name (each is
        recorded redacted and cut, as any value a client chose: :mod:`.values`).
        """
        if subject is not None:
            self.subject = subject = client_text(subject)
            if self.span is not None:
                self.span.set_attribute(n.ENDUSER_ID, subject)
        if subscription is not None:
            self.subscription = subscription = client_text(subscription)
            if self.span is not None:
                self.span.set_attribute(n.SUBSCRIPTION, subscription)

    def unchecked(self, policy: str) -> None:
        """``policy`` admits this handshake without checking it (its store failed, fail-open): named on the
        handshake span and counted by ``ws_gateway.policy.unchecked``."""
        self._unchecked = (*self._unchecked, policy)
        if self.span is not None:
            self.span.set_attribute(n.UNCHECKED_POLICIES, self._unchecked)
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.unchecked(self.api.name, policy)

    def upstream_cookies(self, reasons: Sequence[str]) -> None:
        """The upstream's answer had Set-Cookie headers dropped or narrowed, for ``reasons`` (one each):
        counted by ``ws_gateway.cookies.changed``."""
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.upstream_cookies(self.api.name, reasons)

    def io_span(
        self, name: str, *, kind: SpanKind = SpanKind.CLIENT, attributes: Attrs | None = None
    ) -> contextlib.AbstractContextManager[Span]:
        """A child span of the handshake around a policy's I/O: ``with handshake.io_span("jwks fetch"):``.

        Yields a non-recording span when tracing is off (one shared context manager: no generator made
        for nothing). Exceptions are recorded and re-raised. (A store's calls: :meth:`store_call`.)
        """
        if self._telemetry.tracer is None or self._context is None:
            return _NO_SPAN
        return self._io_span(name, kind, attributes)

    @contextlib.contextmanager
    def _io_span(self, name: str, kind: SpanKind, attributes: Attrs | None) -> Iterator[Span]:
        tracer = self._telemetry.tracer
        assert tracer is not None and self._context is not None
        # What tracer.start_as_current_span does (its trace.use_span: current while open, an exception
        # recorded and the status set, ended at exit), without its two context managers and the API's
        # context calls.
        span = tracer.start_span(name, self._context, kind, attributes)
        try:
            token = current.attach(current.with_span(span))
            try:
                yield span
            finally:
                current.detach(token)
        except Exception as exc:  # as use_span: Exception, not BaseException (a cancellation is not an error)
            _record_io_error(span, exc)
            raise
        finally:
            span.end()

    def store_call(self, system: str, operation: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """``call()`` as a store's call (``rate-limit-by-key``'s Redis script): in a child span of the
        handshake, ``"<system> <operation>"`` (CLIENT; ``db.system``, ``db.operation``), as ``io_span``
        traces it: current while it runs, an exception (not a cancellation) recorded, ended when it returns.

        Not a coroutine of its own: ``call()`` itself when tracing is off. Traced, the span is one of the
        gateway's own (:data:`.core.Telemetry.start_span`, ended by ``end_own``): its attributes are the
        two names, plain, where ``io_span`` takes a policy's attributes through the SDK's checks and a
        ``contextlib`` generator (one span per limited handshake: ~470 interpreter steps of it)."""
        if self._context is None or self._telemetry.start_span is None:
            return call()
        return self._store_call(system, operation, call)

    async def _store_call(self, system: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        start_span = self._telemetry.start_span
        assert start_span is not None
        attrs: Attrs = {n.DB_SYSTEM: system, n.DB_OPERATION: operation}  # a new dict: the span keeps it
        span = start_span(f"{system} {operation}", self._context, SpanKind.CLIENT, attrs, ())
        token = current.attach(current.with_span(span))
        try:
            return await call()
        except Exception as exc:  # as use_span: Exception, not BaseException (a cancellation is not an error)
            _record_io_error(span, exc)
            raise
        finally:
            current.detach(token)
            end_own(span, _NOTHING)

    # -- for the middleware -------------------------------------------------------------------------

    async def connect_upstream(
        self, connect: Callable[[UpstreamRequest], Awaitable[T]], request: UpstreamRequest, backend: BackendInfo
    ) -> T:
        """One backend attempt: a CLIENT span whose context the upstream receives as ``traceparent``.

        With ``attempt_spans: failover`` the first attempt has no span of its own: it is recorded on
        the handshake span, whose context the upstream receives.
        """
        self.attempts += 1
        telemetry, span, inline = self._telemetry, None, None
        if telemetry.start_span is not None and self._context is not None:
            if self.attempts == 1 and telemetry.config.attempt_spans == "failover":
                inline = self._upstream = dict(backend.inline)
                if backend.network:
                    url = request.url
                    inline[n.UPSTREAM_URL] = cut(redact_url_remembered(url))
                    if connected := backend.connected if url.startswith(backend.origin) else connected_to(url):
                        inline[n.UPSTREAM_ADDRESS], inline[n.UPSTREAM_PORT] = connected
                if telemetry.config.propagate:
                    propagation.inject(request.headers, self._context, trusted=self.trusted)
            else:
                attrs: Attrs = dict(backend.span)  # copied whole, in C: no merge key by key
                attrs[n.ATTEMPT] = self.attempts
                if backend.network:
                    url = request.url
                    full = redact_url_remembered(url)  # the client's path in it
                    attrs[n.URL_FULL] = full if len(full) <= MAX_CHARS else cut(full)
                    if connected := backend.connected if url.startswith(backend.origin) else connected_to(url):
                        attrs[n.SERVER_ADDRESS], attrs[n.SERVER_PORT] = connected
                span = telemetry.start_span(self.api.connect_span, self._context, SpanKind.CLIENT, attrs, ())
                if telemetry.config.propagate:
                    propagation.inject(request.headers, self._context, span, trusted=self.trusted)
        started = time.perf_counter() if telemetry.metrics is not None else 0.0  # the duration is a metric
        error_type: str | None = None
        status: int | None = None
        cancelled = False
        try:
            connection = await connect(request)
            status = 101
            return connection
        except HandshakeDenied as denial:
            error_type = denial.reason
            status = denial.status if isinstance(denial, UpstreamRejected) else None
            raise
        except asyncio.CancelledError:
            # Cut short (a shutdown, the client's task cancelled): not the backend's failure. It was counted
            # as one with error.type "CancelledError" on every deploy; the handshake says why it ended.
            cancelled = True
            raise
        except BaseException as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            if inline is not None:
                if status is not None:
                    inline[n.UPSTREAM_STATUS] = status
                if error_type is not None:
                    inline[n.UPSTREAM_ERROR] = error_type
            if span is not None and status == 101 and error_type is None:
                end_own(span, _UPGRADED)
            elif span is not None:
                result: Attrs = {n.HTTP_STATUS: status} if status is not None else {}
                if error_type is not None:
                    result[n.ERROR_TYPE] = error_type
                    span.set_status(StatusCode.ERROR, error_type)
                end_own(span, result)
            if telemetry.metrics is not None and not cancelled:
                telemetry.metrics.upstream_attempt(backend.metric, time.perf_counter() - started, error_type, status)

    def relay_io(self, receive: Receive, upstream: UpstreamConnection) -> tuple[Receive, UpstreamConnection]:
        """The relay's client ``receive`` and upstream, wrapped when per-message events are on."""
        ratio = self._telemetry.config.message_events
        if ratio <= 0 or self.span is None:
            return receive, upstream
        self._events = events = MessageEvents(ratio)
        return events.wrap_receive(receive), events.wrap_upstream(upstream)

    def denied(self, denial: HandshakeDenied, error: BaseException | None = None) -> None:
        """The handshake was refused with ``denial`` (``error``: the gateway failed with it)."""
        policy = getattr(denial, "policy", None)
        if self.span is not None:  # the full detail, which a 5xx response body does not carry
            self.span.set_attribute(n.DENIAL_DETAIL, client_text(denial.detail))  # may name a URL, quote a value
        if error is not None:
            if self.span is not None:  # an exception's message may embed a URL with the client's query
                stack = "".join(traceback.format_exception(error))
                self.span.record_exception(error, attributes={
                    "exception.message": client_text(str(error)), "exception.stacktrace": redact_text(stack)
                })  # fmt: skip
            self._finish("error", denial.status, type(error).__qualname__, None)
        else:
            self._finish("denied", denial.status, denial.reason, policy if isinstance(policy, str) else None)

    @property
    def trace_id(self) -> str | None:
        """The handshake's trace id (32 hex digits) when it is traced, for a client to quote."""
        context = self.span.get_span_context() if self.span is not None else None
        return trace.format_trace_id(context.trace_id) if context is not None and context.is_valid else None

    def abandoned(self, reason: str) -> None:
        """The client left, or the task was cancelled, before accept (a no-op once finished)."""
        self._finish("abandoned", None, reason, None)

    def accepted(self, backend: str, subprotocol: str | None, stats: RelayStats) -> ConnectionTrace:
        """The client was accepted: end the handshake span, start the connection's."""
        recorded = protocol_name(subprotocol) if subprotocol else None  # clients put bearer tokens there
        self._finish("accepted", 101, None, None, {n.SUBPROTOCOL: recorded} if recorded else None)
        return ConnectionTrace(self, self._telemetry, backend, recorded, stats)

    def _finish(
        self,
        outcome: n.Outcome,
        status: int | None,
        error_type: str | None,
        policy: str | None,
        attrs: Attrs | None = None,
    ) -> None:
        if self._finished:
            return
        self._finished = True
        seconds = time.perf_counter() - self._started
        span = self.span
        if span is not None:
            if attrs is None and outcome == "accepted" and self._upstream is None and self.attempts < 2:
                end_own(span, _ACCEPTED)  # the usual accept: no subprotocol, no failover
            else:
                if outcome == "error" or (status is not None and status >= 500):
                    span.set_status(StatusCode.ERROR, error_type)
                end_own(span, self._final_attributes(outcome, status, error_type, policy, attrs or {}))
        if self._otel_token is not None:
            current.detach(self._otel_token)
        if outcome == "accepted" or outcome == "abandoned":
            self.release()  # a refusal stays current while it is sent: the middleware releases it
        telemetry = self._telemetry
        if telemetry.metrics is not None:
            telemetry.metrics.handshake(self.api.name, outcome, status, error_type, policy, seconds)
        if outcome != "accepted" and telemetry.access.enabled:
            fields = self.fields()
            fields.update(status=status, outcome=outcome, reason=error_type, policy=policy, duration=round(seconds, 6))
            telemetry.access.write(fields, span)

    def _final_attributes(
        self, outcome: n.Outcome, status: int | None, error_type: str | None, policy: str | None, attrs: Attrs
    ) -> Attrs:
        """The handshake span's last attributes, added to ``attrs``."""
        if self._upstream is not None:
            attrs.update(self._upstream)
        attrs[n.OUTCOME] = outcome
        if status is not None:
            attrs[n.HTTP_STATUS] = status
        if self.attempts > 1:  # failover happened (each attempt is a child span, but for an inline first)
            attrs[n.ATTEMPTS] = self.attempts
        if error_type is not None and outcome != "accepted":
            attrs[n.ERROR_TYPE] = error_type
        if policy is not None:
            attrs[n.POLICY] = policy
        return attrs

    def release(self) -> None:
        """Stop being the task's current handshake (once): at accept or abandon, and by the middleware
        once a refusal is sent, so that the server's own line for it knows the access line says it."""
        token, self._token = self._token, None
        if token is not None:
            try:  # noqa: SIM105  (contextlib.suppress: three Python calls per connection)
                HANDSHAKE.reset(token)
            except ValueError:  # reset from another context: nothing to restore
                pass

    def fields(self) -> dict[str, Any]:
        """The access-log fields known at the handshake."""
        client = self.scope.get("client")
        peer = f"{address_text(client[0])}:{client[1]}" if client else "-"
        fields = {
            "api": self.api.name, "route": self.api.route,
            "path": self.path if self.path is not None else client_path(self.scope.get("path", "")),
            "client": self.client or peer, "subject": self.subject, "subscription": self.subscription,
        }  # fmt: skip
        if self.client is not None:  # the trusted proxy the client came through ("unix:", the socket's peer)
            fields["peer"] = peer if client or not unix_socket_peer(self.scope) else UNIX_SOCKET_PEER
        return fields


__all__ = ["HandshakeTrace", "TracedConnector"]
