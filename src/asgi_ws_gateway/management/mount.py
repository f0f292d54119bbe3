"""``GatewayManagement``: the management API served in front of a gateway, at a path or on a port."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from .._types import ASGIApp, Message, Receive, Scope, Send
from ..config.limits import MAX_PREFIX, MIB
from ..errors import ConfigError
from ..middleware import WebSocketGateway
from ..redis_client import connect
from ..routing import route_target
from ..startup import MANAGEMENT_VARIABLES, unread_variable_warnings
from .admin_auth import Auth, token_auth
from .app import create_management_app
from .bus import Bus, RedisBus
from .errors import BadRequest, Unavailable, problem
from .mount_path import MAX_MANAGEMENT_PATH as MAX_PATH
from .mount_path import management_path_problem
from .redis_store import RedisStore, open_redis_warning
from .request_body import BodyLimits
from .service import Manager
from .store import StateStore

logger = logging.getLogger(__name__)
_PREFIX = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_PREFIX}}}")


def find_gateway(app: Any) -> WebSocketGateway:
    """The :class:`WebSocketGateway` that ``app`` is, or wraps through ``.app`` attributes."""
    for _ in range(32):
        if isinstance(app, WebSocketGateway):
            return app
        app = getattr(app, "app", None)
    raise TypeError(
        "GatewayManagement must wrap a WebSocketGateway: add it after the gateway "
        "(app.add_middleware(GatewayManagement, ...) below app.add_middleware(WebSocketGateway, ...)) or pass gateway="
    )


class GatewayManagement:
    """ASGI middleware that serves the management API and passes everything else to ``app``.

    Usage::

        app.add_middleware(WebSocketGateway, config="gateway.yaml")
        app.add_middleware(GatewayManagement, admin_token=os.environ["ASGI_WS_GATEWAY_ADMIN_TOKEN"])

    Args:
        app: the ASGI app wrapped; it is, or wraps, the gateway to manage (else pass ``gateway``).
        admin_token: the token clients send as ``Authorization: Bearer <token>``.
        auth: instead of a token, an async callable deciding from the request (True: allowed).
        path: where the API is served (default ``/_gateway``), unless ``port`` is given.
        port: serve the API (at the root) to requests that arrived on this local port instead.
        store: where changes are kept (default: in memory, or Redis with ``redis_url``).
        bus: how workers reach each other (default: this process only, or Redis with ``redis_url``).
        redis_url: ``redis://host:port/db``, ``redis+cluster://`` or ``redis+sentinel://``: the shared mode
            (store and bus in Redis).
        redis_prefix: namespace of the Redis keys (default ``asgi-ws-gw``).
        gateway: the gateway, if ``app`` does not lead to it.
        poll_interval: seconds between checks of the store for changes made elsewhere (default 1).
        allowed_asgi_upstreams: in-process apps (``module:attr`` or a whole ``module``) that APIs
            created or changed through the API may use as ``asgi:`` upstreams (default: none but
            those the configuration file uses). Nothing else is ever imported on an API request.
        allowed_upstream_hosts: hosts (``host``, ``host:port``, ``*.domain``, ``*``) that APIs created or
            changed through the API may connect to while they inherit a credential the configuration
            file sends upstream (a global or product ``set-header``; default: the file's own upstream hosts).
        allowed_hosts: host names (``host``, ``host:port``, ``*.domain``, ``*``) the API and its consoles
            answer to, besides IP addresses and ``localhost`` (default: none, with the configuration
            file's ``management.allowed_hosts``): another ``Host`` is a 421 (DNS rebinding).
        max_body_size: bytes a request body may have (default 1 MiB): larger is a 413, found
            from Content-Length or while reading a chunked body.
        body_timeout: seconds a request body may take to arrive (default 10): slower is a 408.
        sample_interval: seconds between samples of the console's charts (default 5).
        sample_window: seconds of samples each worker keeps for the charts (default 900: 15 minutes).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        admin_token: str | None = None,
        auth: Auth | None = None,
        path: str = "/_gateway",
        port: int | None = None,
        store: StateStore | None = None,
        bus: Bus | None = None,
        redis_url: str | None = None,
        redis_prefix: str = "asgi-ws-gw",
        gateway: WebSocketGateway | None = None,
        poll_interval: float = 1.0,
        allowed_asgi_upstreams: Sequence[str] = (),
        allowed_upstream_hosts: Sequence[str] = (),
        allowed_hosts: Sequence[str] = (),
        max_body_size: int = MIB,
        body_timeout: float = 10.0,
        sample_interval: float = 5.0,
        sample_window: float = 900.0,
    ) -> None:
        if len(path) > MAX_PATH:  # not quoted: $ASGI_WS_GATEWAY_MANAGEMENT_PATH may be set to anything
            raise ValueError(f"the management API's path: {len(path):,} characters, at most {MAX_PATH}")
        if (path_problem := management_path_problem(path)) is not None:
            raise ValueError(f"the management API's path {path!r}: {path_problem}")
        if not _PREFIX.fullmatch(redis_prefix):  # as store.prefix: a brace would move the keys' cluster hash tag
            raise ValueError(f"redis_prefix: 1 to {MAX_PREFIX} letters, digits and _.:- ({len(redis_prefix):,} given)")
        if max_body_size <= 0 or body_timeout <= 0:
            raise ValueError("max_body_size and body_timeout must be positive")
        if not 0 < sample_interval <= sample_window:
            raise ValueError("sample_interval must be positive and sample_window at least sample_interval")
        # The arguments the application gave, of those run's variables stand for: a variable set beside one
        # is the application's to read (the example app reads ASGI_WS_GATEWAY_STATE into store=), not warned of.
        chosen = {
            "path": path != "/_gateway", "port": port is not None,
            "store": store is not None or redis_url is not None, "redis_prefix": redis_prefix != "asgi-ws-gw",
        }  # fmt: skip
        if auth is None:
            if not admin_token:
                raise ValueError("the management API needs an admin_token or an auth callable")
            auth = token_auth(admin_token)
        if redis_url is not None:
            # redis://, redis+cluster:// or redis+sentinel:// (asgi_ws_gateway.redis_client)
            store = store or RedisStore(connect(redis_url, decode_responses=True), prefix=redis_prefix, url=redis_url)
            if (open_redis := open_redis_warning(redis_url)) is not None:
                logger.warning("%s", open_redis)
            # Bytes that are not UTF-8 on the channel (anyone with Redis access can publish) decode
            # to U+FFFD and are ignored as not JSON, rather than failing redis-py's read, which drops
            # the subscription and every command queued behind that message.
            bus = bus or RedisBus(
                connect(redis_url, decode_responses=True, encoding_errors="replace"), prefix=redis_prefix
            )
        self.app = app
        self.path = "/" + path.strip("/")
        self.port = port
        gateway = gateway or find_gateway(app)
        if not getattr(gateway.app, "standalone", False):  # else run's (asgi_ws_gateway.management.standalone)
            unread = {
                name: instead for name, (argument, instead) in MANAGEMENT_VARIABLES.items() if not chosen[argument]
            }
            for warning in unread_variable_warnings("GatewayManagement", unread):
                logger.warning("%s", warning)
        self.manager = Manager(
            gateway,
            store=store,
            bus=bus,
            poll_interval=poll_interval,
            allowed_asgi_upstreams=allowed_asgi_upstreams,
            allowed_upstream_hosts=allowed_upstream_hosts,
            sample_interval=sample_interval,
            sample_window=sample_window,
            reserved_path=self.path if port is None else None,
        )
        limits = BodyLimits(max_bytes=max_body_size, timeout=body_timeout)
        self.api = create_management_app(self.manager, auth=auth, limits=limits, allowed_hosts=allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            if self.port is not None:
                server = scope.get("server")
                if server is not None and server[1] == self.port:
                    await self.api(scope, receive, send)
                    return
            else:
                given = scope.get("root_path")
                root: str = given if type(given) is str else ""  # a value of no ASGI type: read as absent
                # As the gateway and Starlette read it: the decoded path, less the root path.
                route, raw_route = route_target(scope["path"], scope.get("raw_path"), root)
                if route == self.path or route.startswith(self.path + "/"):
                    if not self._spelled_as_configured(raw_route, scope):
                        await self._misspelled(scope, receive, send)
                        return
                    if route == self.path and scope["type"] == "http":
                        await _redirect(send, f"{root}{self.path}/console")
                        return
                    if route != self.path:
                        await self.api({**scope, "root_path": root + self.path}, receive, send)
                        return
        await self.app(scope, receive, send)

    def _spelled_as_configured(self, raw_route: bytes | None, scope: Scope) -> bool:
        """Whether the path as sent starts with the management path as configured, byte for byte.

        ``/%5Fgateway/apis`` and ``/_gateway%2Fapis`` decode into the management path, but a proxy in
        front that matches the raw path (HAProxy's ``path_beg``) would not see it there, and a rule
        that keeps ``/_gateway/`` from the public would let them through.
        """
        if type(scope.get("raw_path")) is not bytes:  # none, or no ASGI type: read as absent (route_target)
            return True  # a server that gives only the decoded path: nothing was spelled differently
        if raw_route is None:
            return False  # the root path itself was spelled differently
        prefix = self.path.encode()
        return raw_route.startswith(prefix) and raw_route[len(prefix) : len(prefix) + 1] in (b"/", b"")

    async def _misspelled(self, scope: Scope, receive: Receive, send: Send) -> None:
        logger.info("management: refused a request whose path spells %s another way (400)", self.path)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        refused = BadRequest(f"the management API is at {self.path}/, spelled as written (no percent-encoding)")
        await problem(refused.status, refused.title, refused.detail)(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the management API before the application: if it cannot, fail the start-up with why."""
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.manager.ensure_started()
            except (ConfigError, Unavailable) as exc:
                # Not started: without the stored changes, APIs changed or deleted through the API
                # would be served as the file has them. uvicorn prints the message and exits.
                cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
                why = str(exc) if isinstance(exc, ConfigError) else f"{exc.detail}{cause}"
                await send({"type": "lifespan.startup.failed", "message": f"management API: {why}; not starting"})
                await self.manager.stop()
                return
        replayed = False

        async def first_then_rest() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, first_then_rest, self._lifespan_send(send))

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"):
                await self.manager.stop()  # after the gateway drained, or when the start-up failed
            await send(message)

        return wrapped


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 307,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


__all__ = ["GatewayManagement", "find_gateway"]
