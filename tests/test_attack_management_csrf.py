"""Attacks on the management API from a web page (CSRF), when ``auth`` trusts an ambient credential.

A cookie, a client certificate or an SSO proxy in front is sent by the admin's browser with any
request a page makes. A page on another origin could still send what needs no CORS preflight: a
``fetch(url, {mode: "no-cors", credentials: "include", body: new Blob([json])})`` (no Content-Type at
all) or a plain ``<form method=POST>`` to a route that reads no body (``/subscriptions/x/suspend``).
Every state-changing request must now be typed ``application/json`` (which a page cannot send
cross-origin without a preflight, which the API never answers), and is refused when the browser says
it came from another site (``Sec-Fetch-Site``) or another origin (``Origin``). Scripts, the SDK and
the command line send neither header and keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement, ManagementClient
from asgi_ws_gateway.management.openapi import openapi_document
from support.browser import check_page, dump_dom, needs_chromium, page_report
from support.management import Managed, api, managed_gateway
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


async def _anyone(request: Request) -> bool:
    """An ``auth`` that trusts what reaches it, as behind an SSO proxy: the browser's credential is ambient."""
    return True


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"apis": [api("echo", "/ws/echo", upstream)], "products": [{"name": "gold", "apis": ["echo"]}]}
    with managed_gateway(config, tmp_path / "state.json", auth=_anyone, admin_token=None) as running:
        yield running


async def _state(managed: Managed) -> tuple[Any, ...]:
    async with managed.http(None) as http:
        config = (await http.get("config")).json()
        subscriptions = (await http.get("subscriptions")).json()
    return config, subscriptions, managed.state.read_bytes() if managed.state.exists() else b""


async def _alice(managed: Managed) -> None:
    async with managed.client() as client:
        await client.create_subscription("gold", name="alice", subscription_id="alice")


JSON = {"content-type": "application/json"}
NEW_API = b'{"name": "pwned", "path": "/ws/pwned", "upstreams": ["ws://127.0.0.1:9/attacker"]}'
CHANGES: list[tuple[str, str, bytes]] = [
    ("POST", "apis", NEW_API),
    ("PUT", "apis/echo", b'{"path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/attacker"]}'),
    ("DELETE", "apis/echo", b""),
    ("POST", "products", b'{"name": "lockout", "apis": ["echo"]}'),
    ("DELETE", "products/gold", b""),
    ("POST", "subscriptions", b'{"product": "gold", "id": "mallory"}'),
    ("POST", "subscriptions/alice/suspend", b""),
    ("POST", "subscriptions/alice/activate", b""),
    ("POST", "subscriptions/alice/regenerate-key", b""),
    ("DELETE", "subscriptions/alice", b""),
    ("POST", "connections/c/messages", b'{"text": "x"}'),
    ("POST", "connections/c/close", b"{}"),
]
IDS = [f"{method} {path}" for method, path, _ in CHANGES]


WRITES = [c for c in CHANGES if c[0] != "DELETE"]  # DELETE is never sent cross-origin unpreflighted


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
async def test_a_change_not_typed_as_json_is_a_415_and_changes_nothing(
    managed: Managed, method: str, path: str, body: bytes, content_type: str | None
) -> None:
    """No type at all (a ``no-cors`` fetch of a Blob) or a form's type, with or without a body: 415, unread."""
    await _alice(managed)
    before = await _state(managed)
    headers = {"content-type": content_type} if content_type else {}
    async with managed.http(None) as http:
        response = await http.request(method, path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert await _state(managed) == before


@pytest.mark.parametrize(("method", "path", "body"), CHANGES, ids=IDS)
@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://attacker.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:1"},
    ],
    ids=["cross-site", "same-site", "other-origin", "opaque-origin", "other-port"],
)
async def test_a_change_from_another_site_or_origin_is_a_403_and_changes_nothing(
    managed: Managed, method: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """What a browser says of the request's initiator is believed, even when the type is JSON."""
    await _alice(managed)
    before = await _state(managed)
    async with managed.http(None) as http:
        response = await http.request(method, path, content=body, headers={**JSON, **headers})
    assert response.status_code == 403, response.text
    assert await _state(managed) == before


async def test_the_apis_own_origin_and_a_user_typed_request_may_change(managed: Managed) -> None:
    """The console's own fetches (same origin, ``Sec-Fetch-Site: same-origin``) and a typed-in URL (``none``)."""
    await _alice(managed)
    own = managed.base.removesuffix("/_gateway")
    async with managed.http(None) as http:
        same = {**JSON, "origin": own, "sec-fetch-site": "same-origin"}
        assert (await http.post("subscriptions/alice/suspend", headers=same)).status_code == 200
        typed = {**JSON, "origin": own.upper().replace("HTTP", "http"), "sec-fetch-site": "none"}
        assert (await http.post("subscriptions/alice/activate", headers=typed)).status_code == 200


async def test_scripts_send_json_without_browser_headers_and_reads_need_no_type(managed: Managed) -> None:
    """curl with ``-H 'Content-Type: application/json'``, the SDK and every GET keep working."""
    await _alice(managed)
    async with managed.http(None) as http:
        assert (await http.post("subscriptions/alice/suspend", headers=JSON)).status_code == 200
        assert (await http.post("apis", content=NEW_API, headers=JSON)).status_code == 201
        assert (await http.delete("apis/pwned")).status_code == 204
        assert (await http.get("subscriptions/alice")).json()["state"] == "suspended"
    async with managed.client() as client:
        assert (await client.activate_subscription("alice"))["state"] == "active"
        assert (await client.suspend_subscription("alice"))["state"] == "suspended"
        assert "key" in await client.regenerate_key("alice")


async def test_a_refused_forgery_does_not_count_against_the_lockout(upstream: UpstreamServer, tmp_path: Path) -> None:
    """A page cannot lock the admin's address out by making the browser post 30 forged requests."""
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http("wrong") as forged, running.http() as admin:
            for _ in range(40):
                assert (await forged.post("subscriptions/x/suspend", content=b"")).status_code == 415
            assert (await admin.get("apis")).status_code == 200


# -- in real Chromium: an admin's browser visits a page on another origin --

ATTACK = """
const G = "%(gateway)s/_gateway/";
const post = (path, body) => fetch(G + path, {method: "POST", mode: "no-cors", credentials: "include",
  body: body === undefined ? undefined : new Blob([JSON.stringify(body)])});  // a Blob without a type: untyped
const loaded = new Set();
for (const frame of document.querySelectorAll("iframe")) frame.addEventListener("load", () => loaded.add(frame.name));
(async () => {
  await post("apis", {name: "pwned", path: "/ws/pwned", upstreams: ["ws://127.0.0.1:9/attacker"]});
  await post("products", {name: "lockout", apis: ["echo"], subscription_required: true});
  await post("subscriptions/alice/suspend");
  await post("subscriptions/alice/suspend", {});
  for (const form of document.forms) form.submit();
  await holdUntil(() => loaded.size === document.forms.length);
  document.getElementById("report").textContent = JSON.stringify({done: true, frames: loaded.size});
})();
"""
FORMS = """
<form method="POST" action="%(gateway)s/_gateway/subscriptions/alice/regenerate-key" target="f1"></form>
<form method="POST" action="%(gateway)s/_gateway/subscriptions/alice/suspend" target="f2" enctype="text/plain">
  <input name="x" value="y"></form>
<form method="POST" action="%(gateway)s/_gateway/products" target="f3" enctype="text/plain">
  <input name='{"name": "formed", "apis": ["echo"], "x": "' value='"}'></form>
<iframe name="f1"></iframe><iframe name="f2"></iframe><iframe name="f3"></iframe>
"""
SAME_ORIGIN = """
(async () => {
  const answer = await fetch("/_gateway/subscriptions/alice/suspend", {method: "POST",
    headers: {"Content-Type": "application/json"}});
  document.getElementById("report").textContent = JSON.stringify({status: answer.status});
})();
"""


def _attacker(gateway: str) -> FastAPI:
    app = FastAPI()

    @app.get("/attack", response_class=HTMLResponse)
    async def page() -> str:
        return check_page("cute cats", FORMS % {"gateway": gateway}, ATTACK % {"gateway": gateway})

    @app.get("/browser-check/wait", status_code=204)
    async def wait() -> None:
        await asyncio.sleep(0.05)

    return app


def _victim(upstream: UpstreamServer, state: Path) -> GatewayManagement:
    own = FastAPI()

    @own.get("/console-like", response_class=HTMLResponse)
    async def page() -> str:
        return check_page("same origin", "", SAME_ORIGIN)

    config = {"apis": [api("echo", "/ws/echo", upstream)], "products": [{"name": "gold", "apis": ["echo"]}]}
    gateway = WebSocketGateway(own, config=config)
    return GatewayManagement(gateway, auth=_anyone, store=FileStore(state))


@needs_chromium
@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_page_on_another_origin_cannot_change_anything_in_chromium(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, tmp_path: Path, site: str
) -> None:
    """An untyped no-cors fetch and plain forms, from ``localhost`` (another site) or another port of
    ``127.0.0.1`` (the same site): the admin's browser sends them, the API changes nothing."""
    victim = uvicorn_server(_victim(upstream, tmp_path / "state.json"), lifespan="on")
    base = victim.url("/_gateway", scheme="http")

    async def setup() -> None:
        async with ManagementClient(base) as client:
            await client.create_subscription("gold", name="alice", subscription_id="alice")

    async def now() -> tuple[Any, ...]:
        async with ManagementClient(base) as client:
            return (
                [a["name"] for a in await client.list_apis()],
                [p["name"] for p in await client.list_products()],
                await client.get_subscription("alice"),
            )

    asyncio.run(setup())
    before = asyncio.run(now())
    gateway = victim.url("", scheme="http")
    attacker = uvicorn_server(_attacker(gateway))
    page = attacker.url("/attack", scheme="http")
    if site == "cross-site":
        page = page.replace("127.0.0.1", "localhost")
    assert page_report(dump_dom(page, budget_ms=8000)) == {"done": True, "frames": 3}
    assert asyncio.run(now()) == before
    assert before[2]["state"] == "active"


@needs_chromium
def test_the_apis_own_pages_still_change_things_in_chromium(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """A page of the API's own origin (as the console is) sends Origin and Sec-Fetch-Site: same-origin."""
    victim = uvicorn_server(_victim(upstream, tmp_path / "state.json"), lifespan="on")
    base = victim.url("/_gateway", scheme="http")

    async def setup() -> None:
        async with ManagementClient(base) as client:
            await client.create_subscription("gold", name="alice", subscription_id="alice")

    asyncio.run(setup())
    assert page_report(dump_dom(victim.url("/console-like", scheme="http"))) == {"status": 200}


def test_the_openapi_document_names_the_refusals_of_a_forged_or_untyped_change() -> None:
    """A client generated from the document expects what the API answers before any operation runs."""
    paths = openapi_document()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if operation.get("security") == []:  # public: no head is checked, nothing changes
                assert not {"400", "403", "415"} & set(operation["responses"]), (method, path)
                continue
            expected = {"400"} | ({"403", "408", "413", "415"} if method != "get" else set())
            assert expected <= set(operation["responses"]), (method, path)
    assert {path for path, ops in paths.items() if ops.get("get", {}).get("security") == []} == {"/healthz", "/readyz"}
    assert "403" not in paths["/apis"]["get"]["responses"]
