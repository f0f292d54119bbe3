"""``ws_gateway.upstream.connections``, as a real OTLP receiver gets it from a gateway under real uvicorn in front
of real upstreams: each configured backend's connections, up while clients are connected and back to 0 once
they left, on every connector and for an in-process ``asgi:`` upstream; a backend is named as configured, never
by the URL a handshake's values filled in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.telemetry import names as n
from support.apps import echo_app
from support.clients import connect
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.jwts import HS_SECRET, token
from support.otlp import OtlpReceiver
from support.servers import UvicornFactory
from support.telemetry import export_to, refused_url
from support.upstream import UpstreamServer

METRIC = "ws_gateway.upstream.connections"


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        export_to(monkeypatch, receiver, "http/protobuf")
        yield receiver


async def _echoes(url: str, **headers: str) -> ClientConnection:
    ws = await connect(url, additional_headers=headers)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


async def _observed(gateway: ProbedGateway, otlp: OtlpReceiver) -> dict[tuple[Any, ...], float]:
    """The metric's latest value per (API, backend, server.address, server.port), after a flush."""
    await asyncio.to_thread(gateway.gateway.telemetry.force_flush)
    keys = (n.API, n.BACKEND, n.SERVER_ADDRESS, n.SERVER_PORT)
    return {tuple(p.attributes.get(k) for k in keys): p.value for p in otlp.latest(METRIC).values()}


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_each_backend_counts_its_connections_up_and_back_to_zero(
    otlp: OtlpReceiver, uvicorn_server: UvicornFactory, connector: str
) -> None:
    """Three clients, two backends (round-robin: two on the first, one on the second), then none."""
    with UpstreamServer() as a, UpstreamServer() as b:
        entry = {"name": "h", "path": "/h", "upstreams": [a.url("/echo"), b.url("/echo")], **CONNECTORS[connector]}
        gateway = ProbedGateway({"apis": [entry]})
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        first, second = ("h", a.url("/echo"), "127.0.0.1", a.port), ("h", b.url("/echo"), "127.0.0.1", b.port)
        assert await _observed(gateway, otlp) == {first: 0, second: 0}
        clients = [await _echoes(url) for _ in range(3)]
        assert await _observed(gateway, otlp) == {first: 2, second: 1}
        for client in clients:
            await client.close()
        await gateway.settle()
        assert await _observed(gateway, otlp) == {first: 0, second: 0}


async def test_an_in_process_backend_counts_its_connections(otlp: OtlpReceiver, uvicorn_server: UvicornFactory) -> None:
    gateway = ProbedGateway({"apis": [{"name": "h", "path": "/h", "upstreams": [{"app": echo_app}]}]})
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    backend = ("h", "asgi:echo_app", None, None)  # no address: it is not on the network
    clients = [await _echoes(url) for _ in range(2)]
    assert await _observed(gateway, otlp) == {backend: 2}
    for client in clients:
        await client.close()
    await gateway.settle()
    assert await _observed(gateway, otlp) == {backend: 0}


async def test_a_backend_url_a_claim_filled_in_is_counted_as_the_configured_backend(
    otlp: OtlpReceiver, uvicorn_server: UvicornFactory
) -> None:
    """set-backend-service sends the connects to a host the token names: one series, the configured backend's."""
    configured = refused_url()  # never connected to: each handshake's URL is the template's
    with UpstreamServer() as upstream:
        policies = [
            {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}},
            {"set-backend-service": {"base_url": f"ws://{{jwt.region}}:{upstream.port}"}},
        ]
        # the test's backends are on loopback, which a claim's host reaches only where allow names it
        loopback = {"allow": ["127.0.0.0/8", "::1"]}
        entry = {
            "name": "h",
            "path": "/h",
            "upstreams": [configured],
            "policies": policies,
            "upstream_networks": loopback,
        }
        gateway = ProbedGateway({"apis": [entry]})
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        port = int(configured.split(":")[2].split("/")[0])
        backend = ("h", configured, "127.0.0.1", port)
        regions = ("127.0.0.1", "localhost")
        clients = [await _echoes(url, Authorization=f"Bearer {token(region=r)}") for r in regions]
        assert len(upstream.handshakes) == 2
        assert await _observed(gateway, otlp) == {backend: 2}
        for client in clients:
            await client.close()
        await gateway.settle()
        assert await _observed(gateway, otlp) == {backend: 0}
