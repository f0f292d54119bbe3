"""The servers' own dumps at trace and debug, under ``asgi-ws-gateway run`` and plain ``uvicorn app:app``.

uvicorn's ``uvicorn.asgi`` logger (``--log-level trace``) writes every scope and message: the query
string, the raw path and the offered subprotocols were shown as sent (only a JWT-shaped value was
redacted, and under plain uvicorn not even that). websockets' header dumps (``< name: value`` at debug)
redacted only a fixed list of ten header names: ``X-Amz-Security-Token``, ``X-CSRF-Token`` and others
named as credentials were written in clear. Each server runs as a subprocess; all it writes is searched.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.clients import connect
from support.jwts import token
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

APP = """
from starlette.applications import Starlette
from asgi_ws_gateway import WebSocketGateway

app = Starlette()
app.add_middleware(WebSocketGateway, config="gateway.yaml")
"""
JWT = token(sub="alice")
SECRETS = {
    "query": ("SEKRIT-QUERY-PW-21", "SEKRIT-QUERY-T-22", "SEKRIT-QUERY-BARE-23", JWT.split(".")[2]),
    "path": ("SEKRIT-PATH-31",),
    "subprotocol": ("SEKRIT-SP-41", "SEKRIT-SP-42"),
}
CREDENTIAL_HEADERS = {
    "X-Amz-Security-Token": "SEKRIT-H-51", "X-CSRF-Token": "SEKRIT-H-52", "X-Access-Key": "SEKRIT-H-53",
    "X-Session-Id": "SEKRIT-H-54", "X-Client-Secret": "SEKRIT-H-55", "X-Signature": "SEKRIT-H-56",
    "Authentication": "SEKRIT-H-57", "X-Password": "SEKRIT-H-58", "X-Hub-Signature-256": "SEKRIT-H-59",
}  # fmt: skip


def _serve(server: str, tmp: Path, upstream: UpstreamServer, level: str) -> ServerProcess:
    config = {"apis": [{"name": "chat", "path": "/ws/chat/{room}", "upstreams": [upstream.url("/echo")]}]}
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    if server == "run":
        return ready_server(
            lambda port: ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--port", str(port), "--log-level", level],
            cwd=tmp,
        )
    (tmp / "app.py").write_text(APP)
    return ready_server(lambda port: ["-m", "uvicorn", "app:app", "--port", str(port), "--log-level", level], cwd=tmp)


async def _attempt(url: str, **kw: Any) -> None:
    """A handshake (accepted or refused), a message, a close: every line each writes at trace."""
    with contextlib.suppress(Exception):
        async with await connect(url, **kw) as ws:
            await ws.send("hi")
            await ws.recv()


@pytest.mark.parametrize("server", ["run", "uvicorn"])
async def test_trace_scope_dumps_show_no_query_path_or_subprotocol_credential(
    tmp_path: Path, upstream_server: UpstreamServer, server: str
) -> None:
    """``uvicorn.asgi``'s ``Started scope=`` lines: query values, a credential in the path and every
    subprotocol redacted, structurally (the scope's fields), not by a pattern on the line."""
    pw, tok, bare, _ = SECRETS["query"]
    with _serve(server, tmp_path, upstream_server, "trace") as process:
        base = f"ws://127.0.0.1:{process.port}"
        await _attempt(f"{base}/ws/chat/lobby?x=1&password={pw}&token={tok}&{bare}")
        await _attempt(f"{base}/ws/chat/lobby?access_token={JWT}&other=1")
        await _attempt(f"{base}/ws/chat/token%3D{SECRETS['path'][0]}")
        await _attempt(f"{base}/ws/chat/lobby", subprotocols=[f"bearer.{SECRETS['subprotocol'][0]}", "chat"])
        await _attempt(f"{base}/ws/chat/lobby", subprotocols=[SECRETS["subprotocol"][1]])
        process.stop()
        output = process.output()
    assert "Started scope=" in output, "no trace line: the test would prove nothing"
    assert "'query_string': b'x=REDACTED&password=REDACTED&token=REDACTED&REDACTED'" in output
    assert "'subprotocols': ['REDACTED', 'REDACTED']" in output
    for secret in (*SECRETS["query"], *SECRETS["path"], *SECRETS["subprotocol"]):
        assert secret not in output, f"{secret} reached the output:\n{output}"


@pytest.mark.parametrize("server", ["run", "uvicorn"])
async def test_debug_header_dumps_redact_every_header_named_as_a_credential(
    tmp_path: Path, upstream_server: UpstreamServer, server: str
) -> None:
    """``< x-amz-security-token: REDACTED``: a dumped header's value goes when its name holds a
    credential word (the one rule of ``CREDENTIAL_WORDS``), not only when it is on a fixed list."""
    with _serve(server, tmp_path, upstream_server, "debug") as process:
        await _attempt(f"ws://127.0.0.1:{process.port}/ws/chat/lobby", additional_headers=CREDENTIAL_HEADERS)
        process.stop()
        output = process.output()
    assert "< x-amz-security-token: redacted" in output.lower()
    assert "< user-agent: " in output.lower()  # other headers are still shown
    for name, secret in CREDENTIAL_HEADERS.items():
        assert secret not in output, f"{name}'s value reached the output:\n{output}"
