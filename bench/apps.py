"""The ASGI apps the bench serves under uvicorn, as ``--factory`` import strings.

Each factory reads the upstream's base URL (``ws://127.0.0.1:PORT``) from ``BENCH_UPSTREAM`` and
proxies ``/echo`` to ``BENCH_UPSTREAM + /echo``. The two PyPI proxies get their HTTP clients'
connection-pool limits lifted: with their defaults both stop at 100 concurrent connections, and the
idle-connection scenario would measure nothing past that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import ASGIApp, Receive, Scope, Send
from asgi_ws_gateway.standalone import not_found

UPSTREAM_ENV = "BENCH_UPSTREAM"
LOG_DIR_ENV = "BENCH_LOG_DIR"
ECHO_PATH = "/echo"

POLICY_SET = "interim"
"""Which handshake set ``gateway+policies`` runs; see :func:`policy_set`.

``"interim"`` until issue 3 (handshake policies) is merged: the gateway features that exist today,
each costing what it costs per connection. Switch to ``"issue-3"`` and fill in :func:`policy_set`
once ``validate-jwt``, ``rate-limit-by-key`` and ``set-header`` exist.
"""


def upstream_base() -> str:
    return os.environ[UPSTREAM_ENV].rstrip("/")


def _api(**extra: Any) -> dict[str, Any]:
    return {"name": "echo", "path": ECHO_PATH, "upstreams": [upstream_base() + ECHO_PATH], **extra}


def gateway_app() -> ASGIApp:
    """The gateway, bare: one API, every setting at its default."""
    return WebSocketGateway(not_found, config={"apis": [_api()]})


def gateway_picows_app() -> ASGIApp:
    """EVALUATION: the bare gateway with the picows upstream leg of :mod:`bench.picows_upstream`.

    The connector is swapped in after construction (the gateway has no switch for it): see that
    module for what it does not do.
    """
    from .picows_upstream import PicowsConnector

    gateway = WebSocketGateway(not_found, config={"apis": [_api(compression=None)]})
    for api in gateway._apis:
        for backend in api.pool.backends:
            backend.connector = PicowsConnector(api.config, api.config.upstreams[backend.index])
    return gateway


def policy_set() -> dict[str, Any]:
    """The API settings of ``gateway+policies`` — THE HOOK for issue 3's realistic onHandshake set.

    Interim set (what the core gateway has): an idle timeout and a maximum lifetime (a watchdog task
    per connection) and the access log on at INFO, written to a file (the "telemetry on" of today).
    When issue 3 lands, return instead::

        {"policies": [{"validate-jwt": {...cached keys...}},
                      {"rate-limit-by-key": {"key": "{jwt.sub}", ...}},
                      {"set-header": {"name": "x-user-id", "value": "{jwt.sub}"}}]}

    and give the load generator a bearer token (``PathSpec.headers`` in :mod:`bench.paths`).
    """
    if POLICY_SET != "interim":
        raise NotImplementedError(f"policy set {POLICY_SET!r} is not implemented yet (issue 3)")
    return {"idle_timeout": 300, "max_lifetime": 3600}


def _access_log_to_file() -> None:
    log_dir = os.environ.get(LOG_DIR_ENV)
    handler: logging.Handler = (
        logging.FileHandler(os.path.join(log_dir, f"access-{os.getpid()}.log")) if log_dir else logging.NullHandler()
    )
    access = logging.getLogger("asgi_ws_gateway.access")
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    access.propagate = False


def gateway_policies_app() -> ASGIApp:
    """The gateway with the handshake set of :func:`policy_set` and its access log on."""
    _access_log_to_file()
    return WebSocketGateway(not_found, config={"apis": [_api(**policy_set())]})


def asgiproxy_app() -> ASGIApp:
    """asgiproxy's simple proxy app, with an aiohttp session whose connection pool has no limit."""
    import aiohttp
    from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
    from asgiproxy.context import ProxyContext
    from asgiproxy.simple_proxy import make_simple_proxy_app

    class Config(BaseURLProxyConfigMixin, ProxyConfig):
        upstream_base_url = upstream_base().replace("ws://", "http://", 1)

    class UnlimitedContext(ProxyContext):
        @property
        def session(self) -> aiohttp.ClientSession:
            if not self._session:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                )
            return self._session

    app: ASGIApp = make_simple_proxy_app(UnlimitedContext(Config()), proxy_http_handler=None)
    return app


async def minimal_relay_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The issue's "minimal ASGI relay": a ``websockets`` client and two pumps, nothing else.

    The yardstick for what the gateway adds over the least a relay can do on the same stack
    (no header forwarding, no close-code mirroring, no limits).
    """
    from websockets.asyncio.client import connect

    if scope["type"] != "websocket":
        await not_found(scope, receive, send)
        return
    await receive()  # websocket.connect
    async with connect(upstream_base() + ECHO_PATH, compression=None, max_queue=4) as upstream:
        await send({"type": "websocket.accept"})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")

        async def upstream_to_client() -> None:
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})

        pumps = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1000})


def minimal_relay_factory() -> ASGIApp:
    return minimal_relay_app


def fastapi_proxy_lib_app() -> ASGIApp:
    """fastapi-proxy-lib's reverse WebSocket app, with an httpx client whose pool has no limit."""
    import httpx
    from fastapi_proxy_lib.fastapi.app import reverse_ws_app

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
    app: ASGIApp = reverse_ws_app(client, base_url=upstream_base() + "/")
    return app


__all__ = [
    "ECHO_PATH",
    "POLICY_SET",
    "UPSTREAM_ENV",
    "asgiproxy_app",
    "fastapi_proxy_lib_app",
    "gateway_app",
    "gateway_picows_app",
    "gateway_policies_app",
    "minimal_relay_app",
    "minimal_relay_factory",
    "policy_set",
]
