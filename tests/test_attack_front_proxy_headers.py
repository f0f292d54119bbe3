"""An upstream's answer cannot carry headers that the proxy in front of the gateway acts on.

To nginx (or Envoy, Apache, lighttpd, LiteSpeed) in front, the gateway is the application, and
the headers of its answers are obeyed as the gateway's own. Every connector passed an upstream's
``X-Accel-Redirect`` on: an upstream's 101 or refusal naming ``/internal/secret.txt`` had nginx answer
the client's handshake with that file, from a location marked ``internal`` that no client may request
(an attack pass, nginx 1.22 in front of ``asgi-ws-gateway run``). ``upstream.headers.FRONT_PROXY`` and
its prefixes (``X-Accel-*``, ``X-Envoy-*``, ``X-LiteSpeed-*``) never pass now; other headers still do.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.upstream.headers import FRONT_PROXY, FRONT_PROXY_PREFIXES
from bench.nginx import nginx_binary
from support.apps import answering_with
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, handshake, header_of, status_of, ws_frame
from support.servers import UvicornFactory, free_port

SECRET = b"the contents of an internal location"
HOSTILE = {
    "X-Accel-Redirect": "/internal/secret.txt",
    "X-Accel-Buffering": "no",
    "X-Accel-Limit-Rate": "1",
    "X-Sendfile": "/etc/passwd",
    "X-Lighttpd-Send-File": "/etc/passwd",
    "X-LiteSpeed-Location": "/internal/secret.txt",
    "X-Envoy-Immediate-Health-Check-Fail": "true",
    "X-Envoy-Degraded": "true",
}
KEPT = {"X-App": "chat", "Set-Cookie": "affinity=b2; Path=/ws; HttpOnly"}
WIDER_COOKIES: dict[str, list[str]] = {"response_cookie_paths": ["/ws"]}
"""What lets KEPT's cookie pass as written: a Path beside the API's own (``upstream.cookie_scope``)."""


def test_the_lists_cover_every_hostile_header() -> None:
    for name in HOSTILE:
        assert name.lower() in FRONT_PROXY or name.lower().startswith(FRONT_PROXY_PREFIXES), name


def _lines(headers: dict[str, str]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())


def _answers_with_headers(status: int, ended: asyncio.Event) -> Handler:
    """A 101 or a 403 (``status``) carrying :data:`HOSTILE` and :data:`KEPT`; ``ended`` is set once the
    gateway's close (or its end) is read and the connection closed."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = _lines({**HOSTILE, **KEPT})
            if status == 403:
                writer.write(b"HTTP/1.1 403 Forbidden\r\n" + headers + b"Content-Length: 2\r\n\r\nno")
            else:
                switching = _Capture()
                reader.feed_data(head)
                await accept_upstream(reader, switching)  # type: ignore[arg-type]  # only write() is called
                writer.write(switching.data.replace(b"\r\n\r\n", b"\r\n" + headers + b"\r\n", 1))
            await writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):  # the gateway's close frame, or its end
                await asyncio.wait_for(reader.read(1), 5)
        finally:
            writer.close()
            ended.set()

    return answer


class _Capture:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


async def _answer(port: int, path: str) -> bytes:
    """What a raw client's handshake to ``path`` on ``port`` reads (2 s at most): a refusal's head and body,
    or a 101 and all that follows the client's close frame, to the connection's end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(path))
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2):
            while b"\r\n\r\n" not in answer and (chunk := await reader.read(65536)):
                answer += chunk
            length = header_of(answer, "content-length")
            if b"\r\n\r\n" in answer and status_of(answer) == 101:
                # Closed as a client does: a 101 left open was still relayed at the server's stop, which
                # waited out its close_timeout (1 s) for the upstream, whose loop that stop blocks.
                writer.write(ws_frame(0x8, b"\x03\xe8"))
                answer += await reader.read()
            elif length is not None:  # nginx keeps the connection open after the body: its end was 2 s away
                end = answer.find(b"\r\n\r\n") + 4 + int(length)
                while len(answer) < end and (chunk := await reader.read(65536)):
                    answer += chunk
            else:
                answer += await reader.read()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return answer


def _assert_front_proxy_headers_dropped(answer: bytes) -> None:
    head = answer[: answer.find(b"\r\n\r\n") + 4]
    for name in HOSTILE:
        assert header_of(head, name) is None, name
    for name, value in KEPT.items():
        assert header_of(head, name) == value, name


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("status", [101, 403], ids=["101", "refusal"])
async def test_a_network_upstreams_front_proxy_headers_never_reach_the_client(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, status: int
) -> None:
    ended = asyncio.Event()
    port = await hostile(_answers_with_headers(status, ended))
    _gateway, url = gateway_before(port, connector, uvicorn_server, close_timeout=1, **WIDER_COOKIES)
    answer = await _answer(_port_of(url), "/h")
    await asyncio.wait_for(ended.wait(), 5)  # on this loop, which the server's stop at teardown blocks
    assert status_of(answer) == status
    _assert_front_proxy_headers_dropped(answer)


@pytest.mark.parametrize(("refuse", "status"), [(False, 101), (True, 403)], ids=["101", "refusal"])
async def test_an_in_process_apps_front_proxy_headers_never_reach_the_client(
    uvicorn_server: UvicornFactory, refuse: bool, status: int
) -> None:
    upstream = {"url": "asgi:", "app": answering_with({**HOSTILE, **KEPT}, refuse=refuse)}
    gateway = ProbedGateway({"apis": [{"name": "chat", "path": "/ws/echo", "upstreams": [upstream], **WIDER_COOKIES}]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH)
    answer = await _answer(server.port, "/ws/echo")
    assert status_of(answer) == status
    _assert_front_proxy_headers_dropped(answer)


NGINX_CONFIG = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /internal/ {{ internal; alias {prefix}/internal/; }}
        location / {{
            proxy_pass http://127.0.0.1:{gateway_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
}}
"""


@contextlib.contextmanager
def _nginx_in_front_of(gateway_port: int, prefix: Path) -> Iterator[int]:
    """nginx proxying to ``gateway_port``, with an ``internal`` location holding a secret; yields its port."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (scripts/install-nginx.sh)")
    (prefix / "tmp").mkdir()
    (prefix / "logs").mkdir()  # nginx opens its default error log here before reading the config
    (prefix / "internal").mkdir()
    (prefix / "internal" / "secret.txt").write_bytes(SECRET)
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(prefix=prefix, port=port, gateway_port=gateway_port))
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"])
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def _until_listening(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("status", [101, 403], ids=["101", "refusal"])
async def test_nginx_in_front_does_not_serve_an_internal_location_an_upstream_names(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    tmp_path: Path,
    connector: str,
    status: int,
) -> None:
    """The client gets the upstream's own answer through nginx; nginx served the secret file before."""
    ended = asyncio.Event()
    port = await hostile(_answers_with_headers(status, ended))
    _gateway, url = gateway_before(port, connector, uvicorn_server, close_timeout=1, **WIDER_COOKIES)
    with _nginx_in_front_of(_port_of(url), tmp_path) as nginx_port:
        await _until_listening(nginx_port)
        answer = await _answer(nginx_port, "/h")
        await asyncio.wait_for(ended.wait(), 5)  # on this loop, which the server's stop at teardown blocks
    assert SECRET not in answer
    assert status_of(answer) == status
