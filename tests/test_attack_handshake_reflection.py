"""A handshake ``run``'s server refuses is answered with the gateway's own words, never the client's.

websockets (the gateway's WebSocket protocol is its sans-I/O ``ServerProtocol``) writes the header value
it could not parse into the 400's body: ``invalid Sec-WebSocket-Extensions header: expected comma at 28
in permessage-deflate; <client's text>=``, and so for ``Connection`` and ``Sec-WebSocket-Version`` (the
gateway only redacted what read as a credential). Markup, obs-text bytes and any text a client chose
came back as the server's answer. A real ``asgi-ws-gateway run`` with its default protocol, raw clients.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.rawhttp import exchange, header_of, status_of

MARK = "zzMarkzz<b>\xe9"
"""What each bad header carries: markup and a Latin-1 byte (obs-text, which the parser lets through)."""
KEY = base64.b64encode(os.urandom(16)).decode()
BAD = {  # the header's line, as sent; the header the answer may name
    "Sec-WebSocket-Extensions": f"Sec-WebSocket-Extensions: permessage-deflate; {MARK}=",
    "Sec-WebSocket-Protocol": f"Sec-WebSocket-Protocol: chat {MARK}",
    "Sec-WebSocket-Version": f"Sec-WebSocket-Version: {MARK}",
    "Sec-WebSocket-Key": f"Sec-WebSocket-Key: {MARK}",
    "Connection": f"Connection: Upgrade, {MARK} x",
}


def _request(header: str, line: str) -> bytes:
    lines = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
             "Sec-WebSocket-Version": "13"}  # fmt: skip
    lines.pop(header, None)
    head = "".join(f"{name}: {value}\r\n" for name, value in lines.items())
    return f"GET /ws/echo HTTP/1.1\r\n{head}{line}\r\n\r\n".encode("latin-1")


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("reflection")

    async def ask() -> dict[str, bytes]:
        config = write_config(Path(tmp), build_config())
        async with GatewayProcess([str(config)], cwd=Path(tmp), workers=1) as gateway:
            return {header: await exchange(gateway.port, _request(header, line)) for header, line in BAD.items()}

    return asyncio.run(ask())


@pytest.mark.parametrize("header", list(BAD))
def test_a_refused_header_is_named_never_quoted(answers: dict[str, bytes], header: str) -> None:
    response = answers[header]
    assert status_of(response) == 400, response
    head, body = response.split(b"\r\n\r\n", 1)
    assert body == f"Failed to open a WebSocket connection: invalid {header} header.\n".encode(), body
    assert b"zzMarkzz" not in response and b"<b>" not in response, response
    assert header_of(head + b"\r\n\r\n", "content-type") == "text/plain; charset=utf-8"
    assert int(header_of(head + b"\r\n\r\n", "content-length") or -1) == len(body)
