"""Self-tests for tests/support: the servers, client helpers and conformance runner behave as documented."""

from __future__ import annotations

import ast
import json
import re
import socket
from pathlib import Path

import pytest

from support.apps import echo_app
from support.clients import connect, expect_close, expect_status
from support.conformance import run_autobahn
from support.processes import ServerProcess
from support.servers import UpstreamServer, UvicornFactory, WSImpl, free_port

_MAY_IMPORT_A_TEST = re.compile(r"\bimport\b[\w\s.,\\]*?\btest_|\bfrom\b[\s\\.]*test_")
"""Text that an import of a ``test_`` module must contain: ``import`` then names, dots, commas, ``as``,
whitespace and line continuations up to a name starting ``test_``; or ``from``, then dots and whitespace,
then ``test_``. Parsing every test module was this check's time (~1.7 s); only the modules this matches
(a dozen, most for words in prose) are parsed."""


def _test_imports(source: str, filename: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return [name for name in names if name.split(".")[0].startswith("test_")]


@pytest.mark.parametrize(
    "source",
    ["import test_x", "import os, test_x", "import os as o,\\\n  test_x as t", "import a . b, test_x.y",
     "from test_x import y", "from .test_x import y", "from.test_x import y", "from . test_x import y",
     "from \\\n test_x import y", "def f():\n    import test_x", "x = 1; import test_x"],
)  # fmt: skip
def test_the_pre_filter_finds_every_import_of_a_test_module(source: str) -> None:
    """Each spelling of an import the AST check finds, the pre-filter finds too."""
    assert _test_imports(source, "<case>") and _MAY_IMPORT_A_TEST.search(source)


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support: a test module never imports (and so re-runs) another's tests."""
    offenders = []
    for module in sorted(Path(__file__).parent.glob("*.py")):
        source = module.read_text()
        if _MAY_IMPORT_A_TEST.search(source):
            offenders += [f"{module.name}: {name}" for name in _test_imports(source, str(module))]
    assert offenders == []


def test_free_port_is_bindable() -> None:
    """free_port returns a usable port number."""
    assert 1024 <= free_port() <= 65535


def test_a_server_is_ready_only_on_a_port_it_listens_on_itself() -> None:
    """Another server on the port (the other test worker's, which took it between ``free_port`` and
    the bind) answers too: a test then talked to it and found its own server's output empty."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with (
            ServerProcess(["-c", "import time; time.sleep(60)"], port=port) as server,
            pytest.raises(AssertionError, match="did not start"),
        ):
            server.wait_ready(timeout=1)


@pytest.mark.parametrize("message", ["hello", b"\x00\xff", "", b""], ids=["text", "bytes", "empty-text", "empty-bytes"])
async def test_upstream_echoes_unchanged(upstream: UpstreamServer, message: str | bytes) -> None:
    """/echo returns each message with its type and content unchanged."""
    async with await connect(upstream.url("/echo")) as ws:
        await ws.send(message)
        assert await ws.recv() == message


async def test_upstream_unknown_path_echoes(upstream: UpstreamServer) -> None:
    """Any unknown path behaves like /echo."""
    async with await connect(upstream.url("/anything/else?q=1")) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"


async def test_upstream_echoes_large_message(upstream: UpstreamServer) -> None:
    """Messages over 1 MiB pass the upstream's default 16 MiB limit."""
    payload = b"\x01" * (2**20 + 1)
    async with await connect(upstream.url("/echo")) as ws:
        await ws.send(payload)
        assert await ws.recv() == payload


async def test_upstream_reject_401(upstream: UpstreamServer) -> None:
    """/reject/401 refuses with 401, a Bearer challenge and a JSON body."""
    status, headers, body = await expect_status(upstream.url("/reject/401"))
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "rejected"}
    assert upstream.handshakes[-1].status == 401


async def test_upstream_redirect(upstream: UpstreamServer) -> None:
    """/redirect answers 302 to /echo; connect() follows it."""
    status, headers, _ = await expect_status(upstream.url("/redirect"))
    assert (status, headers["location"]) == (302, "/echo")
    async with await connect(upstream.url("/redirect")) as ws:
        await ws.send("after redirect")
        assert await ws.recv() == "after redirect"


async def test_expect_status_fails_when_accepted(upstream: UpstreamServer) -> None:
    """expect_status raises AssertionError if the handshake succeeds."""
    with pytest.raises(AssertionError, match="accepted"):
        await expect_status(upstream.url("/echo"))


async def test_upstream_close_code_and_reason(upstream: UpstreamServer) -> None:
    """/close/4001 closes with 4001 and the received text as reason; the upstream records our reply."""
    async with await connect(upstream.url("/close/4001")) as ws:
        await ws.send("see you")
        assert await expect_close(ws) == (4001, "see you")
    assert await upstream.wait_for_closes_async(1) == [(4001, "see you")]


async def test_upstream_close_default_reason(upstream: UpstreamServer) -> None:
    """/close/{code} uses the reason "bye" when the message is not text."""
    async with await connect(upstream.url("/close/3000")) as ws:
        await ws.send(b"bin")
        assert await expect_close(ws) == (3000, "bye")


async def test_upstream_records_client_close(upstream: UpstreamServer) -> None:
    """The close code and reason the client sends are recorded, also via the blocking waiter."""
    async with await connect(upstream.url("/echo")) as ws:
        await ws.close(4321, "client done")
    assert upstream.wait_for_closes(1) == [(4321, "client done")]


async def test_upstream_headers(upstream: UpstreamServer) -> None:
    """/headers reports path, query and request headers, and the handshake record matches."""
    async with await connect(upstream.url("/headers?a=1"), additional_headers={"X-Test": "yes"}) as ws:
        seen = json.loads(await ws.recv())
        await ws.send("then echo")
        assert await ws.recv() == "then echo"
    assert seen["path"] == "/headers?a=1"
    assert seen["headers"]["x-test"] == ["yes"]
    record = upstream.handshakes[-1]
    assert (record.path, record.status, record.header("X-TEST")) == ("/headers?a=1", 101, "yes")


async def test_upstream_subprotocol(upstream: UpstreamServer) -> None:
    """/subprotocol picks its preferred offered subprotocol and reports it."""
    async with await connect(upstream.url("/subprotocol"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert await ws.recv() == "chat.v2"
    assert upstream.handshakes[-1].subprotocol == "chat.v2"


async def test_upstream_other_paths_select_no_subprotocol(upstream: UpstreamServer) -> None:
    """Outside /subprotocol the upstream accepts without selecting a subprotocol."""
    async with await connect(upstream.url("/echo"), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol is None


async def test_upstream_push(upstream: UpstreamServer) -> None:
    """/push/3 answers the first message with three pushes, then echoes."""
    async with await connect(upstream.url("/push/3")) as ws:
        await ws.send("go")
        assert [await ws.recv() for _ in range(3)] == ["push 0", "push 1", "push 2"]
        await ws.send("echo")
        assert await ws.recv() == "echo"


async def test_upstream_slow_handshake(upstream: UpstreamServer) -> None:
    """/slow?delay=S holds the handshake longer than a shorter open_timeout."""
    with pytest.raises(TimeoutError):
        await connect(upstream.url("/slow?delay=2"), open_timeout=0.2)
    async with await connect(upstream.url("/slow?delay=0.05")) as ws:
        await ws.send("late")
        assert await ws.recv() == "late"


async def test_upstream_kill_connections(upstream: UpstreamServer) -> None:
    """kill_connections drops the TCP connection without a close frame."""
    async with await connect(upstream.url("/echo")) as ws:
        await ws.send("x")
        await ws.recv()
        assert upstream.kill_connections() == 1
        assert await expect_close(ws) == (1006, "")
    assert await upstream.wait_for_closes_async(1) == [(1006, "")]


async def test_upstream_deflate_negotiation(upstream: UpstreamServer, upstream_nodeflate: UpstreamServer) -> None:
    """The deflate upstream negotiates permessage-deflate; the other refuses it."""
    for server in (upstream, upstream_nodeflate):
        async with await connect(server.url("/echo")):
            pass
    assert (upstream.handshakes[0].extensions or "").startswith("permessage-deflate")
    assert upstream_nodeflate.handshakes[0].extensions is None


async def test_uvicorn_echo_app(uvicorn_server: UvicornFactory, ws_impl: WSImpl) -> None:
    """uvicorn serves echo_app over each WebSocket implementation."""
    server = uvicorn_server(echo_app, ws=ws_impl, lifespan="on")
    async with await connect(server.url("/ws")) as ws:
        for message in ("text", b"bytes", ""):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.close(4000, "done")
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None
    assert (rcvd.code, rcvd.reason) == (4000, "done")


async def test_conformance_smoke(uvicorn_server: UvicornFactory, ws_impl: WSImpl, tmp_path: Path) -> None:
    """run_autobahn against uvicorn + echo_app passes two cases and writes index.json."""
    server = uvicorn_server(echo_app, ws=ws_impl)
    report = await run_autobahn(server.url("/"), ["1.1.1", "1.1.2"], [], tmp_path)
    assert report.counts["OK"] == 2
    assert report.total == 2
    assert report.failed == []
    assert (tmp_path / "index.json").is_file()


async def test_conformance_reports_failures(upstream: UpstreamServer, tmp_path: Path) -> None:
    """A FAILED case is counted and listed rather than raised (/close/4001 never echoes)."""
    report = await run_autobahn(upstream.url("/close/4001"), ["1.1.1", "1.1.2"], ["1.1.2"], tmp_path)
    assert report.failed == ["1.1.1"]
    assert (report.counts["FAILED"], report.total) == (1, 1)
