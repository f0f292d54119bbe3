"""The example app (``example_app/``) under a real uvicorn server, driven by the ``websockets`` client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import httpx2
import pytest
import yaml
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from asgi_ws_gateway import load_config
from example_app.main import CONFIG, create_app
from example_app.upstream import SEND_QUEUE_SIZE, Member, Rooms
from support.servers import UvicornServer

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    """The example app, served once for this module's tests."""
    with UvicornServer(create_app()) as running:
        yield running


def _connect(server: UvicornServer, path: str, **kw: Any) -> connect:
    return connect(server.url(path), proxy=None, open_timeout=TIMEOUT, **kw)


async def _recv(ws: ClientConnection) -> str | bytes:
    async with asyncio.timeout(TIMEOUT):
        return await ws.recv()


def test_gateway_yaml_loads() -> None:
    """gateway.yaml validates and declares the echo and chat APIs on in-process upstreams."""
    config = load_config(CONFIG)
    apis = {api.name: api for api in config.apis}
    assert [(api.name, api.path) for api in config.apis] == [("echo", "/ws/echo"), ("chat", "/ws/chat/{room}")]
    assert [(u.kind, u.path) for u in apis["echo"].upstreams] == [("asgi", "/echo")]
    assert [(u.kind, u.path) for u in apis["chat"].upstreams] == [("asgi", "/chat/{room}")]
    assert apis["chat"].idle_timeout == 300


def test_gateway_yaml_commented_network_example_is_valid() -> None:
    """The commented-out ws:// variant in gateway.yaml is itself a valid configuration."""
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name:"))
    block = [line.replace("# ", "", 1) for line in lines[start:] if line.startswith("  #")]
    config = load_config({"apis": yaml.safe_load("\n".join(block))})
    (api,) = config.apis
    assert [u.url for u in api.upstreams] == ["ws://127.0.0.1:9000/chat/{room}", "ws://127.0.0.1:9001/chat/{room}"]


def test_index_page_and_healthz(server: UvicornServer) -> None:
    """/ serves the console page and /healthz answers: plain HTTP passes the gateway untouched."""
    with httpx2.Client(base_url=server.url("", scheme="http"), trust_env=False, timeout=TIMEOUT) as http:
        page = http.get("/")
        health = http.get("/healthz")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>asgi-ws-gateway example</title>" in page.text
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "message", ["hello ✓", b"\x00\x01\xfe\xff", "", b""], ids=["text", "bytes", "empty", "empty-bytes"]
)
async def test_echo_returns_each_message_unchanged(server: UvicornServer, message: str | bytes) -> None:
    """/ws/echo returns each message with its type and content unchanged."""
    async with _connect(server, "/ws/echo") as ws:
        await ws.send(message)
        assert await _recv(ws) == message


@pytest.mark.parametrize("offered", [[Subprotocol("chat.v1")], []], ids=["offered", "none"])
async def test_echo_negotiates_subprotocol(server: UvicornServer, offered: list[Subprotocol]) -> None:
    """The upstream selects chat.v1 when offered, and the gateway passes its choice to the client."""
    async with _connect(server, "/ws/echo", subprotocols=offered or None) as ws:
        assert ws.subprotocol == (offered[0] if offered else None)


async def test_echo_close_code_comes_back(server: UvicornServer) -> None:
    """Closing with 4001 completes cleanly: the client receives 4001 "bye" in reply."""
    async with _connect(server, "/ws/echo") as ws:
        await ws.close(4001, "bye")
    assert ws.protocol.close_rcvd is not None
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4001, "bye")


async def test_chat_broadcasts_within_a_room(server: UvicornServer) -> None:
    """Two clients in /ws/chat/lobby see each other's messages (and their own); another room sees none."""
    async with (
        _connect(server, "/ws/chat/lobby") as alice,
        _connect(server, "/ws/chat/lobby") as bob,
        _connect(server, "/ws/chat/elsewhere") as carol,
    ):
        await alice.send("hi from alice")
        assert await _recv(alice) == "hi from alice"
        assert await _recv(bob) == "hi from alice"
        await bob.send("hi from bob")
        assert await _recv(bob) == "hi from bob"
        assert await _recv(alice) == "hi from bob"
        await carol.send("anyone?")
        assert await _recv(carol) == "anyone?"  # nothing from the lobby arrived before her own message


async def test_chat_leaving_member_does_not_break_room(server: UvicornServer) -> None:
    """A member that leaves is dropped from the room; the others keep chatting."""
    async with _connect(server, "/ws/chat/leavers") as alice:
        async with _connect(server, "/ws/chat/leavers") as bob:
            await bob.send("bye all")
            assert await _recv(alice) == "bye all"
        await alice.send("still here")
        assert await _recv(alice) == "still here"


async def test_chat_refuses_binary_with_1003(server: UvicornServer) -> None:
    """A binary chat message closes the connection with the upstream's 1003, relayed by the gateway."""
    async with _connect(server, "/ws/chat/lobby") as ws:
        await ws.send(b"\x00")
        with pytest.raises(ConnectionClosed):
            await _recv(ws)
    assert ws.protocol.close_rcvd is not None
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1003, "chat messages must be text")


def test_chat_member_that_falls_behind_is_dropped() -> None:
    """A member whose outbox is full leaves the room, and its writer is told to close (1013)."""
    rooms, member = Rooms(), Member(cast(WebSocket, None))  # the socket is never touched here
    rooms.join("slow", member)
    for i in range(SEND_QUEUE_SIZE + 1):
        rooms.broadcast("slow", f"message {i}")
    assert rooms.members("slow") == 0
    assert member.outbox.qsize() == 1
    assert member.outbox.get_nowait() is None
