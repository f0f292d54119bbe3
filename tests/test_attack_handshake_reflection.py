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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.configs import build_config, write_config
from support.otlp import OtlpReceiver
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


@dataclass
class Answers:
    responses: dict[str, bytes]
    output: str
    refusals: dict[Any, float]
    """The latest ``ws_gateway.server.refusals`` by status."""


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Answers]:
    tmp = Path(tmp_path_factory.mktemp("reflection"))
    log = tmp / "gateway.log"

    async def ask(otlp: OtlpReceiver) -> dict[str, bytes]:
        config = write_config(tmp, build_config())
        async with GatewayProcess([str(config)], cwd=tmp, workers=1, log=log, log_level="info") as gateway:
            return {header: await exchange(gateway.port, _request(header, line)) for header, line in BAD.items()}

    with OtlpReceiver() as otlp, pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint("grpc"))
        env.setenv("OTEL_TRACES_EXPORTER", "none")
        responses = asyncio.run(ask(otlp))
        refusals = {p.attributes.get("http.response.status_code"): p.value
                    for p in otlp.latest("ws_gateway.server.refusals").values()}  # fmt: skip
    yield Answers(responses, log.read_text(), refusals)


@pytest.mark.parametrize("header", list(BAD))
def test_a_refused_header_is_named_never_quoted(answers: Answers, header: str) -> None:
    response = answers.responses[header]
    assert status_of(response) == 400, response
    head, body = response.split(b"\r\n\r\n", 1)
    assert body == f"Failed to open a WebSocket connection: invalid {header} header.\n".encode(), body
    assert b"zzMarkzz" not in response and b"<b>" not in response, response
    assert header_of(head + b"\r\n\r\n", "content-type") == "text/plain; charset=utf-8"
    assert int(header_of(head + b"\r\n\r\n", "content-length") or -1) == len(body)


def test_each_refusal_has_its_log_line_and_is_counted(answers: Answers) -> None:
    """One INFO line each, naming the header; ``ws_gateway.server.refusals`` counts them (exported at the
    server's shutdown): no API's metric saw these handshakes, which the server refused before any API."""
    for header in BAD:
        assert answers.output.count(f'"WebSocket /ws/echo" 400 (invalid {header} header)') == 1, answers.output
    assert "zzMarkzz" not in answers.output and "Traceback" not in answers.output, answers.output
    assert answers.refusals == {400: len(BAD)}, answers.refusals
