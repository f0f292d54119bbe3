"""An in-process (``asgi:``) upstream sees what a network upstream would, and a buggy one fails alone.

Real uvicorn, a real websockets client, and apps that record what they were given. Before:

* an app that refused the handshake (``websocket.close`` or a ``websocket.http.response``) and then
  called ``receive()`` waited for ever (uvicorn answers ``websocket.disconnect``, 1006): its task
  hung until the garbage collector destroyed it ("Task was destroyed but it is pending!");
* a ``websocket.send`` or ``websocket.close`` that uvicorn refuses (raising in the app) was relayed:
  ``{"bytes": "abc"}`` reached the client as a *text* message, ``{"text": b"x"}`` as a binary one,
  ``{}`` as an empty binary one; ``{"text": 5}``, a lone surrogate, ``{"code": "1000"}`` failed a
  relay pump (1011 ``gateway error``, an ERROR blaming the gateway), and a ``bytes`` or surrogate
  close reason left the client without a close frame (1006, uvicorn's "Exception in ASGI application");
* a response header with CR/LF or a name that is not a token (accept or refusal) made uvicorn
  answer 500 or nothing at all (a network upstream's is a 502);
* an accept or a refusal with more header lines, or longer ones, than a network upstream's answer may
  carry (1,000 headers, one of 200 KB) was written as given: the client got a response no
  ``websockets`` client reads (its 128 lines of 8192 bytes), and the gateway logged nothing (a
  network upstream's is a 502);
* the app's scope was a copy of the client's: what middleware outside the gateway decided on the
  client's request (``scope["user"]`` from the ``Authorization`` header a policy removed) and the
  server's ``root_path`` went along.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Message, Receive, Scope, Send
from asgi_ws_gateway.standalone import not_found
from support.apps import scope_recorder
from support.clients import connect, expect_close, expect_status
from support.servers import UvicornFactory, UvicornServer, WSImpl


def _serve(uvicorn_server: UvicornFactory, app: Any, ws_impl: WSImpl, **api: Any) -> UvicornServer:
    config = {"apis": [{"name": "inner", "path": "/ws/{room}", "upstreams": [{"app": app}], **api}]}
    return uvicorn_server(WebSocketGateway(not_found, config=config), ws=ws_impl, proxy_headers=False)


class _BearerBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        value = conn.headers.get("authorization", "")
        return (AuthCredentials(["admin"]), SimpleUser(value[7:])) if value.startswith("Bearer ") else None


async def test_the_app_gets_a_scope_of_its_own_not_the_clients(uvicorn_server: UvicornFactory) -> None:
    """Middleware outside the gateway read the Authorization header a policy removes: none of its keys go in."""
    seen: dict[str, Any] = {}
    app = scope_recorder(seen)

    # uvicorn puts its --root-path in front of the path: the API's path includes it
    upstream = {"app": app, "path": "/in"}
    api = {"name": "inner", "path": "/mounted/ws/{room}", "upstreams": [upstream]}
    config = {"apis": [{**api, "policies": [{"remove-header": {"header": "Authorization"}}]}]}
    gateway = WebSocketGateway(not_found, config=config)
    outer = AuthenticationMiddleware(gateway, backend=_BearerBackend())
    server = uvicorn_server(outer, proxy_headers=False, root_path="/mounted")
    async with await connect(server.url("/ws/a"), additional_headers={"Authorization": "Bearer root"}) as ws:
        assert await expect_close(ws) == (1000, "")
    assert b"authorization" not in dict(seen["headers"])
    assert "user" not in seen and "auth" not in seen
    assert (seen["root_path"], seen["path"], seen["raw_path"]) == ("", "/in", b"/in")


@pytest.mark.parametrize(
    "refusal",
    [
        [{"type": "websocket.close", "code": 1000}],
        [
            {"type": "websocket.http.response.start", "status": 401, "headers": []},
            {"type": "websocket.http.response.body", "body": b"no"},
        ],
    ],
    ids=["close", "http-response"],
)
async def test_an_app_that_refused_the_handshake_reads_a_disconnect(
    uvicorn_server: UvicornFactory, ws_impl: WSImpl, refusal: list[Message]
) -> None:
    after: asyncio.Queue[Message] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        for message in refusal:
            await send(message)
        message = await receive()
        loop.call_soon_threadsafe(after.put_nowait, message)

    server = _serve(uvicorn_server, app, ws_impl)
    assert (await expect_status(server.url("/ws/a")))[0] in (401, 403)
    async with asyncio.timeout(2):
        assert (await after.get())["type"] == "websocket.disconnect"


BAD_SENDS: dict[str, Message] = {
    "text-bytes": {"type": "websocket.send", "text": b"x"},
    "text-int": {"type": "websocket.send", "text": 5},
    "text-surrogate": {"type": "websocket.send", "text": "\ud800"},
    "bytes-str": {"type": "websocket.send", "bytes": "abc"},
    "neither": {"type": "websocket.send"},
    "both": {"type": "websocket.send", "text": "t", "bytes": b"b"},
    "code-str": {"type": "websocket.close", "code": "1000"},
    "code-none": {"type": "websocket.close", "code": None},
    "code-bool": {"type": "websocket.close", "code": True},
    "reason-bytes": {"type": "websocket.close", "code": 4000, "reason": b"r"},
    "reason-surrogate": {"type": "websocket.close", "code": 4000, "reason": "\ud800"},
}


@pytest.mark.parametrize("bad", list(BAD_SENDS.values()), ids=list(BAD_SENDS))
async def test_a_message_the_server_would_refuse_fails_the_app_not_the_relay(
    uvicorn_server: UvicornFactory, bad: Message, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await send(dict(bad))
        except Exception as exc:
            raised.append(exc)
            raise
        await receive()

    server = _serve(uvicorn_server, app, "websockets-sansio")
    async with await connect(server.url("/ws/a")) as ws:
        assert await expect_close(ws) == (1011, "upstream connection failed")  # nothing relayed first
    assert len(raised) == 1 and isinstance(raised[0], TypeError | ValueError)
    assert "relay pump failed" not in caplog.text and "Exception in ASGI application" not in caplog.text


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nset-cookie: s=1")]}],
        [{"type": "websocket.accept", "headers": [(b"x a", b"1")]}],
        [
            {"type": "websocket.http.response.start", "status": 403, "headers": [(b"x-a", b"1\nset-cookie: s=1")]},
            {"type": "websocket.http.response.body", "body": b""},
        ],
    ],
    ids=["accept-crlf", "accept-name", "refusal-lf"],
)
async def test_a_malformed_response_header_is_502_as_from_a_network_upstream(
    uvicorn_server: UvicornFactory, ws_impl: WSImpl, messages: list[Message]
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        for message in messages:
            await send(message)
        await receive()

    server = _serve(uvicorn_server, app, ws_impl)
    status, headers, _ = await expect_status(server.url("/ws/a"))
    assert status == 502 and "set-cookie" not in headers


def _lines(count: int) -> list[tuple[bytes, bytes]]:
    return [(b"x-h%d" % n, b"v") for n in range(count)]


LIMITS = 121
"""Header lines an app's accept may carry: a network upstream's 124 (``response_head.MAX_HEADER_LINES``)
less the three the server writes for it (``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``)."""
LONGEST = [(b"x-big", b"a" * (8192 - len("x-big: \r\n")))]
"""A header whose line is 8192 bytes with its CRLF, the longest a ``websockets`` client reads."""


@pytest.mark.parametrize(
    ("subprotocol", "headers", "opens"),
    [
        (None, _lines(LIMITS), True),
        (None, _lines(LIMITS + 1), False),
        ("chat", _lines(LIMITS - 1), True),  # the server's Sec-WebSocket-Protocol line counts
        ("chat", _lines(LIMITS), False),
        (None, _lines(1000), False),
        (None, LONGEST, True),
        (None, [(b"x-big", LONGEST[0][1] + b"a")], False),
        (None, [(b"x-big", b"a" * 200_000)], False),
    ],
    ids=["121", "122", "120+protocol", "121+protocol", "1000", "line-8192", "line-8193", "line-200KB"],
)
async def test_an_accept_over_a_network_upstreams_head_limits_is_502(
    uvicorn_server: UvicornFactory,
    ws_impl: WSImpl,
    subprotocol: str | None,
    headers: list[tuple[bytes, bytes]],
    opens: bool,
) -> None:
    """At the limits a ``websockets`` client opens the connection; past them the app's answer is a
    502, as a network upstream's, where the client got a response it could not read."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
        await receive()

    url = _serve(uvicorn_server, app, ws_impl).url("/ws/a")
    offered = None if subprotocol is None else [subprotocol]
    if opens:
        async with await connect(url, subprotocols=offered) as ws:
            assert ws.response is not None
            assert ws.response.headers.get("x-big", "v") == headers[-1][1].decode()
    else:
        assert (await expect_status(url, subprotocols=offered))[0] == 502


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (_lines(121), 403),  # a refusal's: 3 lines left for the gateway's (upstream.refusal_headers)
        (_lines(122), 502),
        ([(b"x-big", b"a" * 200_000)], 502),
        ([(b"x-h%d" % n, b"a" * 8000) for n in range(8)], 403),  # 64,080 bytes of lines
        ([(b"x-h%d" % n, b"a" * 8000) for n in range(9)], 502),  # 72,090: over the 64 KiB a head may take
    ],
    ids=["121", "122", "line-200KB", "64KB", "72KB"],
)
async def test_a_refusal_over_a_network_upstreams_head_limits_is_502(
    uvicorn_server: UvicornFactory, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    server = _serve(uvicorn_server, app, "websockets-sansio")
    assert (await expect_status(server.url("/ws/a")))[0] == status


async def test_a_large_or_endless_refusal_body_is_cut_as_a_network_upstreams(uvicorn_server: UvicornFactory) -> None:
    """The client gets the 403 with the first 64 KiB at once; the app streaming on finds the connection
    gone (its send raises) instead of having every byte held in memory until it stopped."""
    ended: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    chunk = bytes(range(256)) * 16  # 4 KiB

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": [(b"x-reason", b"quota")]})
        sent = 0
        try:
            while True:  # endless
                await send({"type": "websocket.http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
        except Exception as exc:  # the gateway's AppDisconnected, as uvicorn raises for a gone client
            loop.call_soon_threadsafe(ended.put_nowait, f"{type(exc).__name__} after {sent}")

    server = _serve(uvicorn_server, app, "websockets-sansio")
    status, headers, body = await expect_status(server.url("/ws/a"))
    assert (status, headers.get("x-reason"), body) == (403, "quota", (chunk * 16)[: 64 * 1024])
    async with asyncio.timeout(5):
        assert await ended.get() == f"AppDisconnected after {64 * 1024}"


@pytest.mark.parametrize(
    "message",
    [{"type": "websocket.send", "text": "\u00e9" * 614_400}, {"type": "websocket.send", "bytes": b"x" * (1 << 20 | 1)}],
    ids=["text-of-fewer-characters-than-bytes", "bytes"],
)
async def test_a_message_over_the_limit_closes_the_client_at_once_as_a_network_upstreams(
    uvicorn_server: UvicornFactory, message: Message
) -> None:
    """``"é" * 614400`` is 1.2 MB under a 1 MiB limit: it reached the client (the check read its
    characters, not its bytes). And the client's close waited for the app to finish, up to
    ``close_timeout``: here 60 s, and the app finishes only once the client has its close."""
    client_closed = asyncio.Event()
    finished: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send(message)
        assert (await receive())["type"] == "websocket.disconnect"
        await client_closed.wait()
        finished.append(True)

    server = _serve(uvicorn_server, app, "websockets-sansio", close_timeout=60)
    async with await connect(server.url("/ws/a"), max_size=None) as ws:
        async with asyncio.timeout(20):  # a hang detector: the app does not end before the close
            assert await expect_close(ws) == (1001, "upstream message too big")
    client_closed.set()
    async with asyncio.timeout(20):
        while not finished:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("offered", [None, ["chat.v1"]], ids=["none-offered", "another-offered"])
async def test_an_app_that_edits_its_scopes_offer_cannot_choose_a_subprotocol_the_client_did_not_offer(
    uvicorn_server: UvicornFactory, offered: list[str] | None
) -> None:
    """The offer the accept is checked against is the client's, not the app's scope, which the app owns:
    an app adding a default to ``scope["subprotocols"]`` and accepting with it had the 101 relayed with a
    subprotocol the client never offered (a client must fail it; a network upstream's is a 502)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        scope["subprotocols"].append("admin.v0")
        await send({"type": "websocket.accept", "subprotocol": "admin.v0"})
        await receive()

    server = _serve(uvicorn_server, app, "websockets-sansio")
    assert (await expect_status(server.url("/ws/a"), subprotocols=offered))[0] == 502
