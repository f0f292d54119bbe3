"""Client-chosen text on the operator's pages, in real Chromium: shown as text, never run, never reordered.

A client chooses its JWT's ``sub``, the address an ASGI server reports for it behind a proxy
(uvicorn's ``proxy_headers``: ``X-Forwarded-For`` as sent), text a policy echoes into a refusal's
``detail``; an upstream chooses its close reason; an admin-token holder an API's ``display_name``.
Each carries markup (``<img onerror>``, ``</script>``), quotes, a ``javascript:`` URL and a bidi
override (U+202E). The pages write them with ``textContent`` and run only their own script (CSP);
an attack pass found two ways still open:

* a bidi override in the test console's close line reordered the text after it (``(not clean)``),
  and one in a cell of the live console made ``detail`` or ``client`` read as another text: both
  pages now show control, line-breaking, bidi and invisible characters as escapes (``\\u202e``), as
  the command line does;
* the test console kept the admin token in ``sessionStorage``, where any page of the origin (the
  application's own pages share it) loaded later in the tab read it: it is kept nowhere now.

Around them: the JSON answers holding that text now carry ``nosniff`` and a policy that runs nothing;
the lockout's WARNING wrote a forwarded address's CSI and NEL bytes raw; a link's ``poll=1e10``
overflowed the browser's timer and the live console polled every worker back to back. Held, and
pinned here: no other site frames the pages (``frame-ancestors 'self'``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management.lockout import Lockout
from asgi_ws_gateway.policies import deny, register_policy
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.jwts import HS_SECRET, token
from support.servers import UvicornFactory, UvicornServer
from support.upstream import UpstreamServer

ADMIN = "console-injection-admin-token"
PWNED = "/browser-check/pwned"
MARKUP = f"<img src=x onerror=\"fetch('{PWNED}')\">\"'</script><script>fetch('{PWNED}')</script>javascript:alert(1)"
"""What a client puts wherever it can: it must show as these very characters."""
BIDI = "\u202egnp.exe"
"""A right-to-left override: ``exe.png`` on the screen unless written as an escape."""
SHOWN_BIDI = "\\u202egnp.exe"
FRAME_QUIET = 0.005  # seconds a wait fetch holds virtual time still: shorter, more rounds


@register_policy("test-echo-refusal")
class EchoRefusal:
    """A plugin policy that refuses every handshake and echoes the client's ``q`` in its reason and detail."""

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings: Settings, env: Any) -> None:
        pass

    async def apply(self, context: Any) -> None:
        said = (context.request.query.get("q") or [""])[0]
        raise deny(403, f"not for you: {said}", reason=f"echo:{said[:30]}")


def _app(upstream: UpstreamServer, hits: list[str]) -> ASGIApp:
    app = FastAPI()
    pages = {"live": LIVE_CHECK, "console": CONSOLE_CHECK, "frames": FRAMES_CHECK, "poll": POLL_CHECK}

    @app.get("/browser-check/page/{name}", response_class=HTMLResponse)
    async def page(name: str) -> str:
        return pages[name]

    @app.get("/browser-check/wait", status_code=204)
    async def hold() -> None:
        await asyncio.sleep(FRAME_QUIET)

    @app.get(PWNED, status_code=204)
    async def pwned() -> None:
        pass  # recorded by the middleware

    jwt = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}
    config: dict[str, Any] = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]},
            {"name": "chat", "path": "/ws/chat", "upstreams": [upstream.url("/echo")], "policies": [jwt]},
            {"name": "gate", "path": "/ws/gate", "upstreams": [upstream.url("/echo")],
             "policies": [{"test-echo-refusal": {}}]},
            {"name": "closer", "path": "/ws/closer", "upstreams": [upstream.url("/close/4001")],
             "display_name": MARKUP},
        ]
    }  # fmt: skip
    app.add_middleware(WebSocketGateway, config=config)
    app.add_middleware(GatewayManagement, path="/_gateway", admin_token=ADMIN, sample_interval=0.2)

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:  # what the pages made the browser fetch
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode().split(":")[0]
            hits.append(f"{host} {scope['path']}")
        await app(scope, receive, send)

    return recorded


def _traffic(server: UvicornServer, stack: ExitStack) -> None:
    """Open connections (kept open until ``stack`` closes) and refused handshakes carrying the hostile text."""
    subject = token(sub=MARKUP + BIDI)
    stack.enter_context(sync_connect(server.url("/ws/echo"), additional_headers={"X-Forwarded-For": MARKUP}))
    stack.enter_context(sync_connect(server.url("/ws/chat"), additional_headers={"Authorization": f"Bearer {subject}"}))
    for said in (MARKUP + BIDI, "\u2066admin\u2069\u200b\u061c"):
        try:
            sync_connect(server.url(f"/ws/gate?q={quote(said)}"))
            raise AssertionError("the echoing policy let a handshake through")
        except InvalidStatus as exc:
            assert exc.response.status_code == 403


def _server(uvicorn_server: UvicornFactory, upstream: UpstreamServer, hits: list[str]) -> UvicornServer:
    # Behind a proxy on this host, uvicorn reports X-Forwarded-For's text as the client (unchecked).
    return uvicorn_server(_app(upstream, hits), lifespan="on", proxy_headers=True, forwarded_allow_ips="127.0.0.1")


INSPECT = """
const inspect = (frame) => ({
  images: frame.document.querySelectorAll("img").length,
  scripts: Array.from(frame.document.scripts, (s) => s.getAttribute("src")),
  stored: frame.sessionStorage.length + frame.localStorage.length,
  address: frame.location.href,
  violations: frame.violations || 0,
});
const watch = (frame) => frame.document.addEventListener("securitypolicyviolation", () => {
  frame.violations = (frame.violations || 0) + 1;
});
"""

LIVE_CHECK = check_page(
    "live console injection check",
    f'<iframe id="live" style="width:1400px;height:900px" src="/_gateway/console/live#token={ADMIN}&amp;poll=0.2">'
    "</iframe>",
    INSPECT
    + """
const frame = () => document.getElementById("live").contentWindow;
const rows = (id) => Array.from(frame().document.querySelectorAll(`#${id} tbody tr`));
const texts = (id) => rows(id).map((row) => Array.from(row.cells, (c) => c.textContent));
(async () => {
  await holdUntil(() => frame().document.readyState !== "loading", ROUNDS);
  watch(frame());
  await holdUntil(() => rows("connections").length >= 2 && rows("refusals").length >= 2, ROUNDS);
  const polls = () => Number(frame().document.getElementById("status").dataset.polls || 0);
  const seen = polls();
  await holdUntil(() => polls() >= seen + 2, ROUNDS);  // later polls draw the same text again
  document.getElementById("report").textContent = JSON.stringify({
    connections: texts("connections"), refusals: texts("refusals"), page: inspect(frame()),
    legend: Array.from(frame().document.querySelectorAll(".legend span"), (s) => s.textContent),
  });
})();
""".replace("ROUNDS", "2000"),
)

CONSOLE_CHECK = check_page(
    "test console injection check",
    f'<iframe id="console" src="/_gateway/console#token={ADMIN}&amp;api=closer&amp;connect=1'
    f'&amp;send={quote(MARKUP[:60] + BIDI)}"></iframe>',
    INSPECT
    + """
const frame = () => document.getElementById("console").contentWindow;
const log = () => Array.from(frame().document.querySelectorAll("#log li .text"), (t) => t.textContent);
(async () => {
  await holdUntil(() => frame().document.readyState !== "loading", 2000);
  watch(frame());
  await holdUntil(() => log().some((text) => text.startsWith("closed")), 2000);
  document.getElementById("report").textContent = JSON.stringify({
    log: log(), status: frame().document.getElementById("status").textContent,
    options: Array.from(frame().document.querySelectorAll("select[name=api] option"), (o) => o.textContent),
    page: inspect(frame()),
  });
})();
""",
)


def _held(page: dict[str, Any], script: str) -> None:
    """No markup of the attacker's became an element, nothing ran, the token is nowhere but the field."""
    assert page["images"] == 0 and page["scripts"] == [script], page
    assert page["violations"] == 0, page  # nothing was even tried past the policy
    assert page["stored"] == 0, "the admin token (or anything) was left in the origin's storage"
    assert ADMIN not in page["address"] and "token" not in page["address"], page["address"]


@needs_chromium
def test_the_live_console_shows_client_text_as_text(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """Connections (an address, a subject) and refusals (a plugin's echo): the exact text, bidi as escapes."""
    hits: list[str] = []
    server = _server(uvicorn_server, upstream, hits)
    with ExitStack() as stack:
        _traffic(server, stack)
        report = page_report(dump_dom(server.url("/browser-check/page/live", scheme="http"), budget_ms=20000))
    assert not [hit for hit in hits if hit.endswith(PWNED)], "script injected into the live console ran"
    assert not [hit for hit in hits if ADMIN in hit]  # no request line (an access log) holds the token
    _held(report["page"], "live.js")
    clients = {row[0]: row for row in report["connections"]}
    assert clients["echo"][1].startswith(MARKUP)  # and the port uvicorn made of it
    assert clients["chat"][2] == MARKUP + SHOWN_BIDI  # the gateway's own escape, shown as it is
    details = [row[5] for row in report["refusals"]]
    assert details == ["not for you: \\u2066admin\\u2069\\u200b\\u061c", "not for you: " + MARKUP + SHOWN_BIDI]
    assert report["refusals"][1][4] == "echo:" + MARKUP[:30]
    assert not any(c in str(report) for c in "\u202e\u2066\u2069\u200b\u061c")


@needs_chromium
def test_the_test_console_shows_an_upstreams_close_reason_and_an_api_name_as_text(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The upstream closes with the reason the page sent it; the API's display name is markup."""
    hits: list[str] = []
    server = _server(uvicorn_server, upstream, hits)
    report = page_report(dump_dom(server.url("/browser-check/page/console", scheme="http"), budget_ms=20000))
    assert not [hit for hit in hits if hit.endswith(PWNED)], "script injected into the test console ran"
    assert not [hit for hit in hits if ADMIN in hit]  # no request line (an access log) holds the token
    assert f"{MARKUP}: /ws/closer" in report["options"]
    reason = MARKUP[:60] + SHOWN_BIDI
    assert f'closed: code 4001 "{reason}"' in report["log"], report["log"]
    assert report["status"] == f'closed 4001 "{reason}"'
    assert "\u202e" not in str(report)
    _held(report["page"], "console/console.js")


PAGES = ["console", "console/console.js", "console/live", "console/live.js"]


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_only_its_own_script_and_no_other_site_frames_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, page: str
) -> None:
    server = _server(uvicorn_server, upstream, [])
    answer = httpx.get(server.url(f"/_gateway/{page}", scheme="http"), trust_env=False)
    assert answer.status_code == 200
    policy = {d.split()[0]: d.split()[1:] for d in answer.headers["content-security-policy"].split("; ")}
    assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'self'"] and policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'none'"] and "object-src" not in policy  # default-src 'none' covers it
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


async def test_the_apis_answers_carrying_client_text_are_json_no_browser_runs(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``refusals``, ``connections``, ``apis`` hold the markup: typed JSON, ``nosniff``, a policy that runs nothing."""
    server = _server(uvicorn_server, upstream, [])
    with ExitStack() as stack:
        await asyncio.to_thread(_traffic, server, stack)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=server.url("/_gateway/", scheme="http"), trust_env=False) as http:
            answers = {path: await http.get(path, headers=admin) for path in ("refusals", "connections", "apis")}
            answers["refused"] = await http.get("refusals")
            answers["missing"] = await http.get(quote(MARKUP), headers=admin)
    assert "<img" in answers["refusals"].text and "<img" in answers["connections"].text
    for name, answer in answers.items():
        typed = answer.headers["content-type"].startswith(("application/json", "application/problem+json"))
        assert typed or (name == "missing" and "<img" not in answer.text), (name, answer.headers)
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'; sandbox"
    page = answers["refused"].headers.get_list("x-content-type-options")
    assert page == ["nosniff"]  # once, whoever set it


FRAMES_CHECK = check_page(
    "console framing check",
    f'<iframe id="own" src="/_gateway/console/live#token={ADMIN}"></iframe><iframe id="other"></iframe>',
    f"""
// The same page of the gateway, on another origin: 127.0.0.1 where this page is localhost.
document.getElementById("other").src = `http://127.0.0.1:${{location.port}}/_gateway/console/live#token={ADMIN}`;
"""
    + """
(async () => {
  await holdUntil(() => false, 300);  // ~1.5 s of polls for a page that loaded
  document.getElementById("report").textContent = JSON.stringify({ done: true });
})();
""",
)


@needs_chromium
def test_another_site_cannot_frame_the_console(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """A page on ``localhost`` frames the live console of ``localhost`` (shown, polls) and of ``127.0.0.1``,
    another origin: that one is never drawn, so it runs nothing and clicks on it reach nothing."""
    hits: list[str] = []
    server = _server(uvicorn_server, upstream, hits)
    page = server.url("/browser-check/page/frames", scheme="http").replace("127.0.0.1", "localhost")
    assert page_report(dump_dom(page, budget_ms=20000)) == {"done": True}
    own = [hit for hit in hits if hit.startswith("localhost /_gateway/")]
    other = [hit for hit in hits if hit.startswith("127.0.0.1 /_gateway/")]
    assert "localhost /_gateway/console/live.js" in own and "localhost /_gateway/connections" in own, own
    assert other in ([], ["127.0.0.1 /_gateway/console/live"]), other  # the page itself, refused by the browser


def test_a_forwarded_client_text_never_reaches_the_lockout_warning(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn behind a proxy on this host takes ``X-Forwarded-For`` as the client, any text: the lockout keys
    the connection's own peer (``management.transport_peer``; the text once made it ``unknown``), so its
    WARNING names no text of the header's (C1 controls, CSI and NEL, were written raw)."""
    server = _server(uvicorn_server, upstream, [])
    forged = b"\x9b2J\x85FORGED: lockout lifted\xad"
    guess = [(b"authorization", b"Bearer a-wrong-guess"), (b"x-forwarded-for", forged)]
    with (
        caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.management"),
        httpx.Client(base_url=server.url("/_gateway/", scheme="http"), trust_env=False) as http,
    ):
        for _ in range(31):
            http.get("apis", headers=guess)
    (line,) = [r.getMessage() for r in caplog.records if "refused admin credentials" in r.getMessage()]
    assert "from loopback (uid " in line or "from 127.0.0.1 within" in line, line
    assert "FORGED" not in line and "\x9b" not in line and "\x85" not in line


def test_the_lockout_warning_escapes_a_key_it_is_given(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever address text reaches the lockout (an application calling it with its own), its WARNING
    writes C1 and C0 controls as escapes, on one line."""
    lockout = Lockout(limit=2)
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.management"):
        for _ in range(2):
            lockout.refused("\x9b2J\x85FORGED\r\nlifted")
    (line,) = [r.getMessage() for r in caplog.records if "refused admin credentials" in r.getMessage()]
    assert "\\x9b2J\\x85FORGED" in line, line
    assert not any(c in line for c in "\x9b\x85\r\n")


POLL_CHECK = check_page(
    "live console poll check",
    '<iframe id="live"></iframe>',
    f"""
const live = document.getElementById("live");
live.src = "/_gateway/console/live#token={ADMIN}&poll=" + new URLSearchParams(location.search).get("poll");
"""
    + """
(async () => {
  await holdUntil(() => false, 300);  // virtual time stands still meanwhile: only a timer run at once fires
  const status = document.getElementById("live").contentDocument.getElementById("status");
  document.getElementById("report").textContent = JSON.stringify({ polls: Number(status.dataset.polls || 0) });
})();
""",
)


@needs_chromium
@pytest.mark.parametrize("poll", ["1e10", "2500000", "Infinity"])
def test_a_links_poll_period_past_what_a_timer_holds_does_not_poll_back_to_back(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, poll: str
) -> None:
    """``poll=1e10`` (seconds) is a timer a browser runs at once: the page polled every worker back to back."""
    hits: list[str] = []
    server = _server(uvicorn_server, upstream, hits)
    page = server.url("/browser-check/page/poll", scheme="http") + f"?poll={poll}"
    report = page_report(dump_dom(page, budget_ms=20000))
    asked = [hit for hit in hits if hit.endswith("/_gateway/metrics/series")]
    assert report["polls"] == 1 and len(asked) == 1, (report, len(asked))
