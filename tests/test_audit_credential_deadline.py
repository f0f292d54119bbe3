"""``credential-expiry``: the deadline a refresh sets is the one kept, even when it is earlier.

The watch slept until the deadline it had read (up to an hour): a refresh to a token that expires
sooner (a session's absolute end, claims cut down) moved the deadline, and the connection stayed
open -- the upstream's messages flowing to the client -- until the old token's expiry. Real uvicorn
(the relay and the frame relay) in front of a real ``websockets`` upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.jwts import HS_SECRET, token
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat",
                        "issuer": "https://issuer.test"}}  # fmt: skip


def _serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, inbound: list[Any]) -> str:
    config = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "policies": [JWT],
              "message_policies": {"inbound": inbound}}  # fmt: skip
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [config]})).url("/ws/echo")


async def test_a_refresh_to_a_sooner_expiry_closes_at_the_new_deadline(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Admitted for 60 s, refreshed to a token of 2 s: closed 1008 at the new token's exp, not 60 s on."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    await asyncio.sleep(1 - time.time() % 1)  # exp is whole seconds: the short token lives ~2 s
    async with await connect(url, additional_headers={"Authorization": f"Bearer {token(ttl=60)}"}) as ws:
        await ws.send(json.dumps({"type": "auth.refresh", "token": token(ttl=2)}))
        ack = json.loads(await ws.recv())
        assert ack["type"] == "auth.refresh.ok" and ack["expires_at"] <= time.time() + 2
        async with asyncio.timeout(6):  # 60 s before the fix
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1008, "token expired")
        assert time.time() >= ack["expires_at"]
