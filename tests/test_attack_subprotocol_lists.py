"""The client's ``Sec-WebSocket-Protocol`` is read once, as RFC 6455 writes it, for policies and every connector.

uvicorn lists the header's elements as ``[t.strip() for t in value.split(",")]``, empty ones kept, and
the gateway passed that list on. ``chat, `` (or ``chat,,v2``, ``, chat``) on the relay was a 500 and
an ERROR with a traceback in the log for each handshake (websockets refused to send the empty
subprotocol), unthrottled and without a credential; the splice sent the upstream ``chat, , v2``, and
an in-process app was offered ``""``. Elements that are no token (``v 2``, ``"x"``) went through the
splice and the in-process path too. Now ``upstream.request.offered_subprotocols`` reads the offer:
empty elements ignored (RFC 9110 §5.6.1), each kept once, an element that is not a token a 400
``bad_request`` (RFC 6455 §4.1: ``1#token``). A real ``asgi-ws-gateway run`` (splice and relay)
and real uvicorn (in-process), a real upstream that records what it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.request import offered_subprotocols
from support.apps import scope_recorder
from support.gateway import GatewayMode
from support.jwts import HS_SECRET, token
from support.processes import ServerProcess, ready_server
from support.rawhttp import handshake, header_of, status_of, ws_frame
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

JWT = token(sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite

CLEANED: list[tuple[list[bytes], str]] = [
    ([b"chat.v1, "], "chat.v1"),
    ([b", chat.v1"], "chat.v1"),
    ([b"chat.v1,,chat.v2"], "chat.v1, chat.v2"),
    ([b"chat.v1,\tchat.v2"], "chat.v1, chat.v2"),
    ([b"chat.v1, chat.v1"], "chat.v1"),
    ([b"chat.v1,", b",chat.v2"], "chat.v1, chat.v2"),
]
"""Offers (one header line each) and the ``Sec-WebSocket-Protocol`` the upstream must get."""

NOT_TOKENS: list[bytes] = [b"chat.v1, v 2", b'chat.v1,"x"', b"chat.v1,ch\tat", b"chat.v1;q=1", b"chat.v1, a/b"]
"""Offers with an element that is not a token: a 400 on every path."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    url = upstream_server.url("/subprotocol")
    jwt = {"algorithms": ["HS256"], "secret": HS_SECRET, "issuer": "https://issuer.test", "audience": "chat",
           "token": [{"subprotocol": "bearer."}]}  # fmt: skip
    config = {"apis": [
        {"name": "splice", "path": "/splice", "upstreams": [url]},
        {"name": "relay", "path": "/relay", "upstreams": [url], "passthrough": False},
        {"name": "jwt", "path": "/jwt", "upstreams": [url], "passthrough": False, "policies": [{"validate-jwt": jwt}]},
    ]}  # fmt: skip
    path = Path(tmp_path_factory.mktemp("subprotocols")) / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)]) as server:
        yield server


async def _offer(port: int, path: str, lines: list[bytes]) -> tuple[int, bytes]:
    """A raw handshake offering ``lines`` (one ``Sec-WebSocket-Protocol`` line each): the status and head;
    an accepted connection is closed with 1000 at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake(path, b"".join(b"Sec-WebSocket-Protocol: " + line + b"\r\n" for line in lines)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = status_of(head)
        if status == 101:
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10)  # the close frame back, then EOF
        else:
            length = int(header_of(head, "content-length") or 0)
            head += await asyncio.wait_for(reader.readexactly(length), 10)
        return status, head
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # close() only schedules the FIN: stop() blocks the loop next
            await writer.wait_closed()


def _quiet(server: ServerProcess) -> None:
    output = server.output()
    assert " ERROR " not in output and "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("path", ["/splice", "/relay"])
@pytest.mark.parametrize(("lines", "expected"), CLEANED, ids=[repr(b"|".join(c[0]))[2:-1] for c in CLEANED])
async def test_the_upstream_is_offered_the_list_without_empty_elements(
    gateway: ServerProcess, upstream_server: UpstreamServer, path: str, lines: list[bytes], expected: str
) -> None:
    """Before: a 500 and a traceback on the relay (a repeat went up twice); ``chat.v1, , chat.v2`` on the splice."""
    count = len(upstream_server.handshakes)
    status, head = await _offer(gateway.port, path, lines)
    assert status == 101
    seen = upstream_server.handshakes[count:]
    assert len(seen) == 1
    assert seen[0].header("sec-websocket-protocol") == expected
    assert header_of(head, "sec-websocket-protocol") == ("chat.v2" if "chat.v2" in expected else "chat.v1")
    _quiet(gateway)


@pytest.mark.parametrize("line", NOT_TOKENS, ids=[repr(line)[2:-1] for line in NOT_TOKENS])
async def test_an_element_that_is_not_a_token_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, gateway_mode: GatewayMode, line: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Before: the relay under wsproto (which lets such a header through to the app) answered 500
    with a traceback logged. (websockets' servers, and so ``run``, refuse such a header themselves.)"""
    config = gateway_mode.config(upstream)
    port = uvicorn_server(WebSocketGateway(not_found, config=config), ws=gateway_mode.ws, proxy_headers=False).port
    status, response = await _offer(port, "/ws/subprotocol", [line])
    assert status == 400
    if b"problem+json" in response:  # the gateway's refusal (a server's own is text)
        assert "must be a token" in json.loads(response.split(b"\r\n\r\n", 1)[1])["detail"]
    assert upstream.handshakes == []  # no backend contacted
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_bearer_subprotocol_is_found_in_the_cleaned_list(
    gateway: ServerProcess, upstream_server: UpstreamServer
) -> None:
    """validate-jwt reads the same list: the token element is taken out, the empty ones were never there."""
    status, _ = await _offer(gateway.port, "/jwt", [b"chat.v1, ,bearer." + JWT.encode() + b","])
    assert status == 101
    assert upstream_server.handshakes[-1].header("sec-websocket-protocol") == "chat.v1"
    _quiet(gateway)


OPAQUE = "opaque-subprotocol-token-7f3a91"
"""A token subprotocol in no shape the JWT pattern knows: only its header says it is a credential."""


@pytest.mark.parametrize(
    "line",
    [f"bearer, {OPAQUE}=/;".encode(), f"bearer.{OPAQUE};x".encode(), f'access_token, "{OPAQUE}"'.encode(),
     f"bearer, {JWT}=;".encode()],
    ids=["bearer-comma", "prefix", "quoted", "jwt"],
)  # fmt: skip
async def test_the_400_of_an_offer_websockets_cannot_parse_quotes_no_token(gateway: ServerProcess, line: bytes) -> None:
    """``run``'s server (websockets) answered ``invalid Sec-WebSocket-Protocol header: expected comma at
    21 in bearer, <token>=/;`` as the refusal's body: the client's token back in clear, for every proxy
    on the way to log (an attack pass, round four)."""
    status, response = await _offer(gateway.port, "/splice", [line])
    assert status == 400
    head, body = response.split(b"\r\n\r\n", 1)
    assert OPAQUE.encode() not in response and JWT.encode() not in response
    assert body == b"Failed to open a WebSocket connection: invalid Sec-WebSocket-Protocol header.\n"
    assert int(header_of(head + b"\r\n\r\n", "content-length") or -1) == len(body)
    _quiet(gateway)


def _in_process(uvicorn_server: UvicornFactory, ws_impl: WSImpl, seen: dict[str, Any]) -> int:
    config = {"apis": [{"name": "inner", "path": "/ws/echo", "upstreams": [{"app": scope_recorder(seen)}]}]}
    return uvicorn_server(WebSocketGateway(not_found, config=config), ws=ws_impl, proxy_headers=False).port


async def test_an_in_process_app_is_offered_the_cleaned_list(uvicorn_server: UvicornFactory, ws_impl: WSImpl) -> None:
    """Before: the app's scope held ``["chat.v1", "", "chat.v2"]``."""
    seen: dict[str, Any] = {}
    port = _in_process(uvicorn_server, ws_impl, seen)
    assert (await _offer(port, "/ws/echo", [b"chat.v1, ,chat.v2, chat.v1,"]))[0] == 101
    assert seen["subprotocols"] == ["chat.v1", "chat.v2"]


async def test_an_in_process_app_is_never_offered_a_non_token(uvicorn_server: UvicornFactory, ws_impl: WSImpl) -> None:
    """Before: the app was offered ``'"x"'`` (101)."""
    seen: dict[str, Any] = {}
    port = _in_process(uvicorn_server, ws_impl, seen)
    assert (await _offer(port, "/ws/echo", [b'chat.v1,"x"']))[0] == 400
    assert seen == {}


# --- the reading, pure ----------------------------------------------------------------------------


def _scope(*lines: bytes) -> dict[str, Any]:
    listed = [t.strip() for line in lines for t in line.decode("latin-1").split(",")]  # as uvicorn lists them
    return {"headers": [(b"sec-websocket-protocol", line) for line in lines], "subprotocols": listed}


@pytest.mark.parametrize(("lines", "expected"), [*CLEANED, ([b" , ,"], None), ([b""], None)])
def test_offered_subprotocols_drops_empty_and_repeated_elements(lines: list[bytes], expected: str | None) -> None:
    assert offered_subprotocols(_scope(*lines)) == (expected.split(", ") if expected else [])


@pytest.mark.parametrize("line", NOT_TOKENS)
def test_offered_subprotocols_refuses_a_non_token(line: bytes) -> None:
    with pytest.raises(HandshakeDenied) as refused:
        offered_subprotocols(_scope(line))
    assert (refused.value.status, refused.value.reason) == (400, "bad_request")


def test_the_refusal_names_a_character_not_the_value() -> None:
    """A subprotocol may carry a token: the detail, which logs may show, holds none of it."""
    with pytest.raises(HandshakeDenied) as refused:
        offered_subprotocols(_scope(b"bearer.SECRET-TOKEN value"))
    assert "SECRET" not in refused.value.detail and "' '" in refused.value.detail


def test_a_server_that_lists_whole_lines_is_read_alike() -> None:
    """Without the header lines in the scope (a test client's scope), the listed values are split again."""
    assert offered_subprotocols({"subprotocols": ["chat.v1, ,chat.v2"]}) == ["chat.v1", "chat.v2"]
    assert offered_subprotocols({"subprotocols": []}) == []
    assert offered_subprotocols({}) == []


async def test_a_non_token_offer_is_refused_before_any_policy_counts_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The offer is read before the policies run: two refused offers leave a limit of one handshake
    unspent (before, a policy could count a handshake the request build then refused)."""
    limit = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 1, "window": 60}}
    config = {"apis": [{"name": "limited", "path": "/ws/subprotocol", "upstreams": [upstream.url("/subprotocol")],
                        "policies": [limit]}]}  # fmt: skip
    port = uvicorn_server(WebSocketGateway(not_found, config=config), ws="wsproto", proxy_headers=False).port
    assert [(await _offer(port, "/ws/subprotocol", [b'chat.v1,"x"']))[0] for _ in range(2)] == [400, 400]
    assert (await _offer(port, "/ws/subprotocol", [b"chat.v1"]))[0] == 101
