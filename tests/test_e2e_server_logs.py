"""What the server logs when a handshake is refused or a client misbehaves: one INFO line at most.

Real uvicorn (log level info) with the gateway and a real upstream; the client sends raw frames a
well-behaved library would refuse to send. No record may be an ERROR or carry a traceback, and the
query string (where credentials travel) must never reach the server's lines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies import current_handshake
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import create_app
from support.clients import connect, expect_close, expect_status
from support.rawhttp import MANY_HEADERS, exchange, handshake, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

GATEWAY: Any = GatewayWebSocketProtocol
SERVERS: dict[str, Any] = {"gateway": GATEWAY, "wsproto": "wsproto"}
SECRET = "s3cr3t-t0ken-value"


@pytest.fixture(params=list(SERVERS))
def server(
    request: pytest.FixtureRequest, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> Iterator[UvicornServer]:
    """The standalone gateway under each WebSocket protocol, logging at INFO into ``caplog``."""
    config = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]},
            {"name": "reject", "path": "/ws/reject/{status}", "upstreams": [upstream.url("/reject/{status}")]},
            {"name": "in-process", "path": "/ws/in-process", "upstreams": ["asgi:support.apps:echo_app"]},
        ]
    }
    caplog.set_level(logging.INFO)
    app = create_app(config)  # type: ignore[arg-type]
    with UvicornServer(app, ws=SERVERS[request.param], log_level="info", ws_max_size=1024) as srv:
        srv.impl = request.param  # type: ignore[attr-defined]
        yield srv


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked with a zero key, so the payload goes as is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    return head + b"\0\0\0\0" + payload


async def server_idle(server: UvicornServer) -> None:
    """Wait until the server's ASGI tasks are over: uvicorn logs "returned without completing" only then."""
    for _ in range(1000):  # 10 s, generous
        if not server.server.server_state.tasks:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the server's ASGI tasks did not finish")


def server_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records of the server (uvicorn; the websockets library under it logs to uvicorn.error too)."""
    return [r for r in caplog.records if r.name.startswith("uvicorn")]


def assert_quiet(caplog: pytest.LogCaptureFixture, *, extra_lines: int) -> None:
    """No ERROR, no traceback anywhere; the server wrote at most ``extra_lines`` above DEBUG beyond "[accepted]"."""
    loud = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
    shown = [r.getMessage() for r in server_lines(caplog) if r.levelno > logging.DEBUG]
    lines = [line for line in shown if "[accepted]" not in line]
    lines = [line for line in lines if "Started server" not in line and "Waiting for" not in line]
    assert len(lines) <= extra_lines, lines
    assert all(r.levelno <= logging.WARNING for r in server_lines(caplog))


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/ws/reject/401", {}, 401),  # the upstream refuses: its answer is relayed
        ("/ws/reject/403", {}, 403),
        ("/ws/reject/429", {}, 429),
        ("/nowhere", {}, 404),  # no API: the standalone app refuses
        ("/ws/echo", {f"x-h{i}": "v" for i in range(120)}, 431),  # the gateway's own handshake_limits
    ],
    ids=["upstream-401", "upstream-403", "upstream-429", "no-api-404", "limits-431"],
)
async def test_refused_handshake_is_one_info_line_without_the_query(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, path: str, headers: dict[str, str], status: int
) -> None:
    """A refusal is the server's one status line, not "ASGI callable returned without completing handshake";
    under the gateway's protocol that line is at DEBUG when the gateway's access line (INFO) says it."""
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")  # the server is started: its level is set
    caplog.set_level(logging.DEBUG, logger="asgi_ws_gateway.middleware")
    got, _, _ = await expect_status(server.url(f"{path}?access_token={SECRET}"), additional_headers=headers)
    assert got == status
    await server_idle(server)
    lines = [r for r in server_lines(caplog) if path in r.getMessage() and r.getMessage().endswith(f" {status}")]
    folded = server.impl == "gateway" and path != "/nowhere"  # type: ignore[attr-defined]  # no API: no access line
    assert [r.levelno for r in lines] == [logging.DEBUG if folded else logging.INFO]
    access = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert len(access) == (0 if path == "/nowhere" else 1) and all(f'{path}" {status} ' in line for line in access)
    # The denial's detail, which the client was told: at DEBUG beside the access line (its reason and policy).
    # (under wsproto, the first handshake a gateway serves also warns that it runs without the gateway's protocols)
    own = [r for r in caplog.records if r.name.startswith("asgi_ws_gateway") and UNGUARDED not in r.getMessage()]
    details = [r.levelno for r in own if r.name == "asgi_ws_gateway.middleware"]
    assert details == ([] if path == "/nowhere" else [logging.DEBUG])
    assert len([r for r in own if r.levelno >= logging.INFO]) <= 1
    assert_quiet(caplog, extra_lines=1)
    if server.impl == "gateway":  # type: ignore[attr-defined]  # wsproto's line carries the query string
        assert not any(SECRET in r.getMessage() for r in caplog.records if r.name.startswith("uvicorn"))


UNGUARDED = "the server does not run the gateway's protocols"


def accepted_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in server_lines(caplog) if r.getMessage().endswith("[accepted]")]


async def echo_once(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


@pytest.mark.parametrize("server", ["gateway"], indirect=True)
@pytest.mark.parametrize("path", ["/ws/echo", "/ws/in-process"])  # spliced, relayed
async def test_accepted_line_folds_into_the_access_line(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A connection with an access line gets one INFO line, at its close: uvicorn's "[accepted]" line
    is at DEBUG (path only; the credential in the query string stays out)."""
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    await echo_once(server.url(f"{path}?access_token={SECRET}&subscription-key={SECRET}"))
    await server_idle(server)
    accepted = accepted_lines(caplog)
    assert [(r.levelno, r.getMessage().split('"')[1]) for r in accepted] == [(logging.DEBUG, f"WebSocket {path}")]
    access = [r for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert [r.levelno for r in access] == [logging.INFO] and f'"WebSocket {path}" 101' in access[0].getMessage()
    assert not any(SECRET in r.getMessage() for r in caplog.records if r.name.startswith("uvicorn"))


@pytest.mark.parametrize("server", ["gateway"], indirect=True)
@pytest.mark.parametrize("path", ["/ws/echo", "/ws/in-process"])
async def test_accepted_line_stays_at_info_without_the_access_log(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """With the access log off, the "[accepted]" line is the connection's line: INFO, path only."""
    access = logging.getLogger("asgi_ws_gateway.access")
    level = access.level
    access.setLevel(logging.WARNING)  # as run's --no-access-log (caplog.set_level would stop capturing INFO)
    try:
        await echo_once(server.url(f"{path}?access_token={SECRET}&subscription-key={SECRET}"))
        await server_idle(server)
    finally:
        access.setLevel(level)
    assert not any(r.name == "asgi_ws_gateway.access" for r in caplog.records)
    accepted = accepted_lines(caplog)
    assert [(r.levelno, r.getMessage().split('"')[1]) for r in accepted] == [(logging.INFO, f"WebSocket {path}")]
    assert not any(SECRET in r.getMessage() for r in caplog.records if r.name.startswith("uvicorn"))


async def test_accepted_line_stays_at_info_when_no_handler_takes_the_access_line(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An access logger enabled at INFO that writes nowhere (no handler on it or above) folds nothing."""
    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
    access = logging.getLogger("asgi_ws_gateway.access")
    saved = access.level, access.propagate, list(access.handlers)
    access.setLevel(logging.INFO)
    access.propagate, access.handlers = False, []
    caplog.set_level(logging.INFO)
    try:
        with UvicornServer(create_app(config), ws=GATEWAY, log_level="info") as server:  # type: ignore[arg-type]
            await echo_once(server.url("/ws/echo"))
            await server_idle(server)
    finally:
        access.setLevel(saved[0])
        access.propagate, access.handlers = saved[1], saved[2]
    accepted = accepted_lines(caplog)
    assert [(r.levelno, r.getMessage().split('"')[1]) for r in accepted] == [(logging.INFO, "WebSocket /ws/echo")]


async def test_accepted_line_stays_at_info_for_the_applications_own_websockets(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A WebSocket the application serves itself (no API owns the path) has no access line: uvicorn's
    "[accepted]" line stays at INFO, path only; the gateway's own connection is folded beside it."""

    async def own(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
    app = WebSocketGateway(Starlette(routes=[WebSocketRoute("/own", own)]), config=config)
    caplog.set_level(logging.INFO)
    with UvicornServer(app, ws=GATEWAY, log_level="info") as server:
        caplog.set_level(logging.DEBUG, logger="uvicorn.error")  # after uvicorn set its level
        await echo_once(server.url(f"/own?access_token={SECRET}"))
        await echo_once(server.url(f"/ws/echo?access_token={SECRET}"))
        await server_idle(server)
    accepted = [(r.levelno, r.getMessage().split('"')[1]) for r in accepted_lines(caplog)]
    assert accepted == [(logging.INFO, "WebSocket /own"), (logging.DEBUG, "WebSocket /ws/echo")]
    assert not any(SECRET in r.getMessage() for r in caplog.records if r.name.startswith("uvicorn"))


@pytest.mark.parametrize(
    ("raw", "code", "wsproto_code"),
    [
        (frame(0x1, b"\xff\xfe\xfd"), 1007, 1006),  # invalid UTF-8 in one text frame
        (frame(0x1, b"ok \xe2\x82", fin=False) + frame(0x0, b"\xff"), 1007, 1006),  # split across fragments
        (frame(0x8, struct.pack("!H", 999)), 1002, 1006),  # a close code no one may send
        (frame(0x8, struct.pack("!H", 1005)), 1002, 1006),  # a reserved close code on the wire
        (frame(0x3, b"x"), 1002, 1006),  # a reserved opcode
        (frame(0x2, b"x" * 4096), 1009, 1009),  # over ws_max_size
    ],
    ids=["utf8", "utf8-fragmented", "close-999", "close-1005", "opcode-3", "too-big"],
)
async def test_misbehaving_client_is_closed_with_its_code_and_at_most_one_line(
    server: UvicornServer,
    upstream: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    code: int,
    wsproto_code: int,
) -> None:
    """Bad frames get the RFC 6455 close code; the server logs one INFO line at most, never a traceback.

    wsproto is as quiet but drops the connection without a close frame (1006 at the client) on
    protocol errors and invalid UTF-8.
    """
    ws = await connect(server.url("/ws/echo"))
    ws.transport.write(raw)
    got, _ = await expect_close(ws)
    assert got == (code if server.impl == "gateway" else wsproto_code)  # type: ignore[attr-defined]
    await upstream.wait_for_closes_async(1)
    await server_idle(server)
    assert_quiet(caplog, extra_lines=1)


@pytest.mark.parametrize("how", ["rst", "fin"])
async def test_client_vanishing_logs_no_error(
    server: UvicornServer, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A client that resets the connection or drops it without a close frame is not the server's error."""
    ws = await connect(server.url("/ws/echo"))
    await ws.send("hello")
    assert await ws.recv() == "hello"
    sock: socket.socket = ws.transport.get_extra_info("socket")
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()
    closes = await upstream.wait_for_closes_async(1)
    assert closes[0][0] in (1000, 1001, 1006, 1011)  # issue 11 item 4 decides which; logs are the point here
    await server_idle(server)
    assert_quiet(caplog, extra_lines=1)


@pytest.mark.parametrize("server", ["gateway"], indirect=True)
@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"authorization: Bearer " + SECRET.encode() + b"\r\n" + MANY_HEADERS, 431),
        (b"x-api-key: " + SECRET.encode() * 600 + b"\r\n", 431),
        (b"x-bad-line " + SECRET.encode() + b"\r\n", 400),
        (b"Sec-WebSocket-Version: " + SECRET.encode() + b"\r\n", 400),
    ],
    ids=["many-headers", "long-line", "no-colon", "bad-version-value"],
)
async def test_refused_request_head_is_one_info_line_quoting_nothing(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, extra: bytes, status: int
) -> None:
    """A head refused by the parser is logged with a fixed description: the offending line is not quoted."""
    request_head = handshake(extra=extra, version=None if b"Version" in extra else b"13")
    assert status_of(await exchange(server.port, request_head)) == status
    await server_idle(server)
    assert_quiet(caplog, extra_lines=1)
    assert not any(SECRET in r.getMessage() for r in caplog.records)


async def test_the_handshake_is_not_current_once_the_gateway_returns(upstream: UpstreamServer) -> None:
    """A refused handshake stays current while its refusal is sent (for the server's line), then is released,
    as an accepted one is at accept: code after the gateway in the same task does not see it."""
    config = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]},
            {"name": "reject", "path": "/ws/reject/{status}", "upstreams": [upstream.url("/reject/{status}")]},
            {"name": "limits", "path": "/ws/limits", "upstreams": [upstream.url("/echo")],
             "policies": [{"ip-filter": {"deny": ["127.0.0.1"]}}]},
        ]
    }  # fmt: skip
    inner = create_app(config)  # type: ignore[arg-type]
    seen: list[object] = []

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)
        if scope["type"] == "websocket":
            seen.append(current_handshake())

    with UvicornServer(outer, ws=GATEWAY) as server:
        assert (await expect_status(server.url("/ws/reject/403")))[0] == 403  # the upstream refuses
        assert (await expect_status(server.url("/ws/limits")))[0] == 403  # a policy refuses
        await echo_once(server.url("/ws/echo"))
        await server_idle(server)
    assert seen == [None, None, None]


async def test_a_refusals_detail_stays_at_info_without_the_access_log(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With the access log off, the denial's detail line is the refusal's INFO line (5xx: WARNING, always)."""
    config = {
        "apis": [
            {"name": "deny", "path": "/ws/deny", "upstreams": [upstream.url("/echo")],
             "policies": [{"ip-filter": {"deny": ["127.0.0.1"]}}]},
            {"name": "down", "path": "/ws/down", "upstreams": ["ws://127.0.0.1:9/"]},
        ]
    }  # fmt: skip
    access = logging.getLogger("asgi_ws_gateway.access")
    level = access.level
    access.setLevel(logging.WARNING)
    caplog.set_level(logging.DEBUG, logger="asgi_ws_gateway.middleware")
    try:
        with UvicornServer(create_app(config), ws=GATEWAY, log_level="info") as server:  # type: ignore[arg-type]
            assert (await expect_status(server.url("/ws/deny")))[0] == 403
            assert (await expect_status(server.url("/ws/down")))[0] == 502
            await server_idle(server)
    finally:
        access.setLevel(level)
    details = [
        (r.levelno, r.getMessage().split(":")[0]) for r in caplog.records if r.name == "asgi_ws_gateway.middleware"
    ]
    assert details == [(logging.INFO, "API deny"), (logging.WARNING, "API down")]


async def test_a_flood_of_5xx_refusals_is_one_warning_and_a_line_each_in_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its upstream down, every handshake is a 502: the detail WARNING used to be a second line each."""
    config = {"apis": [{"name": "down", "path": "/ws/down", "upstreams": ["ws://127.0.0.1:9/"]}]}
    caplog.set_level(logging.INFO)
    with UvicornServer(create_app(config), ws=GATEWAY, log_level="info") as server:  # type: ignore[arg-type]
        for _ in range(30):
            assert (await expect_status(server.url("/ws/down")))[0] == 502
        await server_idle(server)
    details = [
        r for r in caplog.records if r.name == "asgi_ws_gateway.middleware" and "handshake denied" in r.getMessage()
    ]
    assert [(r.levelno, r.getMessage().split(": ")[0]) for r in details] == [(logging.WARNING, "API down")]
    access = [
        r for r in caplog.records if r.name == "asgi_ws_gateway.access" and '"WebSocket /ws/down" 502' in r.getMessage()
    ]
    assert len(access) == 30


@pytest.mark.parametrize("server", ["gateway"], indirect=True)
@pytest.mark.parametrize("path", ["/ws/Bearer%20s3cretvalue42", "/ws/token%3Ds3cretvalue42"])
async def test_a_handshake_websockets_refuses_logs_its_path_decoded_and_redacted(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """The line for a handshake websockets' own checks refuse (here a version it does not speak)
    redacted the raw target, where "%20" and "%3D" hid the credential from the pattern."""
    assert status_of(await exchange(server.port, handshake(path, version=b"12"))) == 400
    await server_idle(server)
    lines = [r.getMessage() for r in server_lines(caplog) if '"WebSocket /ws/' in r.getMessage()]
    assert len(lines) == 1 and "REDACTED" in lines[0], lines
    assert not any("s3cretvalue42" in r.getMessage() for r in caplog.records)
