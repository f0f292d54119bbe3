"""The middleware in process (Starlette TestClient): dispatch, in-process upstreams, denials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import (
    TestClient,
    WebSocketDenialResponse,
)
from starlette.websockets import WebSocket, WebSocketDisconnect

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Receive, Scope, Send
from support.apps import echo_app, scope_recorder


async def _own_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("wrapped app")
    await websocket.close()


def _wrapped_app() -> Starlette:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    return Starlette(routes=[Route("/", home), WebSocketRoute("/own", _own_ws)])


def _gateway(upstream: Any, **api: Any) -> WebSocketGateway:
    config = {"apis": [{"name": "echo", "path": "/ws/{room}", "upstreams": [upstream], **api}]}
    return WebSocketGateway(_wrapped_app(), config=config)


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_and_other_websocket_paths_reach_the_wrapped_app() -> None:
    client = TestClient(_gateway({"app": echo_app}))
    assert client.get("/").text == "home"
    with client.websocket_connect("/own") as ws:
        assert ws.receive_text() == "wrapped app"


def test_lifespan_reaches_the_wrapped_app() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    app = Starlette(lifespan=lifespan)
    with TestClient(WebSocketGateway(app, config={"apis": []})):
        assert events == ["up"]
    assert events == ["up", "down"]


def test_in_process_upstream_relays_text_bytes_and_empty_messages() -> None:
    client = TestClient(_gateway({"app": echo_app}))
    with client.websocket_connect("/ws/lobby") as ws:
        for text in ["hello", "", "é" * 1000]:
            ws.send_text(text)
            assert ws.receive_text() == text
        for data in [b"\x00\x01", b""]:
            ws.send_bytes(data)
            assert ws.receive_bytes() == data


def test_in_process_upstream_sees_path_params_query_and_forwarded_headers() -> None:
    seen: dict[str, Any] = {}
    app = scope_recorder(seen)

    client = TestClient(_gateway({"url": "asgi:", "app": app, "path": "/inner/{room}"}))
    with client.websocket_connect("/ws/lobby?x=1", headers={"X-Custom": "v"}) as ws, pytest.raises(WebSocketDisconnect):
        ws.receive_text()
    assert seen["path"] == "/inner/lobby"
    assert seen["query_string"] == b"x=1"
    headers = dict(seen["headers"])
    assert headers[b"x-custom"] == b"v"
    assert headers[b"x-forwarded-proto"] == b"http"
    assert b"sec-websocket-key" not in headers


def test_upstream_close_code_and_reason_reach_the_client() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 4321, "reason": "done here"})

    client = TestClient(_gateway({"app": app}))
    with client.websocket_connect("/ws/a") as ws:
        ws.send_text("go")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert (info.value.code, info.value.reason) == (4321, "done here")


def test_in_process_subprotocol_choice_is_accepted_to_the_client() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][-1]})
        await receive()

    client = TestClient(_gateway({"app": app}))
    with client.websocket_connect("/ws/a", subprotocols=["one", "two"]) as ws:
        assert ws.accepted_subprotocol == "two"


@pytest.mark.parametrize("offered", [["one", "two"], []], ids=["others-offered", "none-offered"])
def test_in_process_choice_of_a_subprotocol_not_offered_is_502_and_the_app_is_stopped(offered: list[str]) -> None:
    """As the network connectors: a client must fail a 101 naming a subprotocol it did not offer."""
    stopped = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "evil"})
        try:
            await receive()
        finally:
            stopped.set()

    client = TestClient(_gateway({"app": app}))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a", subprotocols=offered).__enter__()
    assert info.value.status_code == 502
    assert stopped.is_set()  # not left waiting for a message that never comes


def test_in_process_http_rejection_is_relayed_with_status_and_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b'{"error":"no"}'})

    client = TestClient(_gateway({"app": app}))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a").__enter__()
    response = info.value
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": "no"}


def test_in_process_close_before_accept_is_403() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    client = TestClient(_gateway({"app": app}))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a").__enter__()
    assert info.value.status_code == 403


def test_unreachable_upstream_is_502_problem_json() -> None:
    client = TestClient(_gateway(f"ws://127.0.0.1:{_refused_port()}/"))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a").__enter__()
    response = info.value
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    problem = json.loads(response.content)
    assert problem["status"] == 502 and problem["title"] == "Bad Gateway"
    assert problem["detail"] == "the service behind this API is not available"  # no URL, no errno


def test_in_process_upstream_that_never_accepts_is_504() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # waits for ever: never accepts

    client = TestClient(_gateway({"app": app}, connect_timeout=0.2))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a").__enter__()
    assert info.value.status_code == 504


def test_in_process_upstream_crash_before_accept_is_502() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    client = TestClient(_gateway({"app": app}))
    with pytest.raises(WebSocketDenialResponse) as info:
        client.websocket_connect("/ws/a").__enter__()
    assert info.value.status_code == 502


def test_oversize_client_message_closes_client_1009_and_upstream_1001() -> None:
    closes: list[tuple[int, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        closes.append((message["code"], message.get("reason", "")))

    client = TestClient(_gateway({"app": app}, max_message_size=10))
    with client.websocket_connect("/ws/a") as ws:
        ws.send_text("x" * 11)
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == 1009
    assert closes == [(1001, "client message too big")]


def test_oversize_upstream_message_closes_client_1001() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"x" * 11})
        await receive()

    client = TestClient(_gateway({"app": app}, max_message_size=10))
    with client.websocket_connect("/ws/a") as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_bytes()
    assert (info.value.code, info.value.reason) == (1001, "upstream message too big")


def test_multibyte_text_is_measured_in_utf8_bytes() -> None:
    client = TestClient(_gateway({"app": echo_app}, max_message_size=10))
    with client.websocket_connect("/ws/a") as ws:
        ws.send_text("é" * 5)  # 10 bytes: allowed
        assert ws.receive_text() == "é" * 5
        ws.send_text("é" * 6)  # 12 bytes: too big
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == 1009


def test_server_without_http_response_extension_gets_close_before_accept() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    gateway = _gateway(f"ws://127.0.0.1:{_refused_port()}/")
    scope = {"type": "websocket", "path": "/ws/a", "headers": [], "query_string": b"", "extensions": {}}
    asyncio.run(gateway(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.close"]
