"""What the default path's handshake no longer pays for, held to what it replaced.

* uvicorn's HTTP protocol read the connection's addresses from a socket object (on uvloop, a
  ``getsockname`` to make it, then ``getsockname`` and ``getpeername``, twice over): they are read
  from what the event loop kept (``sockname``, ``peername``), to the same values;
* the splice's keepalive payload is drawn at its first ping, not per handshake (a ``getrandom``);
* the event loop is asked for once where it was asked for several times (each asking is a
  ``getpid`` call on Python 3.11).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr
from uvicorn.server import ServerState

from asgi_ws_gateway.passthrough import splice as splice_module
from asgi_ws_gateway.passthrough.frame_encoding import encode_frame
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.passthrough.splice import Splice
from asgi_ws_gateway.server import GatewayHTTPProtocol
from asgi_ws_gateway.server.upgrades import local_address, remote_address
from support.relay_fakes import FakeTransport


class _Kept(asyncio.Protocol):
    def __init__(self, made: asyncio.Future[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.set_result(cast(asyncio.Transport, transport))


@asynccontextmanager
async def _accepted(family: str, tmp_path: Path) -> AsyncIterator[asyncio.Transport]:
    """The server side's transport of one connection, on the running loop."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Transport] = loop.create_future()
    if family == "unix":
        path = str(tmp_path / "s")
        server = await loop.create_unix_server(lambda: _Kept(made), path)
        client, _ = await loop.create_unix_connection(asyncio.Protocol, path)
    else:
        host = "::1" if family == "ipv6" else "127.0.0.1"
        server = await loop.create_server(lambda: _Kept(made), host, 0)
        port = server.sockets[0].getsockname()[1]
        client, _ = await loop.create_connection(asyncio.Protocol, host, port)
    try:
        yield await made
    finally:
        client.close()
        server.close()


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


FAMILIES = ["ipv4", *(["ipv6"] if _has_ipv6() else []), *(["unix"] if sys.platform != "win32" else [])]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_addresses_are_uvicorns_whatever_the_loop_and_socket(family: str, loop_kind: str, tmp_path: Path) -> None:
    """``local_address`` / ``remote_address`` answer as uvicorn's ``get_local_addr`` / ``get_remote_addr``."""

    async def compare() -> None:
        async with _accepted(family, tmp_path) as transport:
            assert local_address(transport) == get_local_addr(transport)
            assert remote_address(transport) == get_remote_addr(transport)

    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run
    runner(compare())


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_the_http_protocols_connection_starts_as_uvicorns_does(loop_kind: str, tmp_path: Path) -> None:
    """Every attribute uvicorn's ``connection_made`` sets, the gateway's sets alike (its own addressing, a
    new attribute of uvicorn's: this fails, and the override must follow)."""

    async def compare() -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None: ...

        config = Config(app=app, log_config=None)
        config.load()
        async with _accepted("ipv4", tmp_path) as transport:
            ours = GatewayHTTPProtocol(config=config, server_state=ServerState(), app_state={})
            theirs = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
            before = dict(vars(theirs))
            HttpToolsProtocol.connection_made(theirs, transport)
            set_by_uvicorn = {name: value for name, value in vars(theirs).items()
                              if name not in before or before[name] is not value}  # fmt: skip
            assert {"transport", "server", "client", "scheme"} <= set(set_by_uvicorn)
            ours.connection_made(transport)
            for name, value in set_by_uvicorn.items():
                if name == "flow":  # a FlowControl of the same transport (the gateway's is its subclass)
                    assert ours.flow._transport is transport
                else:
                    assert getattr(ours, name) == value, name
            assert ours in ours.connections
            ours.connection_lost(None)

    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run
    runner(compare())


def _pinging_splice() -> tuple[Splice, FakeTransport, FakeTransport]:
    client, upstream = FakeTransport(), FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    splice = Splice(raw, max_message_size=1000, close_timeout=30.0, ping_interval=30.0, ping_timeout=30.0)
    splice.client.connection_made(client)
    splice._start()
    return splice, client, upstream


async def test_no_keepalive_payload_is_drawn_until_the_first_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never pings draws no random payload; the first ping draws it, once."""
    drawn: list[bytes] = []

    def counted() -> bytes:
        drawn.append(bytes(8))
        return b"\x01\x02\x03\x04\x05\x06\x07\x08"

    monkeypatch.setattr(splice_module, "ping_payload", counted)
    splice, client, _upstream = _pinging_splice()
    splice.client.data_received(encode_frame(0x1, b"hi", mask=True))
    splice.upstream.data_received(encode_frame(0x1, b"hi", mask=False))
    assert drawn == []
    splice._keepalive()  # the client spoke: only the upstream is pinged
    splice._keepalive()  # and the client now too
    assert len(drawn) == 1 and bytes(client.written).endswith(encode_frame(0x9, splice.ping_payload, mask=False))
    splice._stop_timers()


async def test_a_pong_with_the_payload_passes_until_the_gateway_pinged_with_it() -> None:
    """Before any ping of the gateway's, no pong is its answer: one answering the other side's ping
    reaches it. Once the gateway pinged, the pong carrying its payload is taken out (as before: only
    then can one come)."""
    splice, client, upstream = _pinging_splice()
    splice.client.data_received(encode_frame(0x9, b"anything", mask=True))
    assert upstream.written
    early = encode_frame(0xA, b"anything", mask=False)
    splice.upstream.data_received(early)
    assert bytes(client.written) == early
    splice._keepalive()
    client.written.clear()
    splice.upstream.data_received(encode_frame(0xA, splice.ping_payload, mask=False))
    assert client.written == b""
    splice._stop_timers()


async def test_the_splice_runs_its_timers_on_the_upstreams_loop() -> None:
    """The loop the raw upstream was opened on serves the splice's timers (not asked for again)."""
    loop = asyncio.get_running_loop()
    upstream = FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader(loop=loop), loop=loop)
    splice = Splice(raw, max_message_size=1000, close_timeout=30.0, ping_interval=30.0, ping_timeout=30.0)
    splice.client.connection_made(FakeTransport())
    splice._start()
    assert splice._loop is loop and splice._keepalive_timer is not None
    splice._stop_timers()
