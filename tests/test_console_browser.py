"""The live console in real headless Chromium, against real traffic the test drives.

Charts draw non-zero data, a connection kicked from the page disappears (and its client gets the
close), and a refused handshake shows in the refusals list without its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect as sync_connect

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management.series import SeriesKey
from asgi_ws_gateway.management.watch import Watch
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.jwts import HS_SECRET, token
from support.rawhttp import accept_upstream_blocking, ws_frame
from support.servers import UpstreamServer, UvicornFactory, UvicornServer, free_port

pytestmark = needs_chromium

ADMIN = "live-console-token"
SAMPLE_INTERVAL = 0.2
# Virtual time stands still while the page's wait fetch is pending: pages that wait a lot use a short
# one (QUICK_WAIT seconds) and so more rounds for the same ~10 s of real time at most.
QUICK_WAIT = 0.005
QUICK_ROUNDS = 2000

LIVE_CHECK = check_page(
    "live console check",
    f'<iframe id="live" style="width:1200px;height:900px" src="/_gateway/console/live#token={ADMIN}&amp;poll=0.2">'
    "</iframe>",
    """
const doc = () => document.getElementById("live").contentDocument;
const rows = (id) => Array.from(doc() ? doc().querySelectorAll(`#${id} tbody tr`) : []);
const text = (row) => Array.from(row.cells, (c) => c.textContent);
const charts = () => Object.fromEntries(Array.from(doc().querySelectorAll("figure[data-series]"), (f) => [
  f.dataset.series,
  Array.from(f.querySelectorAll("path"), (p) => ({
    label: p.dataset.label, points: Number(p.dataset.points), max: Number(p.dataset.max),
  })),
]));
const drawn = () => doc() && Array.from(doc().querySelectorAll("figure[data-series=messages] path"))
  .some((p) => Number(p.dataset.max) > 0);
const status = () => doc().getElementById("status");
const polls = () => Number(status().dataset.polls || 0);
(async () => {
  await holdUntil(() => rows("connections").length === 1 && rows("refusals").length >= 1 && drawn(), QUICK_ROUNDS);
  const before = { connections: rows("connections").map(text), refusals: rows("refusals").map(text), charts: charts() };
  rows("connections")[0].querySelector("button[name=kick]").click();
  await holdUntil(() => rows("connections").length === 0, QUICK_ROUNDS);
  const kicked = polls();  // two later polls must still not list it
  await holdUntil(() => polls() >= kicked + 2, QUICK_ROUNDS);
  document.getElementById("report").textContent = JSON.stringify({
    before, after: rows("connections").length, status: status().textContent,
    workers: doc().getElementById("workers").textContent,
  });
})();
""".replace("QUICK_ROUNDS", str(QUICK_ROUNDS)),
)


def _app(upstream: UpstreamServer, sample_interval: float = SAMPLE_INTERVAL, wait: float = 0.05) -> FastAPI:
    """The gateway, its console, and the check pages' ``/browser-check/wait``: a pending fetch of
    ``wait`` seconds, during which virtual time stands still (shorter: virtual time runs faster)."""
    app = FastAPI()

    @app.get("/browser-check/live", response_class=HTMLResponse)
    async def page() -> str:
        return LIVE_CHECK

    @app.get("/browser-check/wait", status_code=204)
    async def hold() -> None:
        await asyncio.sleep(wait)

    jwt = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}
    config: dict[str, Any] = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]},
            {"name": "chat", "path": "/ws/chat", "upstreams": [upstream.url("/echo")], "policies": [jwt]},
        ]
    }
    app.add_middleware(WebSocketGateway, config=config)
    app.add_middleware(GatewayManagement, path="/_gateway", admin_token=ADMIN, sample_interval=sample_interval)
    return app


def _wait_for_samples(base: str, count: int) -> None:
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, trust_env=False) as http:
        while len(http.get("metrics/series").json()["times"]) < count:
            assert time.monotonic() < deadline, "the sampler took no samples"
            time.sleep(0.05)


def test_live_console_charts_real_traffic_kicks_a_connection_and_lists_a_refusal(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = uvicorn_server(_app(upstream, wait=QUICK_WAIT), lifespan="on")
    _wait_for_samples(server.url("/_gateway/", scheme="http"), 2)  # a slot before the traffic: rates from 0
    expired = token(exp=1)
    try:
        sync_connect(server.url("/ws/chat"), additional_headers={"Authorization": f"Bearer {expired}"})
        raise AssertionError("an expired token was accepted")
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
    with sync_connect(server.url("/ws/echo")) as ws:
        for text in ("one", "two", "three"):
            ws.send(text)
            assert ws.recv(timeout=5) == text
        report = page_report(dump_dom(server.url("/browser-check/live", scheme="http"), budget_ms=20000))
        try:
            ws.recv(timeout=5)
            raise AssertionError("the kicked connection is still open")
        except ConnectionClosedOK as exc:
            assert exc.rcvd is not None and (exc.rcvd.code, exc.rcvd.reason) == (1000, "closed from the console")

    before = report["before"]
    (row,) = before["connections"]
    assert row[0] == "echo" and row[4] == upstream.url("/echo") and row[6:10] == ["3", "3", "11", "11"]
    chat = [r for r in before["refusals"] if r[1] == "chat"]
    assert chat and chat[0][2:4] == ["401", "validate-jwt"]
    assert expired not in str(report) and expired.split(".")[1] not in str(report)
    charts = before["charts"]
    assert set(charts) == {"active", "handshakes", "messages", "bytes", "refusals", "upstream_failures", "closes"}
    by_label = {name: {p["label"]: p for p in paths} for name, paths in charts.items()}
    assert by_label["active"][""]["max"] == 1
    assert by_label["messages"]["in"]["max"] > 0 and by_label["messages"]["out"]["max"] > 0
    assert by_label["bytes"]["in"]["max"] > 0
    assert by_label["handshakes"]["accepted"]["max"] > 0 and by_label["handshakes"]["401"]["max"] > 0
    assert by_label["refusals"]["validate-jwt"]["max"] > 0
    assert all(p["points"] >= 2 for p in by_label["messages"].values())
    assert report["after"] == 0
    assert report["status"].startswith("live") and report["workers"] == "workers: 1 of 1"


class _HoldsTheClose(socketserver.ThreadingTCPServer):
    """A raw upstream (a thread a connection) that says hello and never answers a close frame: the gateway's
    connection to it stays in its closing handshake until :meth:`end` drops it. ``closes``: (code, reason)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Holding)
        self.closes: list[tuple[int, str]] = []
        self.held: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server_address[1]}/"

    def end(self) -> None:
        for connection in self.held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Holding(socketserver.BaseRequestHandler):
    server: _HoldsTheClose

    def handle(self) -> None:
        self.server.held.append(self.request)
        with contextlib.suppress(OSError):
            accept_upstream_blocking(self.request, then=ws_frame(1, b"hello", mask=False))
            data = b""
            while chunk := self.request.recv(65536):
                data += chunk
                # The gateway's first frame is its close (the page sends nothing else): masked, a short payload.
                if len(data) >= 6 and data[0] == 0x88 and len(data) >= 6 + (data[1] & 0x7F):
                    payload = bytes(b ^ data[2 + i % 4] for i, b in enumerate(data[6 : 6 + (data[1] & 0x7F)]))
                    self.server.closes.append((struct.unpack("!H", payload[:2])[0], payload[2:].decode()))
                    data = b"\xff"  # one close recorded; the rest is read and dropped


CLOSING_CHECK = check_page(
    "live console kick of a closing connection",
    f'<iframe id="live" style="width:1200px;height:900px" src="/_gateway/console/live#token={ADMIN}&amp;poll=0.2">'
    "</iframe>",
    """
const doc = () => document.getElementById("live").contentDocument;
const rows = () => Array.from(doc() ? doc().querySelectorAll("#connections tbody tr") : []);
const status = () => doc().getElementById("status");
const polls = () => Number(status().dataset.polls || 0);
const seen = [];  // every status the page showed, with its state: a poll overwrites it soon after
const kickOf = () => rows()[0].querySelector("button[name=kick]");
const shown = () => ({
  closing: rows()[0].dataset.closing || null, kick: kickOf().textContent, disabled: kickOf().disabled,
});
(async () => {
  const ws = new WebSocket("ws://" + location.host + "/ws/held");
  let hello = false;
  ws.onmessage = (event) => { hello = event.data === "hello"; };
  await holdUntil(() => hello && doc() && doc().getElementById("status") && rows().length === 1, QUICK_ROUNDS);
  ws.close(4100, "bye");  // the gateway takes it on to the upstream, which never answers: closing
  for (let i = 0; i < QUICK_ROUNDS && !(await (await fetch("/browser-check/held")).json()).closes.length; i++) {
    await fetch("/browser-check/wait");
  }
  new MutationObserver(() => seen.push([status().dataset.state, status().textContent]))
    .observe(status(), { childList: true, characterData: true, subtree: true, attributes: true });
  kickOf().click();
  await holdUntil(() => seen.some(([, text]) => !text.startsWith("live")), QUICK_ROUNDS);
  const kicked = { seen: seen.filter(([, text]) => !text.startsWith("live")), row: shown() };
  const after = polls();
  await holdUntil(() => polls() >= after + 2, QUICK_ROUNDS);
  const polled = { rows: rows().length, row: rows().length ? shown() : null };
  await fetch("/browser-check/end");  // the upstream goes: the connection ends
  await holdUntil(() => rows().length === 0, QUICK_ROUNDS);
  const ended = polls();
  await holdUntil(() => polls() >= ended + 2, QUICK_ROUNDS);
  document.getElementById("report").textContent = JSON.stringify({
    kicked, polled, rows: rows().length, held: await (await fetch("/browser-check/held")).json(),
  });
})();
""".replace("QUICK_ROUNDS", str(QUICK_ROUNDS)),
)


GONE_CHECK = check_page(
    "live console kick of a connection gone since the last poll",
    '<div id="frame"></div>',
    """
const doc = () => document.getElementById("live").contentDocument;
const rows = () => Array.from(doc() ? doc().querySelectorAll("#connections tbody tr") : []);
const status = () => doc().getElementById("status");
const listed = async () => (await (await fetch("/_gateway/connections", {
  headers: { Authorization: "Bearer ADMIN_TOKEN" }, cache: "no-store",
})).json()).connections.length;
(async () => {
  const ws = new WebSocket("ws://" + location.host + "/ws/held");
  let hello = false;
  ws.onmessage = (event) => { hello = event.data === "hello"; };
  await holdUntil(() => hello, QUICK_ROUNDS);
  // An hour between polls: the console lists the connection once and keeps its row after it ends.
  const live = Object.assign(document.createElement("iframe"), { id: "live" });
  live.src = "/_gateway/console/live#token=ADMIN_TOKEN&poll=3600";
  document.getElementById("frame").append(live);
  await holdUntil(() => rows().length === 1, QUICK_ROUNDS);
  await fetch("/browser-check/end");
  for (let i = 0; i < QUICK_ROUNDS && (await listed()) > 0; i++) await fetch("/browser-check/wait");
  rows()[0].querySelector("button[name=kick]").click();
  await holdUntil(() => !status().textContent.startsWith("live"), QUICK_ROUNDS);
  document.getElementById("report").textContent = JSON.stringify({
    state: status().dataset.state, status: status().textContent, rows: rows().length,
  });
})();
""".replace("QUICK_ROUNDS", str(QUICK_ROUNDS)).replace("ADMIN_TOKEN", ADMIN),
)


@contextlib.contextmanager
def _held_gateway(uvicorn_server: UvicornFactory, page: str) -> Iterator[UvicornServer]:
    """The gateway and its console before a :class:`_HoldsTheClose` upstream (``/ws/held``), with the check
    page ``page`` at ``/browser-check/page`` and its calls: ``wait``, ``held`` (the closes), ``end``."""
    with ExitStack() as stack:
        held = stack.enter_context(_HoldsTheClose())
        threading.Thread(target=held.serve_forever, daemon=True).start()
        stack.callback(held.shutdown)
        stack.callback(held.end)
        app = FastAPI()

        @app.get("/browser-check/page", response_class=HTMLResponse)
        async def check() -> str:
            return page

        @app.get("/browser-check/wait", status_code=204)
        async def hold() -> None:
            await asyncio.sleep(QUICK_WAIT)

        @app.get("/browser-check/held")
        async def closes() -> dict[str, Any]:
            return {"closes": held.closes}

        @app.get("/browser-check/end", status_code=204)
        async def end() -> None:
            held.end()

        api = {"name": "held", "path": "/ws/held", "upstreams": [held.url], "close_timeout": 60}
        app.add_middleware(WebSocketGateway, config={"apis": [api]})
        app.add_middleware(GatewayManagement, path="/_gateway", admin_token=ADMIN, sample_interval=SAMPLE_INTERVAL)
        yield uvicorn_server(app, lifespan="on")


def test_live_console_kick_of_a_closing_connection_says_so_and_the_row_goes_when_it_ends(
    uvicorn_server: UvicornFactory,
) -> None:
    """The API answers 409 to a kick of a connection already closing (here its client's close, which the
    upstream never answers): the page said "close failed: 409 Conflict" as an outage, in red."""
    with _held_gateway(uvicorn_server, CLOSING_CHECK) as server:
        report = page_report(dump_dom(server.url("/browser-check/page", scheme="http"), budget_ms=20000))
    ((state, text),) = report["kicked"]["seen"]
    assert state != "down" and "already closing" in text, report
    assert report["kicked"]["row"] == {"closing": "true", "kick": "Closing", "disabled": True}, report
    assert report["polled"] == {"rows": 1, "row": {"closing": "true", "kick": "Closing", "disabled": True}}, report
    assert report["rows"] == 0
    assert report["held"]["closes"] == [[4100, "bye"]]  # the client's close, and nothing of the kick's


def test_live_console_kick_of_a_connection_gone_since_the_last_poll_drops_its_row(
    uvicorn_server: UvicornFactory,
) -> None:
    """A 404 (no such open connection) is the kick's race with the connection's end, not an outage."""
    with _held_gateway(uvicorn_server, GONE_CHECK) as server:
        report = page_report(dump_dom(server.url("/browser-check/page", scheme="http"), budget_ms=20000))
    assert report["state"] != "down" and report["status"].endswith("had closed already"), report
    assert report["rows"] == 0


RESTART_CHECK = check_page(
    "live console restart check",
    f'<iframe id="live" src="/_gateway/console/live#token={ADMIN}&amp;poll=0.2"></iframe>',
    """
const doc = () => document.getElementById("live").contentDocument;
const status = () => (doc() ? doc().getElementById("status") : null);
const state = () => (status() ? status().dataset.state : "");
const polls = () => Number((status() && status().dataset.polls) || 0);
async function holdThrough(done) {  // the gateway goes away meanwhile: a failed fetch must not end the wait
  for (let i = 0; i < 5000 && !done(); i++) {
    try { await fetch("/browser-check/wait"); } catch { await new Promise((r) => setTimeout(r, 5)); }
  }
}
(async () => {
  await holdThrough(() => state() === "live" && polls() >= 3);
  await fetch("/browser-check/restart");
  await holdThrough(() => state() === "down");
  const down = status().textContent;
  await holdThrough(() => state() === "live" && doc().getElementById("gaps").textContent !== "");
  const back = polls();
  await holdThrough(() => polls() >= back + 3);
  document.getElementById("report").textContent = JSON.stringify({
    down, gaps: doc().getElementById("gaps").textContent, status: status().textContent,
    shaded: doc().querySelectorAll("figure[data-series=active] rect.gap").length,
  });
})();
""",
)


def test_live_console_reconnects_after_a_gateway_restart_and_shows_the_gap(upstream: UpstreamServer) -> None:
    """The server stops and a new one starts on the same port: the page says so, comes back, shades the gap."""
    restart = threading.Event()

    def app() -> FastAPI:
        built = _app(upstream, wait=QUICK_WAIT)

        @built.get("/browser-check/restart-page", response_class=HTMLResponse)
        async def page() -> str:
            return RESTART_CHECK

        @built.get("/browser-check/restart", status_code=204)
        async def ask() -> None:
            restart.set()

        return built

    port = free_port()
    with ExitStack() as stack:
        first = stack.enter_context(UvicornServer(app(), port=port, lifespan="on"))
        with ThreadPoolExecutor(1) as pool:
            page = pool.submit(
                dump_dom, f"http://127.0.0.1:{port}/browser-check/restart-page", 30_000
            )  # a busy machine: ample budget
            assert restart.wait(20), "the page never asked for the restart"
            first.stop()
            time.sleep(3 * SAMPLE_INTERVAL)  # the outage itself: three sampling slots with no gateway
            stack.enter_context(UvicornServer(app(), port=port, lifespan="on"))
            report = page_report(page.result(timeout=60))
    assert report["down"].startswith("gateway unreachable since")
    assert report["gaps"].startswith("gap: unreachable")
    assert report["status"].startswith("live")
    assert report["shaded"] >= 1


REFUSED_CHECK = check_page(
    "live console refused token check",
    '<iframe id="live" src="/_gateway/console/live#token=wrong-token&amp;poll=0.1"></iframe>',
    """
const doc = () => document.getElementById("live").contentDocument;
const status = () => (doc() ? doc().getElementById("status") : null);
const state = () => (status() ? status().dataset.state : "");
async function waitFor(done, rounds = 400) {
  for (let i = 0; i < rounds && !done(); i++) await fetch("/browser-check/wait");
}
(async () => {
  await waitFor(() => state() === "down");
  const refused = status().textContent;
  await waitFor(() => false, 60);  // 3 s: fifteen poll intervals
  const sent = await (await fetch("/browser-check/calls")).json();
  const admin = doc().querySelector("input[name=admin]");
  admin.value = "ADMIN_TOKEN";
  admin.dispatchEvent(new Event("change"));
  await waitFor(() => state() === "live");
  document.getElementById("report").textContent = JSON.stringify({ refused, sent, status: status().textContent });
})();
""".replace("ADMIN_TOKEN", ADMIN),
)


def test_live_console_stops_sending_a_refused_token_until_it_is_changed(upstream: UpstreamServer) -> None:
    """Polling on with a refused token counted every poll as a guess: the address was locked out (429)."""
    app = _app(upstream)
    calls = {"refused": 0}

    @app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path.startswith("/_gateway/") and response.status_code == 401:
            calls["refused"] += 1
        return response

    @app.get("/browser-check/refused", response_class=HTMLResponse)
    async def page() -> str:
        return REFUSED_CHECK

    @app.get("/browser-check/calls")
    async def sent() -> dict[str, int]:
        return calls

    with UvicornServer(app, lifespan="on") as server:
        report = page_report(dump_dom(server.url("/browser-check/refused", scheme="http"), budget_ms=20000))
    assert report["refused"] == "the admin token was refused (401): enter the right one"
    assert report["sent"]["refused"] == 3, report  # one poll's three calls, then none
    assert report["status"].startswith("live")


FLOOD_CHECK = check_page(
    "live console flood check",
    f'<iframe id="live" style="width:1200px;height:900px" src="/_gateway/console/live#token={ADMIN}&amp;poll=1">'
    "</iframe>",
    """
const doc = () => document.getElementById("live").contentDocument;
const rows = (id) => Array.from(doc() ? doc().querySelectorAll(`#${id} tbody tr`) : []);
const status = () => (doc() ? doc().getElementById("status") : null);
const polls = () => Number((status() && status().dataset.polls) || 0);
const labels = (series) => Array.from(
  doc().querySelectorAll(`figure[data-series=${series}] path`), (p) => p.dataset.label);
(async () => {
  await holdUntil(() => polls() >= 3 || (status() && status().dataset.state === "down"), QUICK_ROUNDS);
  document.getElementById("report").textContent = JSON.stringify({
    status: status().textContent, state: status().dataset.state,
    connections: rows("connections").length, refusals: rows("refusals").length,
    closes: labels("closes"), handshakes: labels("handshakes"),
  });
})();
""".replace("QUICK_ROUNDS", str(QUICK_ROUNDS)),
)


def test_live_console_survives_thousands_of_close_codes_and_still_shows_its_tables(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 distinct close codes over 100 slots once overflowed Math.max(...values) in the chart: the
    page said "gateway unreachable" and never drew the connections or refusals again."""
    counted = Watch._counts
    tick = itertools.count()

    def flooded(self: Watch) -> dict[SeriesKey, int]:  # as an unauthenticated client can make them
        n = next(tick)
        return {**counted(self), **{("closes", "echo", str(code)): n for code in range(3000, 5000)}}

    monkeypatch.setattr(Watch, "_counts", flooded)
    app = _app(upstream, sample_interval=0.02, wait=QUICK_WAIT)  # the 100 samples in 2 s

    @app.get("/browser-check/flood", response_class=HTMLResponse)
    async def page() -> str:
        return FLOOD_CHECK

    server = uvicorn_server(app, lifespan="on")
    try:
        sync_connect(server.url("/ws/chat"))
        raise AssertionError("a handshake without a token was accepted")
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
    _wait_for_samples(server.url("/_gateway/", scheme="http"), 100)
    with sync_connect(server.url("/ws/echo")):
        report = page_report(dump_dom(server.url("/browser-check/flood", scheme="http"), budget_ms=20000))
    assert report["state"] == "live" and report["status"].startswith("live"), report
    assert report["connections"] == 1 and report["refusals"] >= 1
    assert len(report["closes"]) <= 8 and "other" in report["closes"]  # the busiest, and the rest added up
    assert "401" in report["handshakes"]  # not pushed out of the samples by the close codes


FRAGMENT_CHECK = check_page(
    "live console fragment check",
    f'<iframe id="live" src="/_gateway/console/live#token={ADMIN}&amp;poll=3&amp;api=echo"></iframe>',
    """
const doc = () => document.getElementById("live").contentDocument;
const status = () => (doc() ? doc().getElementById("status") : null);
(async () => {
  await holdUntil(() => status() && status().dataset.state === "live");
  const live = document.getElementById("live").contentWindow;
  document.getElementById("report").textContent = JSON.stringify({
    href: live.location.href, state: status().dataset.state, api: doc().querySelector("select[name=api]").value,
  });
})();
""",
)


def test_live_console_takes_the_token_out_of_the_address_and_keeps_the_other_settings(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A token left in the fragment lands in the browser history and its sync."""
    app = _app(upstream)

    @app.get("/browser-check/fragment", response_class=HTMLResponse)
    async def page() -> str:
        return FRAGMENT_CHECK

    server = uvicorn_server(app, lifespan="on")
    report = page_report(dump_dom(server.url("/browser-check/fragment", scheme="http"), budget_ms=10000))
    assert report["state"] == "live" and report["api"] == "echo"  # the token was read all the same
    assert report["href"].endswith("/_gateway/console/live#poll=3&api=echo"), report
    assert ADMIN not in report["href"]
