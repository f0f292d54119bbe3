"""A client's header values with bytes past ASCII (UTF-8 ``Origin: https://é.example``): a 4xx or served, never a 500.

Reported as a bare 500 with a traceback. Where the gateway runs (uvicorn's ``websockets-sansio`` and
``wsproto``, ``asgi-ws-gateway run``), each such value is a clean 4xx from the policy or check that
reads it, or the request is served when nothing reads it: one log line, no traceback. The 500 is
uvicorn's own ``--ws websockets`` (the legacy implementation): it encodes every header value as
Latin-1 after websockets decoded it as ASCII with surrogates, and fails before it calls the
application; and wsproto decodes ``Host`` and ``Sec-WebSocket-Protocol`` as ASCII and drops the
connection with no answer. The last test shows the application is never called there
(docs/security.md, "Header values past ASCII").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry, write_config
from support.processes import ready_server
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

E = "é".encode()  # UTF-8: two bytes past ASCII, neither one Latin-1's é
SECRET = "s" * 40
JWT = {"secret": SECRET, "algorithms": ["HS256"], "token": [{"header": "Authorization"}, {"cookie": "access_token"}]}
CASES: list[tuple[str, bytes, int]] = [
    # the API, a header line, the status
    ("origin", b"Origin: https://" + E + b".example", 403),
    ("plain", b"Origin: https://" + E + b".example", 101),  # no policy reads it
    ("origin", b"Origin: https://\xff", 403),
    ("jwt", b"Authorization: Bearer " + E, 401),
    ("jwt", b"Cookie: access_token=" + E, 401),
    ("plain", b"Cookie: a=" + E, 101),
    ("ip", b"X-Forwarded-For: " + E, 403),  # from a trusted proxy: no address, so none allowed
    ("plain", b"X-Forwarded-For: " + E, 101),
    ("tenant", b"X-Tenant: " + E, 401),
    ("copy", b"X-Tenant: " + E, 101),  # set-header copies it upstream
]
PARSER_CASES: list[tuple[str, bytes, int]] = [
    # what wsproto's handshake parses itself (below): the gateway refuses it under the other servers
    ("plain", b"Host: " + E + b".example", 400),
    ("plain", b"Sec-WebSocket-Protocol: chat" + E, 400),  # websockets' parser refuses it
]


def _config(upstream: UpstreamServer) -> dict[str, Any]:
    def entry(name: str, *policies: dict[str, Any]) -> dict[str, Any]:
        return api_entry(upstream, name=name, path=f"/{name}", policies=list(policies))

    return {
        "trusted_proxies": ["127.0.0.1"],
        "apis": [
            entry("plain"),
            entry("origin", {"check-origin": {"allowed": ["https://app.example.com"]}}),
            entry(
                "jwt",
                {"check-origin": {"allowed": ["https://app.example.com"], "allow_missing": True}},
                {"validate-jwt": JWT},
            ),
            entry("ip", {"ip-filter": {"allow": ["127.0.0.1/32"]}}),
            entry("tenant", {"check-header": {"header": "X-Tenant", "values": ["acme"]}}),
            entry("copy", {"set-header": {"header": "X-Copy", "value": "{header.x-tenant}"}}),
        ],
    }


async def _status(port: int, api: str, line: bytes) -> int | None:
    """The status of a raw upgrade to ``/api`` with ``line`` among its headers; None if the server answers nothing."""
    host = b"" if line.startswith(b"Host:") else b"Host: 127.0.0.1\r\n"
    request = (b"GET /" + api.encode() + b" HTTP/1.1\r\n" + host + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               + line + b"\r\n\r\n")  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(head.split(b" ", 2)[1])


def _tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.exc_info or record.levelno >= logging.ERROR]


@pytest.mark.parametrize(("api", "line", "status"), CASES, ids=[f"{a}-{s}-{i}" for i, (a, _, s) in enumerate(CASES)])
async def test_a_header_value_past_ascii_is_refused_or_served_without_a_traceback(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl, caplog: pytest.LogCaptureFixture,
    api: str, line: bytes, status: int,
) -> None:  # fmt: skip
    server = uvicorn_server(WebSocketGateway(not_found, config=_config(upstream)), ws=ws_impl, proxy_headers=False)
    with caplog.at_level(logging.INFO):
        assert await _status(server.port, api, line) == status
        server.stop()  # its connections closed: every line logged
    assert _tracebacks(caplog.records) == []


@pytest.mark.parametrize(("api", "line", "status"), PARSER_CASES, ids=["host", "subprotocol"])
async def test_a_host_or_subprotocol_past_ascii_is_a_400_under_websockets_sansio(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture,
    api: str, line: bytes, status: int,
) -> None:  # fmt: skip
    server = uvicorn_server(WebSocketGateway(not_found, config=_config(upstream)), proxy_headers=False)
    with caplog.at_level(logging.INFO):
        assert await _status(server.port, api, line) == status
        server.stop()
    assert _tracebacks(caplog.records) == []


async def test_every_header_value_past_ascii_under_run_is_one_access_line_and_no_traceback(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, _config(upstream), "gateway.json")
    cases = CASES + PARSER_CASES
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--access-log-format", "json"]
    with ready_server(lambda port: [*command, "--port", str(port)]) as server:
        for api, line, status in cases:
            assert await _status(server.port, api, line) == status, line
        # the access log's line for each, but the subprotocol: the server's parser refuses it, in its own line
        server.wait_for_line('"status"', times=len(cases) - 1)
        server.wait_for_line('"WebSocket /plain" 400 (invalid Sec-WebSocket-Protocol header)')
        server.stop()
        lines = [json.loads(text) for text in server.stdout().splitlines() if text.startswith("{")]
        assert sorted(entry["status"] for entry in lines) == sorted(status for _, _, status in cases[:-1])
        assert server.output().count("Sec-WebSocket-Protocol") == 1
        assert "Traceback" not in server.output()


BEFORE_THE_GATEWAY = [(line, "websockets") for _, line, _ in CASES + PARSER_CASES] + [
    (line, "wsproto") for _, line, _ in PARSER_CASES
]


@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
@pytest.mark.parametrize(
    ("line", "ws"), BEFORE_THE_GATEWAY, ids=[f"{ws}-{i}" for i, (_, ws) in enumerate(BEFORE_THE_GATEWAY)]
)
async def test_uvicorns_own_failures_come_before_the_gateway(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, line: bytes, ws: WSImpl
) -> None:
    """uvicorn's legacy websockets answers 500, wsproto nothing, and neither calls the application: the
    gateway cannot answer otherwise (when this fails, the server was fixed: update docs/security.md)."""
    gateway = WebSocketGateway(not_found, config=_config(upstream))
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])
        await gateway(scope, receive, send)

    server = uvicorn_server(app, ws=ws, proxy_headers=False, lifespan="off")
    assert await _status(server.port, "plain", line) == (500 if ws == "websockets" else None)
    assert called == []
