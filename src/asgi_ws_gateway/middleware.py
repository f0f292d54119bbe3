"""``WebSocketGateway``: the ASGI middleware that owns the configured WebSocket APIs' paths."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log_redaction, redact
from ._types import ASGIApp, Message, Receive, Scope, Send
from .admission import AdmissionChecks, Api, Counted, backend_connections, draining_refusal, retired_backends
from .config.checks import config_warnings
from .config.gateway import GatewayConfig
from .config.products import ProductConfig, SubscriptionConfig
from .errors import ConfigError, HandshakeDenied
from .forwarded import Networks, rewritten_by_server
from .handshake.capacity import check_capacity, descriptor_capacity, over_capacity, process_capacity
from .handshake.context import HandshakeContext
from .handshake.forwarding_loop import check_forwarding_loop
from .handshake.header_limits import check_header_limits, check_lists, check_no_underscores, without_underscored
from .handshake.host_header import check_host
from .handshake.refusals import RefusalLog
from .handshake.request_view import RequestView
from .handshake.responses import send_denial
from .log_throttle import OutageLog
from .loop_watch import LoopWatch
from .passthrough.asgi_extension import EXTENSION, STOPPED
from .passthrough.lingering_close import lingering_count
from .passthrough.raw_upstream import RawUpstream
from .passthrough.splice import Splice
from .policies.build import GatewayPolicies, load_policies
from .policies.jwt_subject import token_subject
from .proxying import open_proxy
from .redis_client.task_stop import stop_task
from .relay.close_codes import CLIENT_GONE, SHUTDOWN_REFUSAL
from .relay.lifecycle import ConnectionRegistry, RelayHandle, TrackedConnection, watchdog
from .relay.pumps import Relay
from .routing import Router, resolve_scope
from .startup import StartupFailure, built_by_starlette, unread_variable_warnings, variable_problems
from .state.base import Store
from .state.startup_check import warn_if_unreachable
from .telemetry import ConnectionTrace, Telemetry
from .upstream.backend_caps import ConnectionSlot
from .upstream.base import UpstreamConnection
from .upstream.checks import check_path_params
from .upstream.head_limits import head_limit
from .upstream.inprocess_lifespan import AppLifespans, AppStartupFailed
from .upstream.set_cookies import read_cookie_names

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger(__name__)


_UNGUARDED_SERVER = (
    "the server does not run the gateway's protocols (uvicorn's own, as under a bare 'uvicorn app:app'): a client "
    "can hold connections by sending a request head slowly or never, send heads of any size, make the server "
    "buffer a message past max_message_size, queue --ws-max-queue messages of --ws-max-size each (--ws "
    "websockets: 32 of 16 MiB, 512 MiB a connection) while an upstream reads nothing, and flood pings whose "
    "answers are never read; serve with --ws "
    "asgi_ws_gateway.server:GatewayWebSocketProtocol --http asgi_ws_gateway.server:GatewayHTTPProtocol, as "
    "'asgi-ws-gateway run' does (docs/security.md)"
)
"""Logged once, at the first handshake served without the gateway's WebSocket protocol."""


def _redact_credentials_of(config: GatewayConfig) -> frozenset[str]:
    """Redact from now on the credential headers of ``config`` and its paths' credential segments
    (``/ws/{api_key}``, an upstream's ``/feed/{token}``), in every log line, span and access record.
    Returns the folded names of the cookies its policies read, which no upstream's answer sets
    (``upstream.set_cookies``)."""
    document = config.model_dump()
    # The headers it reads credentials from or writes a client's credential to.
    headers = {*config.subscription_key.headers, *redact.credential_headers(document)}
    redact.add_sensitive_headers(headers)
    redact.add_credential_paths(redact.credential_path_templates(document, headers))
    return read_cookie_names(document)


class WebSocketGateway(AdmissionChecks):
    """Proxies the WebSocket APIs of a configuration; every other scope goes to ``app`` untouched.

    Args:
        app: the ASGI application being wrapped.
        config: a :class:`GatewayConfig`, a mapping of the same shape, or the path of a YAML or
            JSON file. Validated here: an invalid configuration raises
            :class:`~asgi_ws_gateway.errors.ConfigError` listing every problem by field path.
        tracer_provider, meter_provider, logger_provider: OpenTelemetry providers to use instead
            of the global ones (default) or OTLP exporters configured from ``OTEL_*`` (see
            docs/telemetry.md). ``logger_provider`` is used only with ``telemetry.export_logs``.

    On ASGI lifespan start-up the gateway runs the lifespan start-up of each of its in-process
    (``asgi:``) upstream apps, once per app; one that fails it fails the gateway's start-up. On
    shutdown the gateway drains (see :meth:`drain`), shuts those apps down, then the wrapped app shuts
    down, and the gateway flushes and stops the telemetry exporters it started.

    Built by Starlette (``app.add_middleware(WebSocketGateway, config=...)``), an invalid
    configuration does not raise: the gateway answers the lifespan start-up with
    ``lifespan.startup.failed`` and the problems, so that uvicorn stops instead of serving 500s.

    Constructing it puts a :class:`~asgi_ws_gateway.log_redaction.RedactingFilter` on uvicorn's loggers
    (their lines carry request query strings) and redacts every record of the libraries it drives
    (``log_redaction.LIBRARY_LOGGERS``: httpx, urllib3, OpenTelemetry...) as it is made.
    """

    _failed: StartupFailure | None = None
    _proxy_warned = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: GatewayConfig | Mapping[str, Any] | str | Path,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.app = app
        log_redaction.install()
        try:
            policies = load_policies(config)
        except ConfigError as exc:
            if not built_by_starlette():
                raise
            self._failed = StartupFailure(exc)
            return
        self._connections = ConnectionRegistry()
        self._in_flight = 0  # handshakes in progress and connections open: what max_connections bounds
        self._draining = False
        self._server_checked = False  # whether the first handshake told if the server runs the gateway's protocol
        self._loop_watch = LoopWatch()  # a WARNING when something blocks the event loop (from start-up)
        self._store_check: asyncio.Task[None] | None = None  # warn_if_unreachable, from the lifespan start-up
        self._apis: dict[str, Api] = {}
        # What ws_gateway.upstream.connections reads, on the metric reader's thread: the APIs in force and the
        # backends changes removed whose connections drain (admission.retired_backends), replaced together.
        self._metered: tuple[tuple[Api, ...], tuple[Counted, ...]] = ((), ())
        self._app_lifespans = AppLifespans()  # the in-process upstream apps' own (upstream.inprocess_lifespan)
        self.config: GatewayConfig
        self._policies: GatewayPolicies
        self._install(policies, _redact_credentials_of(policies.config))
        unread = [] if getattr(app, "standalone", False) else unread_variable_warnings()
        for warning in [*config_warnings(self.config), *policies.warnings, *unread]:
            logger.warning("%s", warning)
        self._providers: dict[str, Any] = {
            "tracer_provider": tracer_provider, "meter_provider": meter_provider, "logger_provider": logger_provider,
            "backends": lambda: backend_connections(*self._metered),  # one read: both from the same change
        }  # fmt: skip
        # Telemetry is set up from the configuration given here; apply_config does not change it.
        self._telemetry = Telemetry(self.config, **self._providers)
        self.refusals = RefusalLog()
        """The last refused handshakes of this process (redacted), for the management console."""

    def count_locally(self) -> None:
        """Keep the metric counters even without a meter provider (the management console charts them)."""
        self._providers["count"] = True
        self._telemetry.count_locally()

    def _same_store(self, config: GatewayConfig) -> Store | None:
        """The store (and the leases open connections hold in it) survives unless its settings change."""
        old = getattr(self, "_policies", None)
        return old.store if old is not None and self.config.store == config.store else None

    def _install(self, policies: GatewayPolicies, read_cookies: frozenset[str]) -> GatewayPolicies | None:
        """Switch to the configuration ``policies`` were built from (``read_cookies``: the cookies its
        policies read); returns the replaced policies, to close."""
        old = getattr(self, "_policies", None)
        config = policies.config
        # No await from here on: a handshake sees either the old configuration or the new one, whole.
        products: dict[str, tuple[ProductConfig, ...]] = {}
        for product in config.products:
            for name in product.apis:
                products[name] = (*products.get(name, ()), product)
        limits = config.handshake_limits
        head = head_limit(limits.max_header_bytes, limits.max_target_bytes)
        before = self._apis
        self._apis = {
            api.name: Api.serving(
                api,
                before.get(api.name),
                products.get(api.name, ()),
                head,
                self._app_lifespans,
                config.upstream_networks,
            )
            for api in config.apis
        }
        serving = tuple(self._apis.values())
        self._metered = (serving, retired_backends(before.values(), serving, self._metered[1]))
        self._subscriptions: dict[str, SubscriptionConfig] = {s.id: s for s in config.subscriptions}
        self._router = Router((api.config.path, api) for api in self._apis.values())
        self._policies = policies
        self._read_cookies = read_cookies
        self._trusted = Networks(config.trusted_proxies)
        self._capacity = process_capacity(config.max_connections)
        self._room = descriptor_capacity()  # lingering descriptors count against it (handshake.capacity)
        # What every handshake reads, as plain attributes: a pydantic model's attribute read goes through
        # its ``__getattr__`` hook (~400 instructions more than a plain one's).
        self._limits = limits
        self._underscores = limits.headers_with_underscores
        self._max_hops = limits.max_gateway_hops
        self._message_events = bool(config.telemetry.message_events)
        self.config = config
        return old

    async def apply_config(
        self, config: GatewayConfig | Mapping[str, Any] | str | Path, *, drain: bool = False
    ) -> list[str]:
        """Replace the configuration for new handshakes; open connections keep their settings.

        Args:
            config: as for the constructor, validated the same way (``ConfigError`` leaves the
                current configuration in place).
            drain: also close, with ``drain_close_code``, the open connections of every API that
                was changed or removed.

        Returns:
            The names of the APIs that were added, changed or removed.
        """
        applying: asyncio.Lock = self.__dict__.setdefault("_applying", asyncio.Lock())
        async with applying:  # one at a time, installed in the order asked, each built on the one before
            # Validated and built in a thread (CPU-bound: at 1,000 APIs it held every connection of the
            # worker for seconds), taking over what is unchanged from the policies it replaces.
            policies = await asyncio.to_thread(
                load_policies, config, store=self._same_store, previous=getattr(self, "_policies", None)
            )
            new = policies.config
            # A change may bring a token header, a set-header copying a credential or a credential path.
            read_cookies = await asyncio.to_thread(_redact_credentials_of, new)
            for warning in policies.warnings:
                logger.warning("%s", warning)
            await self._app_lifespans.start_later(self._inprocess_apps(new))  # before a handshake reaches them
            old_apis = {name: api.config for name, api in self._apis.items()}
            new_apis = {api.name: api for api in new.apis}
            changed = sorted(
                name for name in old_apis.keys() | new_apis.keys() if old_apis.get(name) != new_apis.get(name)
            )
            replaced = self._install(policies, read_cookies)
            self._telemetry.add_apis(new.apis)
            if replaced is not None:
                # Open connections keep their settings, and their concurrency leases keep counting: in the
                # same store only (a replaced store is closed, and the new limits count in the new one).
                same_store = replaced.store is self._policies.store
                if not same_store:  # the start-up's check would find the replaced store closed
                    await self._stop_store_check()
                await replaced.aclose(close_store=not same_store, keep_leases=same_store, successor=policies)
        if drain and changed:
            await self._connections.drain(
                new.drain_close_code, "API configuration changed", new.drain_grace_period, apis=set(changed)
            )
        return changed

    def connections(self) -> list[TrackedConnection]:
        """The connections open on this gateway (this process) now."""
        return self._connections.list()

    async def send_to_connection(self, connection_id: str, data: str | bytes) -> bool:
        """Send a message to one open connection's client; False if no such connection is open here."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return False
        return await connection.relay.send_to_client(data)

    async def close_connection(self, connection_id: str, code: int = 1000, reason: str = "") -> bool:
        """Close one open connection, both sides, with ``code``.

        Returns:
            True when this call began its close (its sides are sent ``code``); False when no such
            connection is open here, or it is closing already, whatever began that (its client's or
            upstream's close, a policy, a drain, the server's shutdown, an earlier call): nothing is sent
            then. Decided before the first wait: returns once the closing handshake is done (bounded by
            the API's ``close_timeout``).
        """
        connection = self._connections.get(connection_id)
        if connection is None or connection.relay.closing:
            return False
        return await connection.relay.close(code, reason, code, reason)

    def client_ip(self, scope: Scope) -> str:
        """The client's address for an HTTP or WebSocket ``scope``, decided as for a handshake: the TCP
        peer, or what the configuration's ``trusted_proxies`` report in its ``forwarded_header``;
        ``unknown`` when either is text that is no address (a server's rewrite from ``X-Forwarded-For``)."""
        return RequestView(scope, {}, self._trusted, self.config.forwarded_header).client.ip

    def serves(self, path: str) -> bool:
        """True when ``path`` belongs to one of the configured WebSocket APIs."""
        return self._router.resolve(path) is not None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def full(self) -> bool:
        """At ``max_connections`` (or what the open-file limit allows): the next handshake gets 503.
        ``/readyz`` says so, so that a load balancer sends new clients elsewhere until a place frees."""
        return over_capacity(self._in_flight + 1, self._capacity, lingering=lingering_count(), room=self._room)

    @property
    def telemetry(self) -> Telemetry:
        """Spans, metrics and the access log (``force_flush()`` exports what is buffered now)."""
        return self._telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._failed is not None:
            await self._failed(scope, receive, send)
            return
        if scope["type"] == "websocket":
            resolved, disguised = resolve_scope(self._router, scope)
            if resolved is not None:
                if not self._proxy_warned:
                    self._warn_if_rewritten(scope)
                api, params = resolved
                self._in_flight += 1
                try:
                    await self._handle(api, params, scope, receive, send, disguised=disguised)
                finally:
                    self._in_flight -= 1
                return
        elif scope["type"] == "lifespan":
            problems = variable_problems()  # the server's protocols read variables when imported
            if problems:
                await StartupFailure(ConfigError(problems, "environment"))(scope, receive, send)
                return
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _warn_if_rewritten(self, scope: Scope) -> None:
        """Once: the server rewrote the client address from a forwarding header the gateway did not trust."""
        if rewritten_by_server(scope, self._trusted):
            self._proxy_warned = True
            logger.warning(
                "the server rewrote the client address from a forwarding header (uvicorn's --proxy-headers, on by "
                "default): trusted_proxies cannot decide who the client is and ip-filter can be bypassed; run "
                "uvicorn with --no-proxy-headers, or --forwarded-allow-ips set to the gateway's trusted_proxies"
            )

    async def drain(self, grace: float | None = None, code: int | None = None) -> None:
        """Refuse new handshakes with 503 and close open connections.

        Args:
            grace: seconds open connections get to finish their closing handshakes before they are
                aborted (default: the config's ``drain_grace_period``).
            code: the close code sent to both sides (default: the config's ``drain_close_code``).
        """
        self._draining = True
        await self._connections.drain(
            code or self.config.drain_close_code,
            "gateway shutting down",
            self.config.drain_grace_period if grace is None else grace,
        )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, the gateway's start-up and shutdown in it; the gateway's alone when the app
        handles none. Django's ASGI handler raises on a lifespan scope and a bare app returns: uvicorn
        then reported the lifespan unsupported (``--lifespan on`` refused to start), and at shutdown the
        gateway neither drained nor flushed its telemetry nor closed its store."""
        failed = False  # the gateway answered lifespan.startup.failed itself: the app's answers are not sent

        async def answering(message: Message) -> None:
            if not failed:
                await send(message)

        async def gateway_receive() -> Message:
            nonlocal failed
            try:
                return await self._lifespan_receive(scope, receive)
            except AppStartupFailed as exc:
                failed = True  # the server prints the message (uvicorn at ERROR) and exits
                await send({"type": "lifespan.startup.failed", "message": f"{exc}; not starting"})
                self._loop_watch.stop()
                await self._stop()
                raise

        read = False

        async def reading() -> Message:
            nonlocal read
            read = True
            return await gateway_receive()

        try:
            await self.app(scope, reading, answering)
        except Exception as exc:
            if failed:
                return  # the app got the failure at its receive(): the server was told
            if read:
                raise
            # A WARNING: an app's own start-up that raised before reading its lifespan is hidden here.
            logger.warning("the application raised on its lifespan before reading it (%s): the gateway answers "
                           "start-up and shutdown alone",
                           redact.printable(f"{type(exc).__name__}: {exc}"[:200], quote=False))  # fmt: skip
        if read or failed:
            return
        while True:
            try:
                kind = (await gateway_receive())["type"].removeprefix("lifespan.")
            except AppStartupFailed:
                return
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    async def _lifespan_receive(self, scope: Scope, receive: Receive) -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            self._draining = False  # the same app object may be served again
            if self._telemetry.closed:
                self._telemetry = Telemetry(self.config, **self._providers)
            self._loop_watch.start()
            await self._app_lifespans.start(self._inprocess_apps(self.config), scope.get("asgi"))
            # In the background: the start-up (and readiness) waits for no Redis.
            self._store_check = asyncio.get_running_loop().create_task(warn_if_unreachable(self._policies.store))
        elif message["type"] == "lifespan.shutdown":
            self._loop_watch.stop()
            await self.drain()
            await self._stop()
        return message

    def _inprocess_apps(self, config: GatewayConfig) -> list[tuple[str, str, ASGIApp]]:
        """The in-process upstream apps of ``config`` whose lifespan is the gateway's to run, as (API name,
        label, app) in the order configured: not the application the gateway wraps, nor what that wraps
        (``.app``) or routes with (Starlette's ``.router``): the server runs their lifespan already."""
        served: set[int] = set()
        chain: list[object] = [self.app]
        while chain and len(served) < 64:
            app = chain.pop()
            if app is not None and id(app) not in served:
                served.add(id(app))
                chain += [getattr(app, "app", None), getattr(app, "router", None)]
        return [
            (api.name, upstream.label, upstream.app)
            for api in config.apis
            for upstream in api.upstreams
            if upstream.kind == "asgi" and upstream.app is not None and id(upstream.app) not in served
        ]

    async def _stop_store_check(self) -> None:
        check, self._store_check = self._store_check, None
        if check is not None:
            await stop_task(check)

    async def _stop(self) -> None:
        """After the drain: the in-process apps shut down (their connections closed), then the gateway's own parts."""
        await self._stop_store_check()
        await self._app_lifespans.shutdown()
        await self._policies.aclose()
        await asyncio.to_thread(self._telemetry.shutdown)  # over the network: telemetry.shutdown_timeout

    async def _handle(
        self,
        api: Api,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        disguised: str | None = None,
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake started
        if not self._server_checked:
            self._server_checked = True
            if EXTENSION not in (scope.get("extensions") or {}):
                logger.warning(_UNGUARDED_SERVER)
        policies = self._policies  # the configuration in force when the handshake started
        limits, underscores, max_hops = self._limits, self._underscores, self._max_hops  # (set with _policies)
        headers = scope["headers"]  # as the client sent them, for the size limits
        if underscores == "drop":
            scope = without_underscored(scope)  # before anything reads the request
        handshake = policies.context(api.name, scope, params)
        # Behind trusted proxies, spans and the access log name the client they reported, not the proxy.
        client = handshake.request.client.ip if self._trusted else None
        # Read for trust_client_trace: trusted_proxies alone: a trusted proxy's trace context is continued.
        from_proxy = (  # the telemetry's setting: its section is read at start-up (a reload leaves it)
            self._telemetry.trust_client_trace == "trusted_proxies" and handshake.request.peer_is_trusted_proxy
        )
        trace = self._telemetry.handshake(api.config, scope, client, from_proxy=from_proxy)  # ended at accept or denial
        upstream: UpstreamConnection | RawUpstream | None = None
        slot: ConnectionSlot | None = None  # the backend's max_connections slot, once connected
        relay: RelayHandle
        try:
            if self._draining:
                raise draining_refusal()
            check_capacity(self._in_flight, self._capacity, lingering=lingering_count(), room=self._room)
            check_header_limits(headers, _target(scope), limits)
            check_lists(scope)
            if underscores == "reject":
                check_no_underscores(headers)
            check_host(scope["headers"])
            check_forwarding_loop(scope["headers"], max_hops)
            if disguised is not None:
                raise HandshakeDenied(400, disguised, reason="bad_request")
            check_path_params(params)
            handshake.request.subprotocols  # noqa: B018  (read once here: a non-token is a 400 before any policy counts)
            await policies.run(handshake)
            subject = _subject(handshake.claims)
            trace.identify(subject=subject, subscription=_subscription_id(handshake))
            message_policies = policies.message_policies(handshake)
            # Every backend's request, built and checked before any connect: one the client's values
            # made unsendable is a 400 and never counts against a backend.
            requests = [
                handshake.build_request(api.config, upstream_config, max_head=api.head_limit)
                for upstream_config in api.config.upstreams
            ]
            handshake.request.forget_many_values()  # the view lives as long as the connection
            backend, upstream, relay, accept, slot = await open_proxy(
                api, scope, receive, send, handshake=handshake, trace=trace, message_policies=message_policies,
                requests=requests, message_events=self._message_events,
                read_cookies=self._read_cookies,
            )  # fmt: skip
            if policies is not self._policies or self._draining:  # changed while the handshake ran
                self._check_still_admitted(api, handshake.subscription)
        except BaseException as exc:
            # Connected, then refused (a change or a drain meanwhile): the upstream is closed below.
            if slot is not None:
                slot.release()
            # The gateway's protocol cancels the task when the client leaves before the answer, or when
            # the server shuts down: each cancellation is taken back here (any other propagates).
            if _taken_back(exc, CLIENT_GONE, scope):  # nothing to answer: no refusal sent or logged
                trace.abandoned("client went away")
                await _undo(handshake, upstream, left=True)
                return
            stopped = _taken_back(exc, SHUTDOWN_REFUSAL, scope)
            await _undo_refused(handshake, upstream, scope)
            if stopped:  # refused as a drain refuses
                exc = draining_refusal()
            elif not isinstance(exc, Exception):
                trace.abandoned("cancelled")
                raise
            error: Exception | None = None
            if isinstance(exc, HandshakeDenied):
                denial = exc
            else:
                logger.exception("API %s: handshake failed", api.config.name)
                denial, error = HandshakeDenied(500, "the gateway failed", reason="error"), exc
            trace.denied(denial, error)  # span, metrics, access line: all done when the client reads the answer
            try:
                await self._deny(api, scope, send, denial, trace.trace_id, access_logged=trace.writes_access_line)
            finally:
                # Current until now: the server's own status line, written while the refusal is sent,
                # is folded into the access line above by the gateway's protocol.
                trace.release()
            return

        # No await since the check above: a change applied later finds this connection open and drains it.
        trial = api.pool.opened(backend, slot)  # active, its end judged as the backend's health, its slot given back
        live = self._connections.add(relay, api=api.name, scope=scope, client=client)
        # The subject as identify recorded it (client_text's, from these claims: made once a handshake).
        shown = trace.subject if subject is not None else None
        live.subject = redact.printable(shown, quote=False) if shown is not None else None
        live.subscription = _subscription_id(handshake)
        live.backend = backend.label
        guard: asyncio.Task[None] | None = None
        lease_end: asyncio.Task[None] | None = None
        connection: ConnectionTrace | None = None
        try:
            try:
                await send(accept)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await upstream.close(1001, "client went away")
                if isinstance(exc, OSError):
                    return  # the client left during the handshake
                raise
            # Nothing of the handshake's own is needed any more; an idle connection would hold it.
            del accept
            requests.clear()
            connection = trace.accepted(backend.label, upstream.subprotocol, relay.stats)
            expires_at = handshake.subscription.expires_at if handshake.subscription is not None else None
            idle_timeout, max_lifetime = api.idle_timeout, api.max_lifetime
            if idle_timeout is not None or max_lifetime is not None or expires_at is not None:
                guard = asyncio.create_task(
                    watchdog(relay, idle_timeout=idle_timeout, max_lifetime=max_lifetime, expires_at=expires_at)
                )
            if isinstance(relay, Relay | Splice) and handshake.holds_cleanups:  # (no task for nothing to release)
                lease_end = asyncio.create_task(_release_when_client_over(relay.client_over, handshake))
            await relay.run()
        finally:
            # How it ended (the upstream's failure soon after its 101?), judged first: the backend's
            # "failed" line comes before the access line, the connection's last, and the backend is
            # judged before the connection leaves the count (a reader of either had seen it unjudged).
            trial.ended(relay.stats)
            try:
                # Then what it holds is given back: a failed release's lines (the store's, the lease
                # keeper's) come before the access line too. Its duration ends here, not after the release.
                if connection is not None and (lease_end is not None or handshake.holds_cleanups):
                    connection.ended()
                if lease_end is not None:
                    if not isinstance(relay, Relay | Splice) or not relay.client_over.is_set():
                        lease_end.cancel()  # still waiting: the release below is the one
                    await asyncio.wait([lease_end])  # a release under way is not cut (a lease would outlive it)
                await handshake.release()
            finally:
                if connection is not None:
                    connection.closed(relay.stats)  # span, metrics, access log
                else:
                    trace.abandoned("client went away")
                if guard is not None:
                    guard.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await guard
                self._connections.remove(relay)

    async def _deny(
        self, api: Api, scope: Scope, send: Send, denial: HandshakeDenied, trace_id: str | None = None, *,
        access_logged: bool = False,
    ) -> None:  # fmt: skip
        # A 5xx is a failure on this side (warning); the client gets its detail only in development.
        # Through a flood of them (the upstream down), one WARNING per reason now and then says how
        # many: each refusal has its access line, span, metric and GET /refusals entry.
        # A 4xx's detail is what the client was told: at DEBUG when the access line (its reason and
        # policy) is written, so that a refused handshake is one line, in a flood too.
        name, detail = api.config.name, redact.redact_text(denial.detail)
        if denial.status >= 500:
            logs = api.failure_logs
            if len(logs) > 64 and denial.reason not in logs:  # reasons come from code: a bound all the same
                logs.clear()
            log = logs.get(denial.reason) or logs.setdefault(denial.reason, OutageLog())  # built once per reason
            count = log.event()
            if count:
                more = f" ({count - 1} more since the last such line)" if count > 1 else ""
                logger.warning("API %s: handshake denied with %d (%s): %s%s", name, denial.status, denial.reason,
                               detail, more)  # fmt: skip
        else:
            logger.log(logging.DEBUG if access_logged else logging.INFO, "API %s: handshake denied with %d (%s): %s",
                       name, denial.status, denial.reason, detail)  # fmt: skip
        policy = getattr(denial, "policy", None)
        self.refusals.add(api=api.config.name, status=denial.status, reason=denial.reason,
                          policy=policy if isinstance(policy, str) else None, detail=denial.detail)  # fmt: skip
        with contextlib.suppress(OSError):
            await send_denial(scope, send, denial, expose_details=self.config.expose_error_details, trace_id=trace_id)


async def _release_when_client_over(client_over: asyncio.Event, handshake: HandshakeContext) -> None:
    """Release what the connection holds (its concurrency lease) once its client's side is over.

    A run ends after the upstream's closing handshake and TCP close (the relay), or once both sockets'
    lingering close is over (the splice): its client waits for neither, and one that closed and connected
    again at once was refused by its own lease (429). The upstream's close frame is sent by then, and its
    close is bounded by ``close_timeout``."""
    await client_over.wait()
    await handshake.release()


def _taken_back(exc: BaseException, marker: str, scope: Scope) -> bool:
    """The gateway's protocol cancelled the handshake with ``marker``: ``SHUTDOWN_REFUSAL`` (the server
    shuts down: the client gets the 503 a drain gives) or ``CLIENT_GONE`` (the client left: nothing is
    answered). Known by the cancellation's message, or by the scope (:data:`STOPPED`) when a library
    replaced it (anyio's cancel scopes: a client gone during a JWKS fetch was logged "cancelled" and its
    task left with a traceback). The cancellation is taken back, unless another one is pending too,
    which propagates."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    if marker not in exc.args and (scope.get("extensions") or {}).get(STOPPED) != marker:
        return False
    task = asyncio.current_task()
    return task is None or task.uncancel() == 0


async def _undo(handshake: HandshakeContext, upstream: UpstreamConnection | RawUpstream | None, *, left: bool) -> None:
    """Close the upstream a handshake that did not complete opened, and run its cleanups (its leases)."""
    if upstream is not None:  # connected, then failed: the upstream must not be left open
        code, reason = (1001, "client went away") if left else (1011, "gateway error")
        with contextlib.suppress(Exception):
            await upstream.close(code, reason)
    await handshake.release()


async def _undo_refused(
    handshake: HandshakeContext, upstream: UpstreamConnection | RawUpstream | None, scope: Scope
) -> None:
    """:func:`_undo` for a handshake being refused, carried to its end when the gateway's protocol cancels
    the task meanwhile (the client left, the server shuts down: taken back; any other cancellation
    propagates). A cleanup cut part way is lost alone; the next call runs the others (a lease left
    behind would be renewed for as long as the process runs)."""
    while True:
        try:
            await _undo(handshake, upstream, left=False)
            return
        except asyncio.CancelledError as exc:
            if not _cut_by_protocol(exc, scope):
                raise


def _cut_by_protocol(exc: asyncio.CancelledError, scope: Scope) -> bool:
    """The gateway's protocol cancelled the task while a refusal was being prepared (taken back): the
    refusal is still sent to a server shutting down, and to a client gone (quietly: it cannot be sent)."""
    return _taken_back(exc, CLIENT_GONE, scope) or _taken_back(exc, SHUTDOWN_REFUSAL, scope)


def _target(scope: Scope) -> bytes:
    raw = scope.get("raw_path")
    path: bytes = raw if raw and type(raw) is bytes else scope["path"].encode()
    return path + b"?" + scope["query_string"] if scope.get("query_string") else path


def _subject(claims: Mapping[str, Any] | None) -> str | None:
    """The principal a refresh must keep (``jwt_subject``): ``sub``, else a client-credentials token's client."""
    subject = token_subject(claims)
    return str(subject[1]) if subject is not None else None


def _subscription_id(handshake: HandshakeContext) -> str | None:
    return handshake.subscription.id if handshake.subscription is not None else None


__all__ = ["WebSocketGateway"]
