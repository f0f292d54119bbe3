"""What a web page in the operator's browser can do to the management API without the token.

An attack pass found three ways through:

* every refused request counted against the lockout, credential or not: 31 ``<img>``/``no-cors``
  GETs from any site (no ``Authorization`` at all) locked the operator's own address out, and a
  page repeating them kept it locked (0 of 36 polls with the right token got a 200 in 3 minutes);
* nothing checked ``Host``: a page whose name was rebound to the gateway's address (DNS rebinding)
  was same-origin to the browser, so ``Origin`` matched ``Host``; it read every answer, guessed
  tokens, and under an ``auth`` that trusts the client's address read the configuration and created
  an API;
* the mount routed on the decoded path: ``/%5Fgateway/readyz`` and ``/_gateway%2Freadyz`` were
  served, past a proxy in front that keeps ``/_gateway/`` from the public by matching the raw path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.management import Managed, api, managed_gateway
from support.rawhttp import exchange, status_of
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

GUESSES = 40  # past the lockout's 30 a minute


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


def _port(managed: Managed) -> int:
    return int(managed.base.rsplit(":", 1)[1].split("/", 1)[0])


# -- the lockout counts guesses, not what a page makes a browser send --------------------------


async def test_requests_without_a_credential_do_not_lock_the_operator_out(managed: Managed) -> None:
    """An ``<img src=…/_gateway/apis>``: no Authorization header, a 401 each, and no lockout."""
    async with managed.http(None) as page, managed.http() as admin:
        for _ in range(GUESSES):
            assert (await page.get("apis")).status_code == 401
        assert (await admin.get("apis")).status_code == 200


@pytest.mark.parametrize(
    "marks",
    [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
        {"Origin": "http://evil.example"},
    ],
    ids=["cross-site", "same-site", "foreign-origin"],
)
async def test_a_read_a_browser_marks_as_from_elsewhere_is_a_403_and_counts_nothing(
    managed: Managed, marks: dict[str, str]
) -> None:
    async with managed.http("guess") as page, managed.http() as admin:
        for _ in range(GUESSES):
            refused = await page.get("apis", headers=marks)
            assert refused.status_code == 403, refused.text
        assert (await admin.get("apis")).status_code == 200


async def test_scripted_guesses_are_still_locked_out(managed: Managed) -> None:
    """The lockout itself is unchanged: a token presented and refused counts."""
    async with managed.http("guess") as guesser:
        statuses = [(await guesser.get("apis")).status_code for _ in range(GUESSES)]
    assert statuses.count(401) == 30 and statuses[-1] == 429, statuses


# -- DNS rebinding: a browser's request under a name the operator did not allow -----------------

REBOUND = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}


@pytest.mark.parametrize("marks", [REBOUND, {}], ids=["marked", "unmarked"])
async def test_a_request_under_a_foreign_name_is_a_421_on_every_route(managed: Managed, marks: dict[str, str]) -> None:
    """Unmarked too: over plain HTTP a browser sends no Sec-Fetch-*, and a same-origin GET no Origin."""
    host = f"evil.example:{_port(managed)}"
    async with managed.http("guess") as page, managed.http() as admin:
        for path in ("healthz", "readyz", "openapi.json", "console", "apis", "config"):
            refused = await page.get(path, headers={**marks, "Host": host})
            assert refused.status_code == 421, (path, refused.text)
            assert "management.allowed_hosts" in refused.json()["detail"]
        for _ in range(GUESSES):
            assert (await page.get("apis", headers={**marks, "Host": host})).status_code == 421
        assert (await admin.get("apis")).status_code == 200  # nothing counted


async def test_ip_addresses_and_localhost_are_answered(managed: Managed) -> None:
    port = _port(managed)
    async with managed.http() as admin:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", f"app.localhost:{port}"):
            answered = await admin.get("apis", headers={**REBOUND, "Host": host})
            assert answered.status_code == 200, (host, answered.text)


async def test_an_address_with_a_zone_id_is_no_address(managed: Managed) -> None:
    """``ipaddress`` takes any text after an IPv6 address's '%': a Host of ``[fe80::1%25anything]`` was
    answered as an IP address, whatever the text."""
    async with managed.http() as admin:
        for host in (f"[fe80::1%25evil.example]:{_port(managed)}", "[::1%25x]"):
            answered = await admin.get("apis", headers={**REBOUND, "Host": host})
            assert answered.status_code in (400, 421), (host, answered.text)


@pytest.mark.parametrize(("allowed", "host", "status"), [
    (["gw.example"], "gw.example", 200),
    (["*.example"], "gw.example", 200),
    (["gw.example:9"], "gw.example", 421),  # another port
    (["*"], "anything.test", 200),
    (["gw.example"], "gw.example.evil.test", 421),
])  # fmt: skip
async def test_the_operator_allows_names(
    upstream: UpstreamServer, tmp_path: Path, allowed: list[str], host: str, status: int
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)], "management": {"allowed_hosts": allowed}}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as admin:
            answered = await admin.get("apis", headers={**REBOUND, "Host": f"{host}:{_port(running)}"})
    assert answered.status_code == status, answered.text


async def _anyone(request: Request) -> bool:
    """An ``auth`` that trusts whoever reaches it (a loopback-only API, an SSO proxy in front)."""
    return True


async def test_a_rebound_page_changes_nothing_under_an_auth_that_trusts_the_network(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json", auth=_anyone, admin_token=None) as running:
        host = f"evil.example:{_port(running)}"
        marks = {**REBOUND, "Host": host, "Origin": f"http://{host}", "Content-Type": "application/json"}
        body = {"name": "pwned", "path": "/ws/pwned", "upstreams": ["ws://127.0.0.1:9/attacker"]}
        async with running.http(None) as page:
            assert (await page.get("config", headers=marks)).status_code == 421
            assert (await page.post("apis", headers=marks, content=json.dumps(body))).status_code == 421
            assert [a["name"] for a in (await page.get("apis")).json()["apis"]] == ["echo"]
        assert not running.state.exists()  # nothing was written


# -- the mount's path, as sent -------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/%5Fgateway/readyz", "/%5fgateway/openapi.json", "/_gateway%2Freadyz", "/%5fgateway%2fapis", "/_gatew%61y/apis"],
)
async def test_the_management_path_spelled_another_way_is_a_400(managed: Managed, target: str) -> None:
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    assert status_of(await exchange(_port(managed), request)) == 400
    request = b"GET /_gateway/readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert status_of(await exchange(_port(managed), request)) == 200


# -- in real Chromium: a page whose name was rebound to the gateway's address --------------------

REBIND_SCRIPT = """
(async () => {
  const statuses = [];
  for (const path of ["/_gateway/readyz", "/_gateway/config"]) statuses.push((await fetch(path)).status);
  for (let i = 0; i < 35; i++)
    statuses.push((await fetch("/_gateway/apis", {headers: {Authorization: "Bearer guess-" + i}})).status);
  const made = await fetch("/_gateway/apis", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({name: "pwned", path: "/ws/pwned", upstreams: ["ws://127.0.0.1:9/attacker"]})});
  statuses.push(made.status);
  document.getElementById("report").textContent = JSON.stringify({statuses: [...new Set(statuses)]});
})();
"""


def _victim(upstream: UpstreamServer, state: Path, **options: Any) -> GatewayManagement:
    own = FastAPI()

    @own.get("/page", response_class=HTMLResponse)  # what the attacker's server served under the name, before
    async def page() -> str:  # the name was rebound: the page's origin is http://evil.example:<port>
        return check_page("cute cats", "", REBIND_SCRIPT)

    gateway = WebSocketGateway(own, config={"apis": [api("echo", "/ws/echo", upstream)]})
    return GatewayManagement(gateway, store=FileStore(state), **options)


@needs_chromium
@pytest.mark.parametrize("auth", ["token", "trusts-the-network"])
def test_a_rebound_page_reaches_nothing_in_chromium(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, tmp_path: Path, auth: str
) -> None:
    options: dict[str, Any] = {"admin_token": "a" * 32} if auth == "token" else {"auth": _anyone}
    victim = uvicorn_server(_victim(upstream, tmp_path / "state.json", **options), lifespan="on")
    port = int(victim.url("").rsplit(":", 1)[1].split("/", 1)[0])
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
    report = page_report(dump_dom(f"http://evil.example:{port}/page", budget_ms=8000, extra_args=[rules]))
    assert report == {"statuses": [421]}, report
    assert not (tmp_path / "state.json").exists()

    async def operator() -> int:
        with_token = {"Authorization": f"Bearer {'a' * 32}"} if auth == "token" else {}
        request = b"GET /_gateway/apis HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        request += b"".join(f"{k}: {v}\r\n".encode() for k, v in with_token.items()) + b"\r\n"
        return status_of(await exchange(port, request))

    assert asyncio.run(operator()) == 200  # not locked out
