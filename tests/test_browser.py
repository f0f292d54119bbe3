"""A real browser through the gateway: headless Chromium, which always offers permessage-deflate.

Chromium loads a page from the app under uvicorn; the page's script talks to ``/ws/echo`` through
the gateway and writes what it observed into the DOM, which ``--dump-dom`` prints for the test to
parse. The upstream is either the example's in-process app or a real ``websockets`` server that
negotiates permessage-deflate itself, so compression is negotiated separately on each hop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from asgi_ws_gateway import WebSocketGateway
from example_app.main import create_app
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.servers import UpstreamServer, UvicornFactory, WSImpl

pytestmark = needs_chromium
GATEWAY_WS: Any = "asgi_ws_gateway.server:GatewayWebSocketProtocol"

ECHO_PAGE = check_page(
    "gateway echo check",
    "",
    """
const report = { open: false, protocol: null, extensions: null, checks: {}, close: null, errors: [] };
const show = () => { document.getElementById("report").textContent = JSON.stringify(report); };

function scrambled(length) {  // printable ASCII that deflate cannot squeeze to nothing
  let x = 1, s = "";
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    s += String.fromCharCode(32 + ((x >> 16) % 95));
  }
  return s;
}
const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 255);
const cases = [
  ["text", "hello, gateway ✓ ünïcødé"],
  ["binary", binary],
  ["empty", ""],
  ["empty binary", new Uint8Array(0)],
  ["64 KiB text", scrambled(65536)],
];

function verdict(expected, data) {
  if (typeof expected === "string") {
    if (typeof data !== "string") return `fail: expected text, got ${Object.prototype.toString.call(data)}`;
    return data === expected ? "pass" : `fail: text differs (length ${data.length}, expected ${expected.length})`;
  }
  if (!(data instanceof ArrayBuffer)) return `fail: expected binary, got ${typeof data}`;
  const got = new Uint8Array(data);
  const same = got.length === expected.length && got.every((b, i) => b === expected[i]);
  return same ? "pass" : `fail: bytes differ (length ${got.length}, expected ${expected.length})`;
}

const offered = new URLSearchParams(location.search).getAll("subprotocol");
const ws = new WebSocket(`ws://${location.host}/ws/echo`, offered);
ws.binaryType = "arraybuffer";
let next = 0;
ws.onopen = () => {
  Object.assign(report, { open: true, protocol: ws.protocol, extensions: ws.extensions });
  for (const [, data] of cases) ws.send(data);
  show();
};
ws.onmessage = (event) => {
  const [name, expected] = cases[next++] || [`unexpected #${next}`, null];
  report.checks[name] = expected === null ? "fail: unexpected message" : verdict(expected, event.data);
  if (next === cases.length) ws.close(4001, "bye");
  show();
};
ws.onerror = () => { report.errors.push("error event"); show(); };
ws.onclose = (event) => {
  report.close = { code: event.code, reason: event.reason, wasClean: event.wasClean };
  show();
};
show();
holdUntil(() => report.close !== null);
""",
)
"""Sends text, binary, empty and 64 KiB messages to ``/ws/echo``, checks each echo, closes with 4001 "bye".

Offers the subprotocols named by ``?subprotocol=`` query parameters.
"""

CONSOLE_PAGE = check_page(
    "console page check",
    '<iframe id="console" src="/?api=chat&amp;room=browser&amp;connect=1&amp;send=hello%20room"></iframe>',
    """
const entries = () => {
  const doc = document.getElementById("console").contentDocument;
  return Array.from(doc ? doc.querySelectorAll("#log li") : [], (li) => ({
    dir: li.dataset.dir, time: li.querySelector("time").textContent, text: li.querySelector(".text").textContent,
  }));
};
holdUntil(() => entries().some((entry) => entry.dir === "in")).then(() => {
  document.getElementById("report").textContent = JSON.stringify({ entries: entries() });
});
""",
)
"""Loads the example's console page in an iframe (chat room "browser", sends "hello room") and reports its log."""
CHECKS = dict.fromkeys(["text", "binary", "empty", "empty binary", "64 KiB text"], "pass")


def with_check_pages(app: FastAPI) -> FastAPI:
    """Add the check pages (``/browser-check/echo``, ``/browser-check/console``) and ``/browser-check/wait``."""

    @app.get("/browser-check/echo", response_class=HTMLResponse)
    async def echocheck_page() -> str:
        return ECHO_PAGE

    @app.get("/browser-check/console", response_class=HTMLResponse)
    async def consolecheck_page() -> str:
        return CONSOLE_PAGE

    @app.get("/browser-check/wait", status_code=204)
    async def wait() -> None:
        await asyncio.sleep(0.05)

    return app


@pytest.fixture
def deflate_upstream() -> Iterator[UpstreamServer]:
    """A ``websockets`` upstream that negotiates permessage-deflate with the gateway."""
    with UpstreamServer(compression="deflate") as server:
        yield server


def test_browser_echo_through_in_process_upstream(uvicorn_server: UvicornFactory, ws_impl: WSImpl) -> None:
    """Chromium's text, binary, empty and 64 KiB messages come back unchanged via the example's asgi: upstream."""
    server = uvicorn_server(with_check_pages(create_app()), ws=ws_impl)
    report = page_report(dump_dom(server.url("/browser-check/echo?subprotocol=chat.v1", scheme="http")))
    assert report["open"], report
    assert report["protocol"] == "chat.v1"
    assert "permessage-deflate" in report["extensions"]
    assert report["checks"] == CHECKS
    assert report["close"] == {"code": 4001, "reason": "bye", "wasClean": True}
    assert report["errors"] == []


def test_browser_echo_through_network_upstream(
    uvicorn_server: UvicornFactory, ws_impl: WSImpl, deflate_upstream: UpstreamServer
) -> None:
    """Compression is negotiated per hop: browser-gateway and gateway-upstream both deflate, messages intact."""
    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [deflate_upstream.url("/echo")]}]}
    app = FastAPI()
    app.add_middleware(WebSocketGateway, config=config)
    server = uvicorn_server(with_check_pages(app), ws=ws_impl)
    report = page_report(dump_dom(server.url("/browser-check/echo", scheme="http")))
    assert report["open"], report
    assert report["protocol"] == ""  # none offered: Chromium fails a handshake that offers one and gets none back
    assert "permessage-deflate" in report["extensions"]
    assert report["checks"] == CHECKS
    assert report["close"] == {"code": 4001, "reason": "bye", "wasClean": True}
    assert report["errors"] == []
    (handshake,) = deflate_upstream.handshakes
    assert handshake.extensions is not None and "permessage-deflate" in handshake.extensions
    assert deflate_upstream.wait_for_closes(1) == [(4001, "bye")]


def test_browser_console_page_chat(uvicorn_server: UvicornFactory) -> None:
    """The console page joins a chat room from its link parameters, sends, and logs both directions."""
    server = uvicorn_server(with_check_pages(create_app()))
    report = page_report(dump_dom(server.url("/browser-check/console", scheme="http")))
    entries = [(entry["dir"], entry["text"]) for entry in report["entries"]]
    assert entries[0] == ("sys", f"connecting to {server.url('/ws/chat/browser')}")
    assert entries[1][0] == "sys" and entries[1][1].startswith("open (subprotocol chat.v1; permessage-deflate")
    assert entries[2:] == [("out", "hello room"), ("in", "hello room")]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", entry["time"]) for entry in report["entries"])


def test_browser_echo_spliced_on_the_default_path(
    uvicorn_server: UvicornFactory, deflate_upstream: UpstreamServer
) -> None:
    """Under the gateway's protocol an API without passthrough settings is spliced: the browser's own
    extension offer reaches the upstream, and messages, compression and the close survive."""
    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [deflate_upstream.url("/echo")]}]}
    app = FastAPI()
    app.add_middleware(WebSocketGateway, config=config)
    server = uvicorn_server(with_check_pages(app), ws=GATEWAY_WS)
    report = page_report(dump_dom(server.url("/browser-check/echo", scheme="http")))
    assert report["open"], report
    assert "permessage-deflate" in report["extensions"]
    assert report["checks"] == CHECKS
    assert report["close"] == {"code": 4001, "reason": "bye", "wasClean": True}
    assert report["errors"] == []
    (handshake,) = deflate_upstream.handshakes
    # Chromium's own offer went upstream (the relay's client would offer its own window sizes).
    assert handshake.header("sec-websocket-extensions") == "permessage-deflate; client_max_window_bits"
    assert deflate_upstream.wait_for_closes(1) == [(4001, "bye")]
