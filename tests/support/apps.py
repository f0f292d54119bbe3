"""Tiny pure-ASGI apps used as in-process upstreams and as conformance baselines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "ASGIApp", "Message", "Receive", "Scope", "Send", "answering_with", "echo_app", "scope_recorder", "websocket_only"
]  # fmt: skip


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept every WebSocket and echo each message back unchanged (text stays text).

    When the client closes, the app simply returns: the server's own close reply mirrors the
    client's code. Plain HTTP requests get ``200 echo_app``; lifespan events are acknowledged.
    """
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(send)
    elif scope["type"] == "websocket":
        await _websocket(receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(send: Send) -> None:
    body = b"echo_app"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _websocket(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":  # websocket.disconnect
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def websocket_only(app: ASGIApp) -> ASGIApp:
    """``app``, a test's in-process upstream written for WebSocket scopes alone, returning from any other: its
    lifespan (which the gateway runs, as a server) is then unsupported, and the test sees its connections only."""

    async def only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await app(scope, receive, send)

    return only


def scope_recorder(seen: MutableMapping[str, Any]) -> ASGIApp:
    """An in-process upstream that copies its scope into ``seen``, accepts, and closes with 1000."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return  # a lifespan: unsupported
        seen.update(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    return app


def answering_with(headers: dict[str, str] | list[tuple[str, str]], *, refuse: bool) -> ASGIApp:
    """An in-process upstream whose accept (or, ``refuse``, a 403 refusal with a body) carries ``headers``
    (a list for a name given more than once); an accepted connection waits for the client to leave."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    raw = [(name.lower().encode(), value.encode()) for name, value in pairs]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return  # a lifespan: unsupported
        await receive()  # websocket.connect
        if refuse:
            await send({"type": "websocket.http.response.start", "status": 403, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": b"no"})
            return
        await send({"type": "websocket.accept", "headers": raw})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    return app
