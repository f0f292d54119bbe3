"""End to end through passthrough: what only the splice does.

The server is uvicorn with :class:`~asgi_ws_gateway.server.PassthroughWebSocketProtocol` and every
API has ``passthrough: true``. The behaviour the relay and the splice share is tested in every mode
in ``test_e2e_relay.py`` (the ``gateway_mode`` fixture).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from httptools import HttpRequestParser

from asgi_ws_gateway.messages.context import ConnectionContext
from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream
from asgi_ws_gateway.passthrough.splice import Splice
from asgi_ws_gateway.relay.pumps import Relay
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.server import GatewayHTTPProtocol
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_close
from support.gateway import MIB, PASSTHROUGH, GatewayMode, ProbedGateway, Stack, gateway_config, serve
from support.otlp import OtlpReceiver
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import SilentUpstream, UpstreamServer

SPLICED = GatewayMode("passthrough")


@pytest.fixture
def stack(upstream: UpstreamServer) -> Iterator[Stack]:
    """Gateway (passthrough on every API) under the passthrough server, in front of ``upstream``."""
    with serve(upstream, SPLICED) as stack:
        yield stack


async def test_connections_are_spliced_and_counted(stack: Stack) -> None:
    """The connection is a splice, and its messages and close are counted from frame headers."""
    async with await connect(stack.url("/ws/echo")) as ws:
        for message in ("a", b"bb", "c" * 70000):
            await ws.send(message)
            await ws.recv()
        (live,) = stack.gateway.gateway.connections()
        assert type(live.relay).__name__ == "Splice"
        assert await stack.gateway.gateway.send_to_connection(live.id, "from the gateway")
        assert await ws.recv() == "from the gateway"
        await ws.close(4001, "bye")
    await stack.gateway.settle()
    stats = live.stats
    assert (stats.messages_in, stats.messages_out) == (3, 3)
    assert stats.binary_in == 1
    assert (stats.closed_by, stats.close_code, stats.close_reason) == ("client", 4001, "bye")


@pytest.mark.parametrize("upstream_deflate", [True, False])
async def test_compression_is_negotiated_end_to_end(
    upstream: UpstreamServer, upstream_nodeflate: UpstreamServer, upstream_deflate: bool
) -> None:
    """The client's offer goes upstream and the upstream's answer comes back: one negotiation."""
    target = upstream if upstream_deflate else upstream_nodeflate
    with serve(target, SPLICED) as spliced:
        async with await connect(spliced.url("/ws/echo"), compression="deflate") as ws:
            assert ws.response is not None
            answer = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            for message in ("compress me " * 1000, b"\x01" * 70000, ""):
                await ws.send(message)
                assert await ws.recv() == message
        assert ("permessage-deflate" in answer) is upstream_deflate
        assert "permessage-deflate" in (target.handshakes[-1].header("sec-websocket-extensions") or "")
        await spliced.gateway.settle()


async def test_compression_null_offers_the_upstream_no_extension(upstream: UpstreamServer) -> None:
    """``compression: null`` holds on the splice as on the relay: the client's deflate offer is not forwarded,
    and the connection is uncompressed end to end."""
    with serve(upstream, SPLICED, compression=None) as spliced:
        async with await connect(spliced.url("/ws/echo"), compression="deflate") as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("compress me " * 100)
            assert await ws.recv() == "compress me " * 100
            (live,) = spliced.gateway.gateway.connections()
            assert type(live.relay).__name__ == "Splice"
        assert upstream.handshakes[-1].header("sec-websocket-extensions") is None
        await spliced.gateway.settle()


@pytest.mark.parametrize("passthrough", [True, False])
async def test_message_policies_take_the_frame_relay_and_false_keeps_the_relay(
    upstream: UpstreamServer, passthrough: bool
) -> None:
    """An API with message policies is framed (message by message, in the gateway's protocol);
    ``passthrough: false`` relays it."""
    policies = {"inbound": [{"limit-message-size": {"max": 10}}]}
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "message_policies": policies,
           "passthrough": passthrough}  # fmt: skip
    gateway = ProbedGateway({"apis": [api]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            (live,) = gateway.gateway.connections()
            assert isinstance(live.relay, FramedRelay if passthrough else Relay)
            assert live.relay.connection is not None  # its message policies are attached
            await ws.close()
        await gateway.settle()


async def test_management_close_sends_each_side_its_code(stack: Stack) -> None:
    """A close from management reaches the client unmasked and the upstream masked."""
    async with await connect(stack.url("/ws/echo")) as ws:
        await ws.send("hi")
        await ws.recv()
        (live,) = stack.gateway.gateway.connections()
        await stack.gateway.on_server(lambda: stack.gateway.gateway.close_connection(live.id, 4400, "kicked"))
        assert await expect_close(ws) == (4400, "kicked")
    assert await stack.upstream.wait_for_closes_async(1) == [(4400, "kicked")]
    await stack.gateway.settle()


async def test_message_over_the_limit_closes_sender_1009_and_upstream_1001(stack: Stack) -> None:
    """Uncompressed: the limit is read from frame headers (compressed, it applies to wire bytes)."""
    async with await connect(stack.url("/ws/echo"), compression=None) as ws:
        await ws.send(b"x" * (MIB + 1))
        assert await expect_close(ws) == (1009, "message too big")
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
    await stack.gateway.settle()


async def test_failover_to_second_backend(upstream: UpstreamServer) -> None:
    """An unreachable backend is skipped for the next one, as in the relay."""
    from support.servers import free_port

    dead = f"ws://127.0.0.1:{free_port()}/echo"
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [dead, upstream.url("/echo")], "passthrough": True}
    gateway = ProbedGateway({"apis": [api]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        for _ in range(2):
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
                (live,) = gateway.gateway.connections()
                assert type(live.relay).__name__ == "Splice"
        await gateway.settle()
    dead_backend, live_backend = gateway.gateway._apis["echo"].pool.backends
    assert dead_backend.failures >= 1
    assert live_backend.failures == 0
    assert len(upstream.handshakes) == 2


async def test_plain_uvicorn_relays_even_with_passthrough_on(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the package's protocol class the flag does nothing: the relay serves, with one warning."""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=True))
    with UvicornServer(gateway, ws="websockets-sansio") as server:
        for _ in range(2):
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                (live,) = gateway.gateway.connections()
                assert type(live.relay).__name__ == "Relay"
            await gateway.settle()
    warnings = [r.getMessage() for r in caplog.records if "does not offer passthrough" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("API echo: passthrough: true")


@pytest.mark.parametrize(("setting", "kind"), [({}, "Splice"), ({"passthrough": False}, "Relay")])
async def test_default_splices_under_the_gateways_protocol_and_false_relays(
    upstream: UpstreamServer, setting: dict[str, Any], kind: str
) -> None:
    """Without a passthrough setting (``auto``) the gateway's protocol splices; ``false`` keeps the relay."""
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], **setting}
    gateway = ProbedGateway({"apis": [api]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            (live,) = gateway.gateway.connections()
            assert type(live.relay).__name__ == kind
        await gateway.settle()


async def test_spliced_connection_has_the_connect_span_and_access_log_of_the_relay(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The attempt's CLIENT span (traceparent sent upstream) and the access-log line, as when relayed."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        gateway = ProbedGateway(telemetry_config(upstream, access_log="json"))
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            # Uncompressed: spliced, bytes are counted on the wire (compressed, when deflate is on).
            async with await connect(server.url("/ws/echo"), compression=None) as ws:
                await ws.send("ping")
                assert await ws.recv() == "ping"
                (live,) = gateway.gateway.connections()
                assert type(live.relay).__name__ == "Splice"
            connection = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "connection echo")
        handshake = otlp.wait_for_span(lambda s: s.name == "GET /ws/echo")
        attempt = otlp.wait_for_span(lambda s: s.name == "upstream connect echo")
    assert attempt.kind == 3 and attempt.parent_span_id == handshake.span_id  # CLIENT, under the handshake
    assert attempt.attributes == {
        n.HTTP_METHOD: "GET", n.URL_FULL: upstream.url("/echo"), n.BACKEND: upstream.url("/echo"),
        n.SERVER_ADDRESS: "127.0.0.1", n.SERVER_PORT: upstream.port, n.ATTEMPT: 1, n.HTTP_STATUS: 101,
    }  # fmt: skip
    assert attempt.trace_id in (upstream.handshakes[-1].header("traceparent") or "")
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert (record["trace_id"], record["span_id"]) == (connection.trace_id, connection.span_id)
    assert (record["status"], record["close_code"], record["closed_by"]) == (101, 1000, "client")
    assert (record["messages_in"], record["bytes_in"], record["messages_out"], record["bytes_out"]) == (1, 4, 1, 4)


async def test_dead_upstream_is_found_by_keepalive_and_the_client_gets_1011() -> None:
    """An upstream that stops answering: after ping_interval + ping_timeout the client gets 1011."""
    async with SilentUpstream() as dead:
        api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://127.0.0.1:{dead.port}/x"],
               "ping_interval": 0.2, "ping_timeout": 0.2}  # fmt: skip
        gateway = ProbedGateway({"apis": [api]})
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            async with await connect(server.url("/ws/echo"), ping_interval=None) as ws:
                (live,) = gateway.gateway.connections()
                assert type(live.relay).__name__ == "Splice"
                assert await expect_close(ws) == (1011, "upstream connection failed")
            await gateway.settle()
        assert (live.stats.closed_by, live.stats.close_code) == ("upstream", 1006)


async def test_dead_client_is_found_by_keepalive_and_the_upstream_gets_1001(upstream: UpstreamServer) -> None:
    """A client that completes its handshake and then never answers a ping: the upstream gets 1001."""
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")],
           "ping_interval": 0.2, "ping_timeout": 0.2}  # fmt: skip
    gateway = ProbedGateway({"apis": [api]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        try:
            assert await upstream.wait_for_closes_async(1) == [(1001, "client went away")]
        finally:
            writer.close()
        await gateway.settle()


@pytest.mark.parametrize("message_policies", [None, {"inbound": [{"limit-message-size": {"max": 100}}]}],
                         ids=["spliced", "framed"])  # fmt: skip
async def test_a_closed_connection_leaves_nothing_for_the_garbage_collector(
    upstream: UpstreamServer, message_policies: dict[str, Any] | None
) -> None:
    """Under ``run``'s protocols, a connection's objects are freed when it closes, not at the next collection.

    The splice and its two sides, their transports, uvicorn's HTTP protocol (whose parser holds its
    bound methods), and with message policies the frame relay and their connection context were
    reference cycles: ~60 objects per handshake, ~35 µs of collection each; so was websockets' protocol
    that answered the handshake, with the frame parser it held (started for frames the splice reads
    instead), whose closing the collection paid; so were the splice's two frame scanners, each pointing
    at the other's (whose pings its pongs answer), with the stats they count into. With the collector
    off, nothing of 20 closed connections may stay in memory.
    """
    api = {"message_policies": message_policies} if message_policies else {}
    gateway = ProbedGateway(SPLICED.config(upstream, **api))
    leftovers = (
        Splice,
        FramedRelay,
        ConnectionContext,
        GatewayHTTPProtocol,
        RawUpstream,
        HttpRequestParser,
        _ServerProtocol,
        FrameScanner,
        RelayStats,
    )
    with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
        gc.collect()
        gc.disable()
        try:
            for i in range(20):
                async with await connect(server.url("/ws/echo")) as ws:
                    await ws.send(f"m{i}")
                    assert await ws.recv() == f"m{i}"
                    if i == 0:
                        (live,) = gateway.gateway.connections()
                        assert type(live.relay) is (FramedRelay if message_policies else Splice)
                        del live
            await gateway.settle()
            left = [type(o).__name__ for o in gc.get_objects() if type(o) in leftovers]
        finally:
            gc.enable()
    assert left == []


@pytest.mark.parametrize(("server_options", "headers"), [({}, {"Content-Length": "0"}), ({"log_level": "debug"}, {})],
                         ids=["head-websockets-parses", "debug-log-level"])  # fmt: skip
async def test_a_spliced_connection_whose_request_websockets_parsed_leaves_nothing_either(
    upstream: UpstreamServer, server_options: dict[str, Any], headers: dict[str, str]
) -> None:
    """A request head the gateway's own reading leaves to websockets' parser (here a ``Content-Length: 0``
    websockets takes), or every head under uvicorn's debug log level, started websockets' parser, a
    generator holding its protocol: handed over to the splice, that protocol stayed in a reference cycle
    (its ``connection_lost``, which ends the parser, is the splice's), freed only by a collection."""
    gateway = ProbedGateway(SPLICED.config(upstream))
    with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol, **server_options) as server:
        gc.collect()
        before = {id(o) for o in gc.get_objects() if type(o) is _ServerProtocol}
        gc.disable()
        try:
            for i in range(5):
                async with await connect(server.url("/ws/echo"), additional_headers=headers) as ws:
                    await ws.send(f"m{i}")
                    assert await ws.recv() == f"m{i}"
            await gateway.settle()
            left = [o for o in gc.get_objects() if type(o) is _ServerProtocol and id(o) not in before]
        finally:
            gc.enable()
    assert left == []
