"""The gateway's uvicorn protocols at the edge: oversized, malformed and slow handshakes, health, 426.

Every test talks raw TCP to a real uvicorn with a real upstream behind the gateway, and reads until
EOF: a refused request must get its status line *and* a closed connection, promptly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.server.head_deadline import _header_timeout_from_env
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import create_app
from support.clients import connect, expect_status
from support.rawhttp import EOF_TIMEOUT, HUGE_HEADER, MANY_HEADERS, exchange, handshake, header_of, send, status_of
from support.servers import UvicornServer, free_port
from support.upstream import UpstreamServer


class QuickHeadTimeout(GatewayHTTPProtocol):
    """The HTTP protocol with a short request-head deadline, so slow clients are tested quickly."""

    header_timeout = 0.3


class QuickH11HeadTimeout(GatewayH11Protocol):
    """The h11 variant, with the same short deadline."""

    header_timeout = 0.3


GATEWAY: Any = GatewayWebSocketProtocol
SERVERS: dict[str, Any] = {"gateway": GATEWAY, "wsproto": "wsproto", "websockets-sansio": "websockets-sansio"}


@pytest.fixture
def gateway_url(request: pytest.FixtureRequest, upstream: UpstreamServer) -> Iterator[tuple[int, Any]]:
    """(port, gateway) of the standalone gateway served by the WebSocket protocol named by the param."""
    ws = SERVERS[getattr(request, "param", "gateway")]
    echo = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}
    rooms = {"name": "rooms", "path": "/ws/rooms/{room}", "upstreams": [upstream.url("/echo")]}
    config = {"apis": [echo, rooms]}
    app = create_app(config)  # type: ignore[arg-type]
    with UvicornServer(app, ws=ws, http=QuickHeadTimeout) as server:
        yield server.port, app


# -- oversized and malformed upgrade requests --


@pytest.mark.parametrize("gateway_url", ["gateway", "wsproto"], indirect=True)
@pytest.mark.parametrize(
    ("extra", "path", "status"),
    [
        (MANY_HEADERS, "/ws/echo", 431),
        (HUGE_HEADER, "/ws/echo", 431),
        (b"x-big: " + b"a" * 9000 + b"\r\n", "/ws/echo", 431),  # one line over the parsers' 8 KiB
        (b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 7000) for i in range(20)), "/ws/echo", 431),  # 140 KB in total
        (b"", "/ws/echo?q=" + "a" * 100_000, 414),
        (b"", "/ws/rooms/" + "a" * 20_000, 414),
    ],
    ids=["1000-headers", "100kb-header", "9kb-header", "140kb-total", "100kb-query", "20kb-path"],
)
async def test_oversized_upgrade_requests_get_their_status_and_a_closed_socket(
    gateway_url: tuple[int, Any], extra: bytes, path: str, status: int
) -> None:
    """Too many, too long or too large in total: the 4xx arrives and the server closes the socket."""
    port, _ = gateway_url
    response = await exchange(port, handshake(path, extra))
    assert status_of(response) == status


@pytest.mark.parametrize("gateway_url", ["gateway", "wsproto", "websockets-sansio"], indirect=True)
@pytest.mark.parametrize(
    "request_head",
    [
        handshake(extra=b"x-bad\x01name: v\r\n"),
        handshake(extra=b"no-colon-here\r\n"),
        b"GET /ws/echo HTTP/9.9\r\nHost: gw\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on the plain port
    ],
    ids=["control-char-in-name", "line-without-colon", "bad-http-version", "tls-hello"],
)
async def test_malformed_requests_get_400_and_a_closed_socket(
    gateway_url: tuple[int, Any], request_head: bytes
) -> None:
    """Garbage before or in the request head: 400, then EOF."""
    port, _ = gateway_url
    response = await exchange(port, request_head)
    assert status_of(response) == 400


@pytest.mark.parametrize(
    "extra",
    [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n\r\nhello"],
    ids=["content-length", "chunked", "content-length-with-body"],
)
async def test_upgrade_request_with_a_body_gets_400_and_a_closed_socket(
    gateway_url: tuple[int, Any], extra: bytes
) -> None:
    """A handshake may not carry a body: 400 and EOF (uvicorn's websockets-sansio and wsproto hang)."""
    port, _ = gateway_url
    head, _, body = extra.partition(b"\r\n\r\n")
    request_head = handshake(extra=head + b"\r\n" if body else extra) + body
    assert status_of(await exchange(port, request_head)) == 400


async def test_oversized_handshake_does_not_reach_the_upstream(
    gateway_url: tuple[int, Any], upstream: UpstreamServer
) -> None:
    """A refused head costs the upstream nothing; a normal handshake right after still works."""
    port, _ = gateway_url
    assert status_of(await exchange(port, handshake(extra=MANY_HEADERS))) == 431
    async with await connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
        await ws.send("still serving")
        assert await ws.recv() == "still serving"
    assert len(upstream.handshakes) == 1


# -- the gateway's own header limit, for every server --


@pytest.mark.parametrize("ws", ["gateway", "wsproto", "websockets-sansio"])
@pytest.mark.parametrize(
    ("limits", "path", "headers", "status"),
    [
        ({"max_header_bytes": 2048}, "/ws/rooms/a", {f"x-h{i}": "v" * 300 for i in range(8)}, 431),
        ({"max_header_bytes": 4096}, "/ws/rooms/a", {"x-one": "v" * 5000}, 431),
        ({"max_headers": 10}, "/ws/rooms/a", {f"x-h{i}": "v" for i in range(12)}, 431),
        ({"max_target_bytes": 512}, "/ws/rooms/" + "r" * 600, {}, 414),
        ({"max_target_bytes": 512}, "/ws/rooms/a?q=" + "%41" * 200, {}, 414),
    ],
    ids=["total-bytes", "one-large-header", "count", "long-path", "long-query"],
)
async def test_configured_handshake_limits_refuse_under_every_server(
    upstream: UpstreamServer, ws: str, limits: dict[str, int], path: str, headers: dict[str, str], status: int
) -> None:
    """A request within the server's parser limits but over ``handshake_limits``: a problem+json refusal."""
    rooms = {"name": "rooms", "path": "/ws/rooms/{room}", "upstreams": [upstream.url("/echo")]}
    config = {"apis": [rooms], "handshake_limits": limits}
    with UvicornServer(create_app(config), ws=SERVERS[ws]) as server:  # type: ignore[arg-type]
        got, response_headers, body = await expect_status(server.url(path), additional_headers=headers)
        assert got == status
        assert response_headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == status
        async with await connect(server.url("/ws/rooms/a"), additional_headers={"x-small": "v" * 100}) as conn:
            await conn.send("under the limit")
            assert await conn.recv() == "under the limit"
    assert len(upstream.handshakes) == 1  # only the handshake under the limits reached the upstream


# -- slow clients --


@pytest.mark.parametrize("gateway_url", ["gateway", "wsproto"], indirect=True)
async def test_slowly_dribbled_handshake_gets_408_and_is_closed(gateway_url: tuple[int, Any]) -> None:
    """A byte every 50 ms would take a minute: the head deadline answers 408 and closes long before."""
    port, _ = gateway_url
    request_head = handshake(extra=b"".join(b"x-h%d: slow\r\n" % i for i in range(80)))
    response = await exchange(port, request_head, dribble=0.05)
    assert status_of(response) == 408


async def test_late_client_still_sending_reads_its_408_before_the_close(gateway_url: tuple[int, Any]) -> None:
    """The 408 half-closes and drops what still comes, as a 431 does: a close with the client's bytes
    unread would answer its next ones with a reset, which can lose the 408 in the client's kernel."""
    port, _ = gateway_url
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sender = asyncio.create_task(send(writer, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" * 40, dribble=0.05))
        async with asyncio.timeout(EOF_TIMEOUT):
            response = await reader.read()  # up to the server's EOF: a reset would raise here
        sender.cancel()
        assert status_of(response) == 408
        for _ in range(3):  # still read and dropped, not answered with a reset
            writer.write(b"x-late: header\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
    finally:
        writer.close()


async def test_silent_connection_is_closed_without_a_response(gateway_url: tuple[int, Any]) -> None:
    """A connection that never sends a byte is closed at the deadline, with nothing written."""
    port, _ = gateway_url
    assert await exchange(port, b"") == b""


async def test_slow_second_request_on_a_keep_alive_connection_gets_408(gateway_url: tuple[int, Any]) -> None:
    """The deadline restarts after each response: a fast first request does not buy a slow second."""
    port, _ = gateway_url
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        async with asyncio.timeout(EOF_TIMEOUT):
            assert status_of(await reader.readuntil(b"}")) == 200
        sender = asyncio.create_task(send(writer, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" * 40, dribble=0.05))
        try:
            async with asyncio.timeout(EOF_TIMEOUT):
                assert status_of(await reader.read()) == 408
        finally:
            sender.cancel()
    finally:
        writer.close()


@pytest.mark.parametrize("ws", ["gateway", "wsproto"])
async def test_h11_variant_closes_slow_and_silent_clients(upstream: UpstreamServer, ws: str) -> None:
    """``GatewayH11Protocol`` (no httptools): the same 408 for a slow head, the same close for silence."""
    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
    with UvicornServer(create_app(config), ws=SERVERS[ws], http=QuickH11HeadTimeout) as server:  # type: ignore[arg-type]
        assert status_of(await exchange(server.port, handshake(), dribble=0.05)) == 408
        assert await exchange(server.port, b"") == b""
        assert status_of(await exchange(server.port, handshake(extra=MANY_HEADERS))) == 431
        async with await connect(server.url("/ws/echo")) as conn:
            await conn.send("fast clients are served")
            assert await conn.recv() == "fast clients are served"


def test_header_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``$ASGI_WS_GATEWAY_HEADER_TIMEOUT`` sets the deadline; a non-positive or non-number fails loudly."""
    monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", "2.5")
    assert _header_timeout_from_env() == 2.5
    monkeypatch.delenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT")
    assert _header_timeout_from_env() == 10.0
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", bad)
        with pytest.raises(ValueError, match="ASGI_WS_GATEWAY_HEADER_TIMEOUT: expected a positive number"):
            _header_timeout_from_env()


BAD_LIMITS = {"ASGI_WS_GATEWAY_HEADER_TIMEOUT": "soon", "ASGI_WS_GATEWAY_MAX_HEAD_BYTES": "-1"}
"""Read when ``asgi_ws_gateway.server.head_deadline`` is imported: the CLI imports it, so raising there broke
every command, ``check`` and ``--help`` included, with a traceback."""
BAD_LIMITS_PROBLEMS = [
    "ASGI_WS_GATEWAY_HEADER_TIMEOUT: expected a positive number of seconds, got 'soon'",
    "ASGI_WS_GATEWAY_MAX_HEAD_BYTES: expected a positive number of bytes, got '-1'",
]


def _with_bad_limits(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    command = [sys.executable, *(arg.replace("CONFIG", str(config)) for arg in args)]
    env = {**os.environ, **BAD_LIMITS, "ASGI_WS_GATEWAY_CONFIG": str(config)}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_wrong_head_limits_in_the_environment_do_not_break_other_commands(tmp_path: Path) -> None:
    done = _with_bad_limits(tmp_path, "-m", "asgi_ws_gateway", "check", "CONFIG")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_refuses_wrong_head_limits_before_serving(tmp_path: Path, workers: str) -> None:
    done = _with_bad_limits(tmp_path, "-m", "asgi_ws_gateway", "run", "CONFIG", "--port", "0", "--workers", workers)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "invalid gateway configuration in environment (2 problem(s)):" in done.stderr
    assert all(problem in done.stderr for problem in BAD_LIMITS_PROBLEMS), done.stderr


def test_a_gateway_under_uvicorn_fails_its_start_up_on_wrong_head_limits(tmp_path: Path) -> None:
    """``uvicorn --http asgi_ws_gateway.server:GatewayHTTPProtocol``: the gateway's lifespan start-up fails."""
    done = _with_bad_limits(tmp_path, "-m", "uvicorn", "--factory", "asgi_ws_gateway.standalone:create_app",
                            "--http", "asgi_ws_gateway.server:GatewayHTTPProtocol", "--port", "0")  # fmt: skip
    assert done.returncode == 3, done.stderr  # uvicorn's start-up failure
    assert "Application startup failed. Exiting." in done.stderr
    assert all(problem in done.stderr for problem in BAD_LIMITS_PROBLEMS), done.stderr


# -- Sec-WebSocket-Version --


def version_status(server: str, version: bytes | None) -> int:
    """The gateway answers 400 (the issue's choice); wsproto 426 for a version it knows is not 13."""
    return 426 if server == "wsproto" and version else 400


@pytest.mark.parametrize("gateway_url", ["gateway", "wsproto"], indirect=True)
@pytest.mark.parametrize("version", [b"8", b"14", b"13, 8", b"", None], ids=["8", "14", "list", "empty", "missing"])
async def test_unsupported_websocket_version_names_the_supported_one(
    request: pytest.FixtureRequest, gateway_url: tuple[int, Any], version: bytes | None
) -> None:
    """RFC 6455 §4.2.2: a version the server does not speak gets a 4xx with ``Sec-WebSocket-Version: 13``."""
    port, _ = gateway_url
    response = await exchange(port, handshake(version=version))
    assert status_of(response) == version_status(request.node.callspec.params["gateway_url"], version)
    assert header_of(response, "Sec-WebSocket-Version") == "13"


# -- plain HTTP on the standalone gateway: health and 426 --


async def test_healthz_and_readyz_answer_and_readyz_is_503_while_draining(gateway_url: tuple[int, Any]) -> None:
    """Liveness stays 200; readiness turns 503 once the gateway drains, as the management API's do."""
    port, gateway = gateway_url
    health = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(health) == 200 and json.loads(health.split(b"\r\n\r\n", 1)[1]) == {"status": "ok"}
    ready = await exchange(port, b"GET /readyz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(ready) == 200 and json.loads(ready.split(b"\r\n\r\n", 1)[1]) == {"status": "ready"}
    await gateway.drain(grace=0)
    draining = await exchange(port, b"GET /readyz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(draining) == 503 and json.loads(draining.split(b"\r\n\r\n", 1)[1]) == {"status": "draining"}
    health = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(health) == 200


@pytest.mark.parametrize(
    "request_line",
    [b"GET /ws/echo", b"GET /ws/echo?x=1", b"POST /ws/echo", b"GET /ws/rooms/lobby", b"HEAD /ws/rooms/lobby"],
)
async def test_plain_http_on_an_api_path_is_426_upgrade_required(
    gateway_url: tuple[int, Any], request_line: bytes
) -> None:
    """A browser or curl on a WebSocket API's path learns it needs an upgrade."""
    port, _ = gateway_url
    response = await exchange(port, request_line + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 426
    assert header_of(response, "Upgrade") == "websocket"
    assert header_of(response, "Connection") == "Upgrade"


@pytest.mark.parametrize("path", [b"/", b"/ws", b"/ws/rooms/a/b", b"/healthz/x"])
async def test_plain_http_elsewhere_is_404(gateway_url: tuple[int, Any], path: bytes) -> None:
    """Paths that no API owns (and are not the health endpoints) stay 404."""
    port, _ = gateway_url
    response = await exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 404


def test_middleware_passes_plain_http_on_api_paths_to_the_app(upstream: UpstreamServer) -> None:
    """As a middleware the gateway leaves HTTP alone: the wrapped app may serve its own page there."""
    from starlette.testclient import TestClient

    from asgi_ws_gateway import WebSocketGateway
    from support.apps import echo_app

    app = WebSocketGateway(
        echo_app, config={"apis": [{"name": "e", "path": "/ws/echo", "upstreams": [upstream.url()]}]}
    )
    with TestClient(app) as client:
        assert client.get("/ws/echo").status_code == 200


# -- under `asgi-ws-gateway run` itself --


async def test_run_defaults_refuse_oversized_heads_answer_health_and_426(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """``run`` with no flags uses the gateway's protocols: 431 and EOF, /healthz, 426, a slow head closed."""
    config = tmp_path / "gateway.yaml"
    config.write_text(f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n")
    port = free_port()
    exe = Path(sys.executable).parent / "asgi-ws-gateway"
    process = await asyncio.create_subprocess_exec(
        str(exe), "run", str(config), "--port", str(port), "--log-level", "warning", cwd=tmp_path,
        env={**os.environ, "ASGI_WS_GATEWAY_HEADER_TIMEOUT": "0.5"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the standalone gateway did not start"
                await asyncio.sleep(0.1)
        assert status_of(await exchange(port, handshake(extra=MANY_HEADERS))) == 431
        assert status_of(await exchange(port, handshake(extra=HUGE_HEADER))) == 431
        assert status_of(await exchange(port, handshake(version=b"8"))) == 400
        assert status_of(await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")) == 200
        assert status_of(await exchange(port, b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")) == 426
        assert status_of(await exchange(port, handshake(), dribble=0.05)) == 408
        async with await connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await ws.send("served")
            assert await ws.recv() == "served"
    finally:
        process.terminate()
        async with asyncio.timeout(20):
            assert await process.wait() in (0, -signal.SIGTERM)
