"""The management console in real headless Chromium: it loads the APIs, connects, sends, sees the echo."""

from __future__ import annotations

import asyncio
import re

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from example_app.main import DEV_ADMIN_TOKEN, create_app
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

pytestmark = needs_chromium

CONSOLE_CHECK = check_page(
    "management console check",
    f'<iframe id="console" src="/_gateway/console#token={DEV_ADMIN_TOKEN}&amp;api=echo&amp;connect=1'
    '&amp;send=hello%20console"></iframe>',
    """
const entries = () => {
  const doc = document.getElementById("console").contentDocument;
  return Array.from(doc ? doc.querySelectorAll("#log li") : [], (li) => ({
    dir: li.dataset.dir, time: li.querySelector("time").textContent, text: li.querySelector(".text").textContent,
    size: li.querySelector(".size") ? li.querySelector(".size").textContent : null,
  }));
};
const apis = () => {
  const doc = document.getElementById("console").contentDocument;
  return Array.from(doc ? doc.querySelectorAll("select[name=api] option") : [], (option) => option.value);
};
holdUntil(() => entries().some((entry) => entry.dir === "in")).then(() => {
  document.getElementById("report").textContent = JSON.stringify({ entries: entries(), apis: apis() });
});
""",
)


def _with_checkcheck_page(app: FastAPI) -> FastAPI:
    @app.get("/browser-check/management", response_class=HTMLResponse)
    async def page() -> str:
        return CONSOLE_CHECK

    @app.get("/browser-check/wait", status_code=204)
    async def wait() -> None:
        await asyncio.sleep(0.05)

    return app


def test_console_connects_to_the_example_api_sends_and_sees_the_echo(uvicorn_server: UvicornFactory) -> None:
    """With the admin token from the link, the console lists the APIs, opens /ws/echo and logs both directions."""
    server = uvicorn_server(_with_checkcheck_page(create_app()))
    report = page_report(dump_dom(server.url("/browser-check/management", scheme="http")))
    assert report["apis"] == ["echo", "chat"]
    entries = [(entry["dir"], entry["text"], entry["size"]) for entry in report["entries"]]
    assert entries[0] == ("sys", f"connecting to {server.url('/ws/echo')}", None)
    assert entries[1][0] == "sys" and entries[1][1].startswith("open")
    assert entries[2:] == [("out", "hello console", "13 B"), ("in", "hello console", "13 B")]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", entry["time"]) for entry in report["entries"])


FLOOD_CHECK = check_page(
    "management console flood check",
    '<iframe id="console" src="/_gateway/console#token=flood-admin&amp;api=push&amp;connect=1&amp;send=go"></iframe>',
    """
const doc = () => document.getElementById("console").contentDocument;
const items = () => Array.from(doc() ? doc().querySelectorAll("#log li .text") : [], (t) => t.textContent);
holdUntil(() => items().includes("push 4999")).then(() => {
  const win = document.getElementById("console").contentWindow;
  document.getElementById("report").textContent = JSON.stringify({
    count: items().length, last: items()[items().length - 1], href: win.location.href,
    hint: doc().body.textContent.includes("keeps the last 1,000 entries"),
  });
});
""",
)


def test_console_keeps_the_last_thousand_entries_under_a_flood_and_drops_the_token_from_the_address(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """An upstream sending 5,000 messages once grew the log by 5,000 items, one layout each (the tab froze);
    and the token stayed in the address bar and the history."""
    app = FastAPI()

    @app.get("/browser-check/flood", response_class=HTMLResponse)
    async def page() -> str:
        return FLOOD_CHECK

    @app.get("/browser-check/wait", status_code=204)
    async def wait() -> None:
        await asyncio.sleep(0.05)

    config = {"apis": [{"name": "push", "path": "/ws/push", "upstreams": [upstream.url("/push/5000")]}]}
    app.add_middleware(WebSocketGateway, config=config)
    app.add_middleware(GatewayManagement, path="/_gateway", admin_token="flood-admin")
    server = uvicorn_server(app, lifespan="on")
    report = page_report(dump_dom(server.url("/browser-check/flood", scheme="http"), budget_ms=20000))
    assert report["count"] == 1000 and report["last"] == "push 4999" and report["hint"], report
    assert report["href"].endswith("/_gateway/console#api=push&connect=1&send=go"), report
