"""A handshake that leaves while the JWKS fetch it started is under way no longer cancels that fetch.

The first handshake to need the keys ran the fetch in its own task: its client gone (the gateway's
protocol cancels the handshake) or its ``policy_timeout`` over, the fetch was cancelled with it. The
handshakes that had joined it found no keys (503), and so did every handshake in the next second,
which started no fetch of its own (``RETRY_INTERVAL``); after a key rotation, a token naming the new
``kid`` that left mid-refresh kept that key out (401 ``token_unknown_key``) for
``jwks_min_refresh_interval``. The fetch now runs in a task of its own, each handshake waiting on it
shielded.

A unit test on a gated fake fetch, and real uvicorn (the gateway's protocols) with a JWKS host that
holds its answer until the test releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from asgi_ws_gateway.policies.jwks import JwksCache
from asgi_ws_gateway.server.http import GatewayHTTPProtocol
from support.gateway import PASSTHROUGH, ProbedGateway
from support.jwts import signing_key, token
from support.rawhttp import handshake, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

KEY = signing_key("ES256", kid="edge-1")


class _GatedFetch:
    """A fetch held until ``gate`` is set; counts its calls and how many were cancelled."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        self.calls += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return json.dumps({"keys": [KEY.jwk()]}).encode()


async def test_a_waiter_cancelled_leaves_the_fetch_to_the_others() -> None:
    """The handshake that started the fetch is cancelled: the one that joined it still gets the keys."""
    fetch = _GatedFetch()
    cache = JwksCache("https://idp/jwks", fetch)
    first = asyncio.create_task(cache.keys("edge-1", "ES256"))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.keys("edge-1", "ES256"))
    await asyncio.sleep(0)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    fetch.gate.set()
    assert len(await asyncio.wait_for(second, 5)) == 1
    assert (fetch.calls, fetch.cancelled) == (1, 0)


async def test_a_handshake_after_a_cancelled_starter_joins_its_fetch() -> None:
    """The starter is gone before anyone joined: the next handshake waits for that fetch, not a 503."""
    fetch = _GatedFetch()
    cache = JwksCache("https://idp/jwks", fetch)
    first = asyncio.create_task(cache.keys("edge-1", "ES256"))
    await asyncio.sleep(0)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    later = asyncio.create_task(cache.keys("edge-1", "ES256"))
    await asyncio.sleep(0)
    fetch.gate.set()
    assert len(await asyncio.wait_for(later, 5)) == 1
    assert fetch.calls == 1


async def test_a_cancelled_refresh_for_an_unknown_kid_still_brings_the_rotated_key() -> None:
    """Keys held, the issuer rotated: the handshake whose new ``kid`` started the refresh is cancelled;
    the next token with that ``kid`` joins the refresh and finds its key, not a 401 for
    ``jwks_min_refresh_interval`` (30 s: no refresh for an unknown ``kid`` sooner after one began)."""
    rotated = signing_key("ES256", kid="edge-2")
    documents = [[KEY.jwk()], [KEY.jwk(), rotated.jwk()]]
    gate = asyncio.Event()

    async def fetch(url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        keys = documents.pop(0)
        if documents == []:  # the refresh after the rotation waits for the gate
            await gate.wait()
        return json.dumps({"keys": keys}).encode()

    now = [0.0]
    cache = JwksCache("https://idp/jwks", fetch, clock=lambda: now[0])
    assert len(await cache.keys("edge-1", "ES256")) == 1
    now[0] = 60.0  # past the floors: a new kid may refresh
    first = asyncio.create_task(cache.keys("edge-2", "ES256"))
    await asyncio.sleep(0)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    later = asyncio.create_task(cache.keys("edge-2", "ES256"))
    await asyncio.sleep(0)
    gate.set()
    assert len(await asyncio.wait_for(later, 5)) == 1


class _HeldJwksHost:
    """An HTTP JWKS host that reads each request and answers it once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = 0
        self.requested = asyncio.Event()
        self.dropped = 0  # connections the gateway closed before their answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            self.requested.set()
            released = asyncio.create_task(self.release.wait())
            closed = asyncio.create_task(reader.read(1))
            await asyncio.wait({released, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if not released.done():
                released.cancel()
                self.dropped += 1
                return
            body = json.dumps({"keys": [KEY.jwk()]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks"
        finally:
            self.release.set()
            server.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_client_gone_mid_fetch_leaves_the_keys_to_the_next_handshake(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Client A's handshake starts the fetch and resets; B, arriving after, is admitted by that same fetch."""
    caplog.set_level(logging.INFO)
    host = _HeldJwksHost()
    bearer = b"Authorization: Bearer " + token(KEY).encode() + b"\r\n"
    async with host.serving() as jwks_url:
        jwt = {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url,
                                "issuer": "https://issuer.test", "audience": "chat"}}  # fmt: skip
        config = {"apis": [{"name": "jwt", "path": "/jwt", "upstreams": [upstream.url("/echo")], "policies": [jwt]}]}
        gateway = ProbedGateway(config)
        with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
            _, first = await asyncio.open_connection("127.0.0.1", server.port)
            first.write(handshake("/jwt", extra=bearer))
            await asyncio.wait_for(host.requested.wait(), 10)  # the fetch is under way
            _reset(first)
            async with asyncio.timeout(10):  # A's handshake is taken back (its access line)
                while not any("abandoned" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            reader, second = await asyncio.open_connection("127.0.0.1", server.port)
            second.write(handshake("/jwt", extra=bearer))
            await asyncio.sleep(0.05)  # B's handshake reaches the keys (it must wait for them, not refuse)
            host.release.set()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            second.close()
            await gateway.settle()
    assert status_of(head) == 101, head
    assert (host.requests, host.dropped) == (1, 0)
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


async def test_a_handshake_past_its_policy_timeout_leaves_the_fetch_to_the_next(upstream: UpstreamServer) -> None:
    """Under uvicorn's own protocols (the relay): A's ``policy_timeout`` ends while the keys are fetched
    (504); B, arriving after, is admitted by that same fetch once the host answers."""
    host = _HeldJwksHost()
    bearer = b"Authorization: Bearer " + token(KEY).encode() + b"\r\n"
    async with host.serving() as jwks_url:
        jwt = {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url, "jwks_timeout": 30,
                                "issuer": "https://issuer.test", "audience": "chat"}}  # fmt: skip
        config = {"apis": [{"name": "jwt", "path": "/jwt", "upstreams": [upstream.url("/echo")], "policies": [jwt]}],
                  "handshake_limits": {"policy_timeout": 0.3}}  # fmt: skip
        gateway = ProbedGateway(config)
        with UvicornServer(gateway) as server:
            reader, first = await asyncio.open_connection("127.0.0.1", server.port)
            first.write(handshake("/jwt", extra=bearer))
            timed_out = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            first.close()
            reader, second = await asyncio.open_connection("127.0.0.1", server.port)
            second.write(handshake("/jwt", extra=bearer))
            await asyncio.sleep(0.05)  # B's handshake waits for the keys
            host.release.set()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            second.close()
            await gateway.settle()
    assert status_of(timed_out) == 504, timed_out
    assert status_of(head) == 101, head
    assert (host.requests, host.dropped) == (1, 0)
