"""A handshake's list headers hold at most ``MAX_ITEMS`` items each: ``Connection``, ``Upgrade``, the
subprotocols offered, and the extensions offered with their parameters.

websockets' parsers read these headers an item at a time with regular expressions, and the gateway's
WebSocket protocol ran them in its accept, before any policy: four 7.8 KB lines of ``a,a,a,...``
(within every size limit) cost a ``run`` worker 25 ms of CPU in ``Sec-WebSocket-Protocol`` (14 ms in
``Connection``) for a handshake ``validate-jwt`` then refused with 401 (1 ms without them), and junk
extension offers 48 ms for an admitted one (the splice parsed them again). Now a crowded list is a
400 before anything parses it: from the gateway's protocol, and from the middleware under every other
server (an attack pass, `run` and uvicorn's implementations; the CPU figures are in docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from websockets import server as websockets_server
from websockets.datastructures import Headers
from websockets.http11 import Request

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.header_limits import check_lists
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.header_lists import MAX_ITEMS
from support.gateway import GatewayMode
from support.jwts import HS_SECRET
from support.processes import ServerProcess, ready_server
from support.rawhttp import handshake, header_of, status_of, ws_frame
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

CROWDED_PROTOCOLS = [b"Sec-WebSocket-Protocol: " + b"a," * 3900 + b"chat.v1"] * 4
"""Four header lines of 7.8 KB: within every size limit, 15,604 subprotocols."""
CROWDED_EXTENSIONS = [b"Sec-WebSocket-Extensions: " + b"x, " * 2600 + b"permessage-deflate"] * 4
"""Four lines of 7.8 KB, 10,404 extension offers."""
CROWDED_PARAMETERS = [b"Sec-WebSocket-Extensions: permessage-deflate" + b"; x" * 2600]
"""One offer with 2,600 parameters."""
CROWDED_CONNECTION = [b"Connection: " + b"a, " * 2600 + b"Upgrade"] * 4
"""Four lines of 7.8 KB, each naming the upgrade among 2,600 other options."""
CROWDED = {"protocols": CROWDED_PROTOCOLS, "extensions": CROWDED_EXTENSIONS, "parameters": CROWDED_PARAMETERS,
           "connection": CROWDED_CONNECTION}  # fmt: skip

FULL_PROTOCOLS = [b"Sec-WebSocket-Protocol: " + b", ".join(b"p%d" % i for i in range(MAX_ITEMS - 1)) + b", chat.v1"]
"""As many subprotocols as may be offered, the one the upstream picks last."""
FULL_EXTENSIONS = [b"Sec-WebSocket-Extensions: " + b", ".join([b"permessage-deflate; client_max_window_bits"] * 32)]
"""As many extension items as may be offered (32 offers of one parameter each)."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    """A real ``run``: an API refusing every client (``validate-jwt``), an open one, each spliced and relayed."""
    url = upstream_server.url("/subprotocol")
    jwt = {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat", "token": [{"subprotocol": "bearer."}]}
    config = {"apis": [
        {"name": "jwt", "path": "/jwt", "upstreams": [url], "policies": [{"validate-jwt": jwt}]},
        {"name": "splice", "path": "/splice", "upstreams": [url]},
        {"name": "relay", "path": "/relay", "upstreams": [url], "passthrough": False},
    ]}  # fmt: skip
    path = Path(tmp_path_factory.mktemp("offers")) / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)]) as server:
        yield server


async def _offer(port: int, path: str, lines: list[bytes]) -> tuple[int, bytes]:
    """A raw handshake with the header ``lines``: its status and response; an accepted one closed with 1000."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake(path, b"".join(line + b"\r\n" for line in lines)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = status_of(head)
        if status == 101:
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)
        else:
            head += await asyncio.wait_for(reader.readexactly(int(header_of(head, "content-length") or 0)), 10)
        return status, head
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # close() only schedules the FIN: stop() blocks the loop next
            await writer.wait_closed()


@pytest.mark.parametrize("path", ["/jwt", "/splice", "/relay"])
@pytest.mark.parametrize("kind", list(CROWDED))
async def test_a_crowded_list_is_a_400_under_run(
    gateway: ServerProcess, upstream_server: UpstreamServer, kind: str, path: str
) -> None:
    """Before: a 401 from ``/jwt`` after 14-25 ms of parsing; the open APIs admitted the client (101)."""
    count = len(upstream_server.handshakes)
    status, response = await _offer(gateway.port, path, CROWDED[kind])
    assert status == 400, response[:300]
    assert b"more than 64" in response
    assert len(upstream_server.handshakes) == count  # no backend contacted
    output = gateway.output()
    assert " ERROR " not in output and "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("path", ["/splice", "/relay"])
async def test_a_full_offer_is_still_served_under_run(
    gateway: ServerProcess, upstream_server: UpstreamServer, path: str
) -> None:
    """64 subprotocols and 64 extension items: a real client's offers, and more, pass as before."""
    status, response = await _offer(gateway.port, path, FULL_PROTOCOLS + FULL_EXTENSIONS)
    assert status == 101, response[:300]
    assert header_of(response, "sec-websocket-protocol") == "chat.v1"
    offered = upstream_server.handshakes[-1].header("sec-websocket-protocol") or ""
    assert len(offered.split(", ")) == MAX_ITEMS


@pytest.mark.parametrize("kind", ["protocols", "connection"])
async def test_a_crowded_list_is_a_400_from_the_middleware(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, gateway_mode: GatewayMode, kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Under uvicorn's implementations too, the list is refused before any policy and connector reads it
    (the server's own parse is the server's: use the gateway's protocol). Before: 101."""
    config = gateway_mode.config(upstream)
    port = uvicorn_server(WebSocketGateway(not_found, config=config), ws=gateway_mode.ws, proxy_headers=False).port
    status, response = await _offer(port, "/ws/subprotocol", CROWDED[kind])
    assert status == 400
    if b"problem+json" in response:  # the middleware's refusal (the gateway's protocol's own is text)
        detail = json.loads(response.split(b"\r\n\r\n", 1)[1])["detail"]
        name = "Sec-WebSocket-Protocol" if kind == "protocols" else "Connection"
        assert detail == f"the {name} header holds more than 64 items"
    assert upstream.handshakes == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- the rule, pure ---------------------------------------------------------------------------------


def _request(lines: list[bytes]) -> Request:
    headers = Headers()
    for name, value in [(b"Host", b"gw"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"Sec-WebSocket-Version", b"13"),
                        *(line.split(b": ", 1) for line in lines)]:  # fmt: skip
        headers[name.decode()] = value.decode("latin-1")
    return Request("/ws", headers)


@pytest.mark.parametrize("kind", list(CROWDED))
def test_the_protocol_refuses_a_crowded_list_before_websockets_parses_it(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: websockets' item-by-item parsers read all of it (~17 ms for four lines)."""

    def unexpected(header: str) -> None:
        raise AssertionError("the crowded list was parsed")

    for parser in ("parse_connection", "parse_upgrade", "parse_subprotocol", "parse_extension"):
        monkeypatch.setattr(websockets_server, parser, unexpected)
    protocol = _ServerProtocol()
    response = protocol.accept(_request(CROWDED[kind]))
    assert response.status_code == 400
    assert b"more than 64" in response.body


@pytest.mark.parametrize(
    ("lines", "crowded"),
    [
        ([b"Sec-WebSocket-Protocol: " + b",".join([b"a"] * MAX_ITEMS)], False),
        ([b"Sec-WebSocket-Protocol: " + b",".join([b"a"] * (MAX_ITEMS + 1))], True),
        ([b"Sec-WebSocket-Protocol: a"] * MAX_ITEMS, False),
        ([b"Sec-WebSocket-Protocol: a"] * (MAX_ITEMS + 1), True),
        ([b"Sec-WebSocket-Protocol: " + b"," * MAX_ITEMS], True),  # empty items count: parsers meet them
        ([b"Sec-WebSocket-Extensions: x" + b"; p" * (MAX_ITEMS - 1)], False),
        ([b"Sec-WebSocket-Extensions: x" + b"; p" * MAX_ITEMS], True),
        ([b"Sec-WebSocket-Extensions: " + b", ".join([b"x; p"] * (MAX_ITEMS // 2 + 1))], True),
        ([b"Connection: " + b", ".join([b"a"] * (MAX_ITEMS - 1)) + b", Upgrade"], False),
        ([b"Connection: a", b"Connection: " + b", ".join([b"a"] * (MAX_ITEMS - 1)) + b", Upgrade"], True),
        ([b"Upgrade: " + b"," * MAX_ITEMS + b"websocket"], True),
    ],
)
def test_items_are_counted_over_every_line_by_their_separators(lines: list[bytes], crowded: bool) -> None:
    scope = {"headers": [(name.lower(), value) for name, value in (line.split(b": ", 1) for line in lines)]}
    if crowded:
        with pytest.raises(HandshakeDenied) as refused:
            check_lists(scope)
        assert (refused.value.status, refused.value.reason) == (400, "bad_request")
    else:
        check_lists(scope)


def test_a_server_that_lists_the_subprotocols_alone_is_held_to_the_bound() -> None:
    """wsproto keeps the offer out of the scope's headers and lists its elements: each is an item."""
    check_lists({"headers": [], "subprotocols": ["a"] * MAX_ITEMS})
    with pytest.raises(HandshakeDenied):
        check_lists({"headers": [], "subprotocols": ["a"] * (MAX_ITEMS + 1)})
