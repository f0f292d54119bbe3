"""A gateway wired to the scripted upstream, served by real uvicorn, for the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.servers import WS_IMPLS, UvicornServer, WSImpl
from support.upstream import UpstreamServer

T = TypeVar("T")

MIB = 1024 * 1024

PASSTHROUGH: WSImpl = cast("WSImpl", "asgi_ws_gateway.server:PassthroughWebSocketProtocol")
"""The package's protocol class: uvicorn serves ``passthrough: true`` APIs with it by splicing."""

MODES: tuple[str, ...] = (*WS_IMPLS, "passthrough")
"""The ways the gateway serves a connection: relayed under each uvicorn implementation, or spliced.

The relay modes are named after their implementation, as the ``ws_impl`` fixture's ids are."""

# Public path -> upstream path of the scripted upstream (see support/upstream.py).
ROUTES = {
    "/ws/echo": "/echo",
    "/ws/close/{code}": "/close/{code}",
    "/ws/headers/{room}": "/headers/{room}",
    "/ws/subprotocol": "/subprotocol",
    "/ws/reject/{status}": "/reject/{status}",
    "/ws/slow": "/slow",
    "/ws/redirect": "/redirect",
    "/ws/push/{n}": "/push/{n}",
    "/ws/zeros/{size}": "/zeros/{size}",
}


@dataclass(frozen=True)
class GatewayMode:
    """One of :data:`MODES`: the server's WebSocket implementation and whether APIs splice."""

    name: str

    @property
    def passthrough(self) -> bool:
        return self.name == "passthrough"

    @property
    def ws(self) -> WSImpl:
        return PASSTHROUGH if self.passthrough else cast("WSImpl", self.name)

    def config(self, upstream: UpstreamServer | str, **api: Any) -> dict[str, Any]:
        """:func:`gateway_config` with ``passthrough: true`` on every API in the passthrough mode."""
        return gateway_config(upstream, **({"passthrough": True} if self.passthrough else {}), **api)


def gateway_config(upstream: UpstreamServer | str, **api: Any) -> dict[str, Any]:
    """One API per scripted behaviour; ``upstream`` may be a base URL like ``ws://127.0.0.1:1``."""
    base = upstream if isinstance(upstream, str) else upstream.url("")
    apis = []
    for path, target in ROUTES.items():
        name = path.split("/")[2]
        apis.append(api_entry(base + target, name=name, path=path, **api))
    return {"apis": apis}


class ProbedGateway:
    """The gateway as an ASGI app that remembers the server's event loop, to run code on it."""

    def __init__(self, config: dict[str, Any], **options: Any) -> None:
        self.gateway = WebSocketGateway(not_found, config=config, **options)  # options: meter_provider=...
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        await self.gateway(scope, receive, send)

    async def on_server(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the server's loop and wait for its result from the test's loop."""
        assert self.loop is not None, "no request reached the gateway yet"

        async def run() -> T:
            return await make()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    async def relay_tasks(self) -> list[str]:
        """Names of relay and watchdog tasks still alive on the server's loop."""

        async def collect() -> list[str]:
            names = []
            for task in asyncio.all_tasks():
                qualname = getattr(task.get_coro(), "__qualname__", "")
                if qualname.startswith(("Relay.", "watchdog", "InProcessConnection.")):
                    names.append(qualname)
            return names

        return await self.on_server(collect)

    async def settle(self) -> None:
        """Wait until the gateway holds no connection and no relay task (fails after 5 s)."""
        async with asyncio.timeout(5):
            while self.gateway.open_connections or await self.relay_tasks():  # noqa: ASYNC110 - another loop's state
                await asyncio.sleep(0.02)


@dataclass
class Stack:
    """A :class:`ProbedGateway` under a real uvicorn, in front of a scripted upstream."""

    gateway: ProbedGateway
    server: UvicornServer
    upstream: UpstreamServer

    def url(self, path: str) -> str:
        return self.server.url(path)


@contextmanager
def serve(upstream: UpstreamServer, mode: GatewayMode, **api: Any) -> Iterator[Stack]:
    """The gateway for :func:`gateway_config` (``api`` set on every API) in ``mode``; 16 MiB frames."""
    gateway = ProbedGateway(mode.config(upstream, **api))
    with UvicornServer(gateway, ws=mode.ws, ws_max_size=16 * MIB) as server:
        yield Stack(gateway, server, upstream)
