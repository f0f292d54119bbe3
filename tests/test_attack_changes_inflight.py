"""A handshake in flight when its API changes is accepted only under the configuration in force then.

An attack pass replaced an API's upstream (``PUT /apis/chat?drain=true``) and deleted it while a client's
handshake waited on the old upstream's answer: the change was acknowledged (200, 204), then the handshake
completed and relayed to the old upstream for as long as the client liked, a connection the drain never
saw, listed under an API that no longer existed. Now a handshake whose API, products or subscription
changed while it ran is refused with 503 and ``Retry-After`` (its retry meets the new configuration); a
change to another API does not touch it. Real uvicorn, real upstreams; the old upstream answers its
handshake only when the test says so.

Also here, what the connection registry (``GET /connections``, the console) shows of a client: its
address as trusted proxies reported it beside the TCP peer, and a token's subject as telemetry records it
(redacted, cut, no control or bidi character), and a subscription's ``expires_at`` ending its connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from asgi_ws_gateway.policies import hash_key
from support.clients import connect, expect_close, expect_status
from support.configs import api_entry
from support.gateway import ProbedGateway
from support.jwts import HS_SECRET, token
from support.servers import UvicornServer
from support.upstream import UpstreamServer

KEY = "alice-key"


class _HeldUpstream:
    """An upstream that answers each handshake only once ``release`` is set; it echoes, prefixed "OLD:"."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def _hold(self, connection: ServerConnection, request: Request) -> Response | None:
        self.asked.set()
        await self.release.wait()
        return None

    @staticmethod
    async def _echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(f"OLD:{message!s}" if isinstance(message, str) else message)


@pytest.fixture
async def held() -> AsyncIterator[_HeldUpstream]:
    upstream = _HeldUpstream()
    async with serve(upstream._echo, "127.0.0.1", 0, process_request=upstream._hold) as server:
        upstream.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        yield upstream
        upstream.release.set()


def _config(upstream: str, *, more_apis: tuple[dict[str, Any], ...] = (), **top: Any) -> dict[str, Any]:
    return {"apis": [api_entry(upstream, name="chat", path="/ws/chat"), *more_apis], **top}


def _subscribed(upstream: str, state: str = "active") -> dict[str, Any]:
    return _config(
        upstream,
        products=[{"name": "gold", "apis": ["chat"]}],
        subscriptions=[{"id": "alice", "product": "gold", "key_sha256": hash_key(KEY), "state": state}],
    )


async def _handshake_across(held: _HeldUpstream, first: dict[str, Any], then: dict[str, Any] | None, **kw: Any) -> int:
    """The status of a handshake during which the configuration changes from ``first`` to ``then``."""
    gateway = ProbedGateway(first)
    with UvicornServer(gateway) as server:
        url = server.url("/ws/chat")
        attempt = asyncio.create_task(expect_status(url, **kw))
        await asyncio.wait_for(held.asked.wait(), 10)
        if then is not None:
            await gateway.on_server(lambda: gateway.gateway.apply_config(then, drain=True))
        held.release.set()
        status, headers, _ = await attempt
        if status == 503:
            assert headers.get("retry-after") == "1"
        await gateway.settle()  # nothing left open, on the old upstream or anywhere
        assert gateway.gateway.connections() == []
        return status


async def test_a_handshake_in_flight_when_its_upstream_is_replaced_is_refused(
    held: _HeldUpstream, upstream: UpstreamServer
) -> None:
    assert await _handshake_across(held, _config(held.url), _config(upstream.url("/echo"))) == 503


async def test_a_handshake_in_flight_when_its_api_is_deleted_is_refused(
    held: _HeldUpstream, upstream: UpstreamServer
) -> None:
    other = api_entry(upstream, name="other", path="/ws/other")
    assert await _handshake_across(held, _config(held.url), {"apis": [other]}) == 503


async def test_a_handshake_in_flight_when_its_subscription_is_suspended_is_refused(held: _HeldUpstream) -> None:
    headers = {"additional_headers": {"Ocp-Apim-Subscription-Key": KEY}}
    assert await _handshake_across(held, _subscribed(held.url), _subscribed(held.url, "suspended"), **headers) == 503


async def test_a_handshake_in_flight_when_another_api_changes_completes(
    held: _HeldUpstream, upstream: UpstreamServer
) -> None:
    other = api_entry(upstream, name="other", path="/ws/other")
    first = _config(held.url, more_apis=(other,))
    then = _config(held.url, more_apis=({**other, "max_message_size": 4096},))
    gateway = ProbedGateway(first)
    with UvicornServer(gateway) as server:
        attempt = asyncio.create_task(connect(server.url("/ws/chat")))
        await asyncio.wait_for(held.asked.wait(), 10)
        await gateway.on_server(lambda: gateway.gateway.apply_config(then, drain=True))
        held.release.set()
        async with await attempt as client:
            await client.send("hi")
            assert await client.recv() == "OLD:hi"


async def test_the_registry_names_the_reported_client_beside_its_peer(upstream: UpstreamServer) -> None:
    gateway = ProbedGateway(_config(upstream.url("/echo"), trusted_proxies=["127.0.0.1/32"]))
    with UvicornServer(gateway, proxy_headers=False) as server:  # the gateway decides, not uvicorn
        async with await connect(server.url("/ws/chat"), additional_headers={"X-Forwarded-For": "203.0.113.7"}):
            (listed,) = gateway.gateway.connections()
    assert listed.client == "203.0.113.7"
    assert listed.peer.startswith("127.0.0.1:")


async def test_the_registry_shows_a_subject_as_telemetry_records_it(upstream: UpstreamServer) -> None:
    policy = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}
    api = api_entry(upstream, name="chat", path="/ws/chat", policies=[policy])
    gateway = ProbedGateway({"apis": [api]})
    subject = "\u202eeciffo.tsop@nimda password=hunter2 " + "x" * 5000
    jwt = token(sub=subject)
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/chat"), additional_headers={"Authorization": f"Bearer {jwt}"}):
            (listed,) = gateway.gateway.connections()
    assert listed.subject is not None
    assert "\u202e" not in listed.subject and listed.subject.startswith("\\u202eeciffo")
    assert "hunter2" not in listed.subject
    assert len(listed.subject) < 600  # cut as spans cut it (512 characters), not 5,000


async def test_a_subscription_that_expires_closes_its_connections(upstream: UpstreamServer) -> None:
    expires = time.time() + 1.5
    config = _config(upstream.url("/echo"), products=[{"name": "gold", "apis": ["chat"]}])
    config["subscriptions"] = [
        {"id": "alice", "product": "gold", "key_sha256": hash_key(KEY), "expires_at": expires},
    ]
    gateway = ProbedGateway(config)
    with UvicornServer(gateway) as server:
        client = await connect(server.url("/ws/chat"), additional_headers={"Ocp-Apim-Subscription-Key": KEY})
        await client.send("before")
        assert await client.recv() == "before"
        async with asyncio.timeout(15):
            code, reason = await expect_close(client)
    assert (code, reason) == (1008, "subscription expired")
    assert time.time() >= expires


async def test_the_registry_bounds_a_peer_a_server_rewrote_from_a_header(upstream: UpstreamServer) -> None:
    """uvicorn's --proxy-headers puts the header's text in the scope's client: bounded and escaped here."""
    gateway = ProbedGateway(_config(upstream.url("/echo")))
    forged = "\x85forged\x9b" + "a" * 4000
    with UvicornServer(gateway, proxy_headers=True, forwarded_allow_ips="*") as server:
        async with await connect(server.url("/ws/chat"), additional_headers={"X-Forwarded-For": forged}):
            (listed,) = gateway.gateway.connections()
    assert "forged\\x9b" in listed.peer and "\x9b" not in listed.peer
    assert len(listed.peer) <= 160 and listed.client == listed.peer
