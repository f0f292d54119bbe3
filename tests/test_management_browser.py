"""The management console in real headless Chromium: it loads the APIs, connects, sends, sees the echo."""

from __future__ import annotations

import asyncio
import re

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from example_app.main import DEV_ADMIN_TOKEN, create_app
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.servers import UvicornFactory

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
