"""``WebSocketGateway``: the ASGI middleware that owns the configured WebSocket APIs' paths."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._types import ASGIApp, Message, Receive, Scope, Send
from .balancing import Backend, BackendPool
from .config import ApiConfig, GatewayConfig, UpstreamConfig, load_config
from .errors import HandshakeDenied
from .inprocess import InProcessConnector
from .lifecycle import ConnectionRegistry, watchdog
from .relay import Relay
from .responses import send_denial
from .routing import Router
from .telemetry import ConnectionTrace, Telemetry, TracedConnector
from .upstream import Connector, WebSocketsConnector, build_request

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger(__name__)


class _Api:
    """An API's configuration with what is derived from it once, at start-up."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.pool = BackendPool(
            config,
            [Backend(label=u.label, connector=_connector(config, u), index=i) for i, u in enumerate(config.upstreams)],
        )


def _connector(api: ApiConfig, upstream: UpstreamConfig) -> Connector:
    kind = InProcessConnector if upstream.kind == "asgi" else WebSocketsConnector
    return TracedConnector(kind(api, upstream), api.name, upstream)  # a pass-through unless telemetry is on


class WebSocketGateway:
    """Proxies the WebSocket APIs of a configuration; every other scope goes to ``app`` untouched.

    Args:
        app: the ASGI application being wrapped.
        config: a :class:`GatewayConfig`, a mapping of the same shape, or the path of a YAML or
            JSON file. Validated here: an invalid configuration raises
            :class:`~asgi_ws_gateway.errors.ConfigError` listing every problem by field path.
        tracer_provider, meter_provider, logger_provider: OpenTelemetry providers to use instead
            of the global ones (default) or OTLP exporters configured from ``OTEL_*`` (see
            docs/telemetry.md). ``logger_provider`` is used only with ``telemetry.export_logs``.

    On ASGI lifespan shutdown the gateway drains (see :meth:`drain`) before the wrapped app shuts
    down, then flushes and stops the telemetry exporters it started.
    """

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
        self.config = load_config(config)
        self._providers: dict[str, Any] = {
            "tracer_provider": tracer_provider, "meter_provider": meter_provider, "logger_provider": logger_provider
        }  # fmt: skip
        self._telemetry = Telemetry(self.config, **self._providers)
        self._apis = [_Api(api) for api in self.config.apis]
        self._router = Router((api.config.path, api) for api in self._apis)
        self._connections = ConnectionRegistry()
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def telemetry(self) -> Telemetry:
        """Spans, metrics and the access log (``force_flush()`` exports what is buffered now)."""
        return self._telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            resolved = self._router.resolve(scope["path"])
            if resolved is not None:
                api, params = resolved
                await self._handle(api, params, scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        await self.app(scope, receive, send)

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

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._draining = False  # the same app object may be served again
                if self._telemetry.closed:
                    self._telemetry = Telemetry(self.config, **self._providers)
            elif message["type"] == "lifespan.shutdown":
                await self.drain()
                await asyncio.to_thread(self._telemetry.shutdown)  # exporters flush over the network
            return message

        return wrapped

    async def _handle(self, api: _Api, params: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake started
        started = time.monotonic()
        handshake = self._telemetry.handshake(api.config, scope)  # span ended at accept or denial
        try:
            if self._draining:
                raise HandshakeDenied(503, "the gateway is shutting down", headers=[(b"retry-after", b"5")],
                                      reason="draining")  # fmt: skip
            cfg = api.config
            backend, upstream = await api.pool.connect(
                lambda b: build_request(cfg, cfg.upstreams[b.index], scope, params)
            )
        except HandshakeDenied as denial:
            handshake.denied(denial)
            await self._deny(api, scope, send, denial, started)
            return
        except Exception as exc:
            logger.exception("API %s: handshake failed", api.config.name)
            failure = HandshakeDenied(500, "the gateway failed", reason="error")
            handshake.denied(failure, error=exc)
            await self._deny(api, scope, send, failure, started)
            return
        except BaseException:
            handshake.abandoned("cancelled")
            raise

        backend.active += 1
        receive, upstream = handshake.relay_io(receive, upstream)  # wrapped only for message events
        relay = Relay(receive, send, upstream, max_message_size=api.config.max_message_size)
        self._connections.add(relay)
        guard: asyncio.Task[None] | None = None
        connection: ConnectionTrace | None = None
        try:
            try:
                await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol,
                            "headers": upstream.response_headers})  # fmt: skip
            except OSError:
                await upstream.close(1001, "client went away")
                return
            connection = handshake.accepted(backend.label, upstream.subprotocol, relay.stats)
            cfg = api.config
            if cfg.idle_timeout is not None or cfg.max_lifetime is not None:
                guard = asyncio.create_task(
                    watchdog(relay, idle_timeout=cfg.idle_timeout, max_lifetime=cfg.max_lifetime)
                )
            await relay.run()
        finally:
            if connection is not None:
                connection.closed(relay.stats)  # span, metrics, access log
            else:
                handshake.abandoned("client went away")
            if guard is not None:
                guard.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await guard
            self._connections.remove(relay)
            backend.active -= 1

    async def _deny(self, api: _Api, scope: Scope, send: Send, denial: HandshakeDenied, started: float) -> None:
        logger.info("API %s: handshake denied with %d (%s): %s", api.config.name, denial.status, denial.reason,
                    denial.detail)  # fmt: skip
        with contextlib.suppress(OSError):
            await send_denial(scope, send, denial)


__all__ = ["WebSocketGateway"]
