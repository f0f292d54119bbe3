"""The management REST API through real uvicorn: every endpoint, auth, validation, concurrency."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from asgi_ws_gateway.management.subscriptions import SubscriptionResource, hash_key
from support.clients import connect, expect_close, expect_status
from support.jwts import HS_SECRET, token
from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def _snapshot(managed: Managed) -> tuple[Any, ...]:
    """Everything an invalid or refused request must leave unchanged."""
    async with managed.http() as http:
        config = (await http.get("config")).json()
        products = (await http.get("products")).json()
        subscriptions = (await http.get("subscriptions")).json()
        revision = (await http.get("readyz")).json()["revision"]
    return config, products, subscriptions, revision, managed.state.read_bytes() if managed.state.exists() else b""


async def _echo(url: str, text: str = "ping") -> None:
    async with await connect(url) as ws:
        await ws.send(text)
        assert await ws.recv() == text


PROTECTED = [
    ("GET", "apis", None),
    ("POST", "apis", {"name": "x", "path": "/ws/x", "upstreams": ["ws://127.0.0.1:1/"]}),
    ("GET", "apis/echo", None),
    ("PUT", "apis/echo", {"path": "/ws/moved", "upstreams": ["ws://127.0.0.1:1/"]}),
    ("DELETE", "apis/echo", None),
    ("GET", "config", None),
    ("GET", "products", None),
    ("POST", "products", {"name": "p", "apis": ["echo"]}),
    ("GET", "products/p", None),
    ("DELETE", "products/p", None),
    ("GET", "subscriptions", None),
    ("POST", "subscriptions", {"product": "p"}),
    ("GET", "subscriptions/s", None),
    ("DELETE", "subscriptions/s", None),
    ("POST", "subscriptions/s/suspend", None),
    ("POST", "subscriptions/s/activate", None),
    ("POST", "subscriptions/s/regenerate-key", None),
    ("GET", "connections", None),
    ("POST", "connections/c/messages", {"text": "x"}),
    ("POST", "connections/c/close", {"code": 1000}),
]


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x"], ids=["no-token", "wrong", "longer"])
async def test_every_endpoint_refuses_a_missing_or_wrong_token_with_401_and_changes_nothing(
    managed: Managed, token: str | None
) -> None:
    before = await _snapshot(managed)
    async with managed.http(token) as http:
        for method, path, body in PROTECTED:
            typed = {"Content-Type": "application/json"} if method in ("POST", "PUT") else {}
            response = await http.request(method, path, json=body, headers=typed)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
            assert token is None or token not in response.text
    assert await _snapshot(managed) == before
    await _echo(managed.url("/ws/echo"))


async def test_a_user_supplied_auth_callable_replaces_the_token(upstream: UpstreamServer, tmp_path: Path) -> None:
    async def auth(request: Request) -> bool:
        return request.headers.get("x-role") == "admin"

    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "s.json", auth=auth, admin_token=None) as managed:
        async with managed.http(None) as http:
            assert (await http.get("apis")).status_code == 401
            assert (await http.get("apis", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 401
            assert (await http.get("apis", headers={"X-Role": "admin"})).status_code == 200


async def test_readiness_is_503_full_while_the_gateway_is_at_max_connections(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)], "max_connections": 1}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http(None) as http:
            async with await connect(running.url("/ws/echo")) as ws:
                await ws.send("held")
                assert await ws.recv() == "held"
                full = await http.get("readyz")
                assert (full.status_code, full.json()) == (503, {"status": "full"})
            async with asyncio.timeout(10):  # ready once the closed connection's task has ended
                while (await http.get("readyz")).status_code != 200:  # noqa: ASYNC110 - the gateway's state
                    await asyncio.sleep(0.05)


async def test_health_readiness_openapi_and_console_need_no_token(managed: Managed) -> None:
    async with managed.http(None) as http:
        assert (await http.get("healthz")).json() == {"status": "ok"}
        assert (await http.get("readyz")).json() == {"status": "ready", "revision": 0}
        document = (await http.get("openapi.json")).json()
        console = await http.get("console")
        script = await http.get("console/console.js")
        redirect = await http.get(managed.base, follow_redirects=False)
    assert document["openapi"] == "3.1.0"
    routes = {(m.upper(), "/" + p) for m, p, _ in PROTECTED}
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert {(m, p.replace("echo", "{name}").replace("/p", "/{name}")) for m, p in routes if "apis/" in p} <= documented
    assert ("POST", "/connections/{id}/close") in documented and ("GET", "/readyz") in documented
    assert "ApiConfig" in document["components"]["schemas"]
    assert console.status_code == 200 and "<title>asgi-ws-gateway test console</title>" in console.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/_gateway/console")


async def test_the_console_pages_may_not_be_framed_by_another_site_nor_run_other_script(managed: Managed) -> None:
    """They hold the admin token (clickjacking, injected script). The browser tests run the pages under
    this policy in Chromium, framed by a page of the gateway's own origin, which it allows."""
    async with managed.http(None) as http:
        answers = [
            await http.get(path) for path in ("console", "console/console.js", "console/live", "console/live.js")
        ]
    for answer in answers:
        policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
        assert policy["frame-ancestors"] == "'self'" and answer.headers["x-frame-options"] == "SAMEORIGIN"
        assert (policy["default-src"], policy["script-src"]) == ("'none'", "'self'")  # no inline or eval'd script
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_readyz_is_503_while_the_gateway_drains(managed: Managed) -> None:
    managed.gateway._draining = True  # what drain() sets first; a real drain would end the server's connections
    async with managed.http(None) as http:
        response = await http.get("readyz")
    assert (response.status_code, response.json()) == (503, {"status": "draining"})


async def test_create_get_list_and_use_an_api(managed: Managed, upstream: UpstreamServer) -> None:
    async with managed.http() as http:
        created = await http.post("apis", json=api("chat", "/ws/chat/{room}", upstream, idle_timeout=60))
        assert created.status_code == 201
        assert created.headers["location"] == "apis/chat"
        assert created.json()["idle_timeout"] == 60
        got = await http.get("apis/chat")
        assert got.json() == created.json() and got.headers["etag"] == created.headers["etag"]
        listed = (await http.get("apis")).json()
    assert [a["name"] for a in listed["apis"]] == ["echo", "chat"]
    assert listed["origins"] == {"echo": "file", "chat": "api"}
    await _echo(managed.url("/ws/chat/lobby"))  # applied to new handshakes at once


async def test_replace_applies_to_new_handshakes_and_open_connections_keep_theirs(
    managed: Managed, upstream: UpstreamServer
) -> None:
    async with await connect(managed.url("/ws/echo")) as old, managed.http() as http:
        response = await http.put("apis/echo", json=api("echo", "/ws/moved", upstream))
        assert response.status_code == 200 and response.json()["path"] == "/ws/moved"
        assert (await http.get("apis")).json()["origins"] == {"echo": "file+api"}
        assert (await expect_status(managed.url("/ws/echo")))[0] == 404
        await _echo(managed.url("/ws/moved"))
        await old.send("still open")
        assert await old.recv() == "still open"


async def test_replace_with_drain_closes_open_connections_of_that_api(
    managed: Managed, upstream: UpstreamServer
) -> None:
    async with await connect(managed.url("/ws/echo")) as old, managed.http() as http:
        response = await http.put("apis/echo?drain=true", json=api("echo", "/ws/echo", upstream, idle_timeout=30))
        assert response.status_code == 200
        assert await expect_close(old) == (1001, "API configuration changed")


async def test_delete_a_file_api_hides_it_and_it_can_be_created_again(
    managed: Managed, upstream: UpstreamServer
) -> None:
    async with managed.http() as http:
        assert (await http.delete("apis/echo")).status_code == 204
        assert (await http.get("apis/echo")).status_code == 404
        assert (await expect_status(managed.url("/ws/echo")))[0] == 404
        assert (await http.delete("apis/echo")).status_code == 404
        assert json.loads(managed.state.read_text())["apis"] == {"echo": None}  # a tombstone over the file's API
        assert (await http.post("apis", json=api("echo", "/ws/echo", upstream))).status_code == 201
    await _echo(managed.url("/ws/echo"))


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        ({"name": "bad", "path": "/ws/bad", "upstreams": ["htp://x"]},
         ["upstreams[0]: 'htp://x' is not a ws://, wss:// or asgi: URL"]),
        ({"name": "bad", "path": "/ws/bad", "upstreams": ["ws://x/"], "idle_timeout": -1, "colour": "red"},
         ["idle_timeout: Input should be greater than or equal to 0.1 (got -1)", "colour: unknown field"]),
        ({"name": "bad", "path": "/ws/rooms/{room}", "upstreams": ["ws://x/{nope}"]},
         ["upstreams[0].url: placeholder(s) nope not defined by path '/ws/rooms/{room}'"]),
        ({"name": "bad", "path": "/ws/{what}", "upstreams": ["ws://x/"]},
         ["path: '/ws/{what}' overlaps API 'echo' path '/ws/echo'"]),
        ({"path": "/ws/bad", "upstreams": ["ws://x/"]}, ["name: Field required"]),
        ({"name": "bad", "path": "/ws/bad"}, ["upstreams: Field required"]),
        ([1, 2], ["(top level): expected a JSON object"]),
    ],
    ids=["url", "range-and-unknown", "placeholder", "overlap", "no-name", "no-upstreams", "not-an-object"],
)  # fmt: skip
async def test_invalid_api_is_422_with_field_paths_and_nothing_changes(
    managed: Managed, body: Any, problems: list[str]
) -> None:
    before = await _snapshot(managed)
    async with managed.http() as http:
        response = await http.post("apis", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["problems"] == problems
    assert await _snapshot(managed) == before


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "TEXT/PLAIN"],
)  # fmt: skip
async def test_a_body_a_cross_site_page_could_send_is_a_415_and_changes_nothing(
    managed: Managed, upstream: UpstreamServer, content_type: str | None
) -> None:
    """``<form enctype="text/plain">`` posts a JSON-shaped body cross-site without a preflight, and a
    ``no-cors`` fetch an untyped Blob: with an ``auth`` that trusts a cookie or a client certificate, a
    page the admin visits could create an API (more in ``test_attack_management_csrf.py``)."""
    before = await _snapshot(managed)
    body = json.dumps(api("csrf", "/ws/csrf", upstream)).encode()
    async with managed.http() as http:
        response = await http.post("apis", content=body, headers={"content-type": content_type} if content_type else {})
        assert response.status_code == 415
        assert response.headers["content-type"] == "application/problem+json"
        assert await _snapshot(managed) == before
        typed = await http.post("apis", content=body, headers={"content-type": "application/json; charset=utf-8"})
        assert typed.status_code == 201


async def test_other_invalid_bodies_and_requests_change_nothing(managed: Managed, upstream: UpstreamServer) -> None:
    before = await _snapshot(managed)
    async with managed.http() as http:
        not_json = await http.post("apis", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and not_json.json()["problems"][0].startswith("(body): ")
        renamed = await http.put("apis/echo", json=api("other", "/ws/echo", upstream))
        assert renamed.status_code == 422 and renamed.json()["problems"][0].startswith("name: 'other' is not 'echo'")
        bad_put = await http.put("apis/echo", json={"upstreams": []})
        assert bad_put.json()["problems"] == ["path: Field required", "upstreams: List should have at least 1 item "
                                              "after validation, not 0 (got [])"]  # fmt: skip
        assert (await http.post("apis", json=api("echo", "/ws/e2", upstream))).status_code == 409
        assert (await http.put("apis/nope", json=api("nope", "/ws/n", upstream))).status_code == 404
        assert (await http.put("apis/echo", json=api("echo", "/ws/e", upstream), headers={"If-Match": '"stale"'})
                ).status_code == 412  # fmt: skip
        product = await http.post("products", json={"name": "p", "apis": ["echo", "ghost"]})
        assert product.status_code == 422 and product.json()["problems"] == ["apis[1]: no API named 'ghost'"]
        assert (await http.post("products", json={"name": "p", "apis": "echo"})).status_code == 422
        subscription = await http.post("subscriptions", json={"product": "nope"})
        assert subscription.json()["problems"] == ["product: no product named 'nope'"]
        for code in (1005, 1006, 999, 5000):
            kick = await http.post("connections/x/close", json={"code": code})
            assert kick.status_code == 422, code
        assert (await http.post("connections/x/messages", json={"text": 1})).status_code == 422
    assert await _snapshot(managed) == before


async def test_if_match_with_the_current_etag_succeeds(managed: Managed, upstream: UpstreamServer) -> None:
    async with managed.http() as http:
        tag = (await http.get("apis/echo")).headers["etag"]
        first = await http.put("apis/echo", json=api("echo", "/ws/echo", upstream, idle_timeout=5),
                               headers={"If-Match": tag})  # fmt: skip
        second = await http.put("apis/echo", json=api("echo", "/ws/echo", upstream, idle_timeout=6),
                                headers={"If-Match": tag})  # fmt: skip
    assert (first.status_code, second.status_code) == (200, 412)
    assert first.headers["etag"] != tag


async def test_concurrent_creates_are_all_kept(managed: Managed, upstream: UpstreamServer) -> None:
    async with managed.http() as http:
        responses = await asyncio.gather(*(http.post("apis", json=api(f"a{i}", f"/ws/a{i}", upstream))
                                           for i in range(20)))  # fmt: skip
        assert [r.status_code for r in responses] == [201] * 20
        names = [a["name"] for a in (await http.get("apis")).json()["apis"]]
    assert sorted(names) == sorted(["echo", *(f"a{i}" for i in range(20))])
    assert len(json.loads(managed.state.read_text())["apis"]) == 20


async def test_concurrent_creates_of_one_name_admit_exactly_one(managed: Managed, upstream: UpstreamServer) -> None:
    async with managed.http() as http:
        responses = await asyncio.gather(*(http.post("apis", json=api("same", f"/ws/same{i}", upstream))
                                           for i in range(10)))  # fmt: skip
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9


async def test_concurrent_updates_with_one_etag_let_exactly_one_win(managed: Managed, upstream: UpstreamServer) -> None:
    async with managed.http() as http:
        tag = (await http.get("apis/echo")).headers["etag"]
        responses = await asyncio.gather(*(http.put("apis/echo", json=api("echo", "/ws/echo", upstream, cooldown=i),
                                                    headers={"If-Match": tag}) for i in range(8)))  # fmt: skip
        statuses = sorted(r.status_code for r in responses)
        winner = next(r for r in responses if r.status_code == 200).json()["cooldown"]
        assert (await http.get("apis/echo")).json()["cooldown"] == winner
    assert statuses == [200] + [412] * 7


async def test_products_and_subscriptions_keys_shown_once_and_stored_hashed(managed: Managed) -> None:
    async with managed.client() as client, managed.http() as http:
        product = await client.create_product("starter", ["echo"], display_name="Starter")
        assert product == {"name": "starter", "display_name": "Starter", "apis": ["echo"],
                           "subscription_required": True, "policies": [],
                           "message_policies": {"inbound": [], "outbound": [], "error_reply": None}}  # fmt: skip
        assert (await http.post("products", json={"name": "starter"})).status_code == 409
        created = await client.create_subscription("starter", name="alice", subscription_id="alice-1")
        key = created["key"]
        assert (created["id"], created["state"]) == ("alice-1", "active")
        shown = await client.get_subscription("alice-1")
        assert "key" not in shown and "key_sha256" not in shown
        assert key not in json.dumps(await client.list_subscriptions("starter"))
        stored = managed.state.read_text()
        assert key not in stored and hash_key(key) in stored
        assert (await client.suspend_subscription("alice-1"))["state"] == "suspended"
        assert (await client.activate_subscription("alice-1"))["state"] == "active"
        regenerated = await client.regenerate_key("alice-1")
        assert regenerated["key"] != key
        stored_subscriptions = [SubscriptionResource.model_validate(s) for s in json.loads(managed.state.read_text())
                                ["subscriptions"].values()]  # fmt: skip
        stored_digests = {s.key_sha256 for s in stored_subscriptions}
        assert hash_key(regenerated["key"]) in stored_digests and hash_key(key) not in stored_digests
        # The product guards the API at the handshake: only the current key opens it.
        assert (await expect_status(managed.url("/ws/echo"), additional_headers={"X-Subscription-Key": key}))[0] == 401
        async with await connect(
            managed.url("/ws/echo"), additional_headers={"X-Subscription-Key": regenerated["key"]}
        ):
            pass
        assert (await http.delete("products/starter")).status_code == 409  # still subscribed
        assert (await http.delete("apis/echo")).status_code == 409  # still in a product
        await client.delete_subscription("alice-1")
        await client.delete_product("starter", force=True)  # echo is open after: said, and forced
        assert await client.list_products() == [] and await client.list_subscriptions() == []
        assert (await http.post("subscriptions/alice-1/suspend", json={})).status_code == 404


async def test_a_client_credentials_connection_is_listed_under_its_client(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """A token without ``sub`` is its client's (``azp``, ``client_id``, ``appid``): the subject listed is the
    principal a refresh on the connection must keep, not null for every such client alike."""
    policy = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}
    config = {"apis": [api("echo", "/ws/echo", upstream, policies=[policy])]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        for claims, subject in (({"sub": None, "azp": "billing"}, "billing"), ({"azp": "web"}, "alice")):
            bearer = {"Authorization": f"Bearer {token(**claims)}"}
            async with await connect(running.url("/ws/echo"), additional_headers=bearer), running.client() as client:
                (live,) = await client.list_connections()
                assert live["subject"] == subject


async def test_live_connections_listed_messaged_and_kicked(managed: Managed) -> None:
    async with await connect(managed.url("/ws/echo")) as ws, managed.client() as client, managed.http() as http:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        (live,) = await client.list_connections()
        assert (live["api"], live["subject"], live["subscription"]) == ("echo", None, None)
        assert live["client"].startswith("127.0.0.1:")
        assert (live["messages_in"], live["bytes_in"], live["messages_out"], live["bytes_out"]) == (1, 5, 1, 5)
        assert await client.list_connections(api="other") == []
        await client.send(live["id"], "from management")
        assert await ws.recv() == "from management"
        await client.send(live["id"], b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        sent = await http.post(f"connections/{live['id']}/messages", json={"json": {"a": [1]}})
        assert sent.status_code == 200 and await ws.recv() == '{"a": [1]}'
        binary = await http.post(f"connections/{live['id']}/messages", json={"binary": base64.b64encode(b"b").decode()})
        assert binary.status_code == 200 and await ws.recv() == b"b"
        assert (await http.post("connections/nope/messages", json={"text": "x"})).status_code == 404
        assert (await http.post("connections/nope/close", json={})).status_code == 404
        await client.kick(live["id"], 4001, "kicked by admin")
        assert await expect_close(ws) == (4001, "kicked by admin")


async def test_products_from_the_file_are_listed_kept_and_subscribable(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The file seeds products; the API lists them, refuses to delete them, and can subscribe to them."""
    product = {"name": "gold", "apis": ["echo"], "policies": [{"set-header": {"header": "X-Plan", "value": "gold"}}]}
    config = {"apis": [api("echo", "/ws/echo", upstream)], "products": [product]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.client() as client, running.http() as http:
            (listed,) = await client.list_products()
            assert listed["name"] == "gold" and listed["policies"] == product["policies"]
            assert (await http.delete("products/gold")).status_code == 409
            assert (await http.post("products", json={"name": "gold"})).status_code == 409
            key = (await client.create_subscription("gold", subscription_id="s-gold"))["key"]
        async with await connect(running.url("/ws/echo"), additional_headers={"X-Subscription-Key": key}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert upstream.handshakes[-1].header("x-plan") == "gold"  # the product's own policy ran


async def test_subscriptions_from_the_file_are_listed_and_cannot_be_changed_here(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The file's subscriptions are listed first (no key hash, no created_at); changing them here is a 409."""
    file_sub = {"id": "s-file", "product": "gold", "name": "file", "key_sha256": "AB" * 32, "state": "suspended"}
    config = {
        "apis": [api("echo", "/ws/echo", upstream)],
        "products": [{"name": "gold", "apis": ["echo"]}],
        "subscriptions": [file_sub],
    }
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.client() as client, running.http() as http:
            await client.create_subscription("gold", subscription_id="s-api")
            listed = await client.list_subscriptions()
            assert [s["id"] for s in listed] == ["s-file", "s-api"]
            assert listed[0]["state"] == "suspended" and listed[0]["created_at"] is None
            assert "key_sha256" not in listed[0] and listed[1]["created_at"] is not None
            assert (await client.get_subscription("s-file"))["name"] == "file"
            for action in ("suspend", "activate", "regenerate-key"):
                assert (await http.post(f"subscriptions/s-file/{action}", json={})).status_code == 409
            assert (await http.delete("subscriptions/s-file")).status_code == 409
            assert (await http.post("subscriptions", json={"product": "gold", "id": "s-file"})).status_code == 409
            assert [s["id"] for s in await client.list_subscriptions(product="gold")] == ["s-file", "s-api"]
