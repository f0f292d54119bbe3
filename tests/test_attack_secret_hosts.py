"""An admin-token holder reading the operator's upstream credentials.

Two ways, both closed here: products and ``set-query-parameter``/``rewrite-uri`` values were shown
as written (``GET /products`` returned a product's ``set-header`` key and a ``validate-jwt`` HMAC
secret), and an API created or changed through the management API could inherit a global or product
``set-header`` carrying the operator's credential and send it to a server of the holder's choosing.
Real uvicorn, the management API, recording upstreams: the "attacker's" server is a second upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import ConfigError
from asgi_ws_gateway.config.hosts import parse_host
from asgi_ws_gateway.management.disclosure import public_document
from asgi_ws_gateway.policies.build import load_config
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
JWT_SECRET = "j" * 40
AUTH = {"set-header": {"header": "X-Internal-Auth", "value": SECRET}}


@pytest.fixture
def attacker() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


# --- what GET shows ------------------------------------------------------------------------------


async def test_products_show_no_secret(tmp_path: Any, upstream: UpstreamServer) -> None:
    """``GET /products`` and ``/products/{name}`` showed a product's policies as written."""
    policies = [
        AUTH,
        {"set-query-parameter": {"parameter": "access_token", "value": SECRET}},
        {"validate-jwt": {"secret": JWT_SECRET, "algorithms": ["HS256"]}},
        {"set-header": {"header": "X-Tenant", "value": "acme"}},
    ]
    config = {
        "apis": [api("chat", "/chat", upstream)],
        "products": [{"name": "gold", "apis": ["chat"], "subscription_required": False, "policies": policies}],
    }
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            for path in ("products", "products/gold", "config"):
                response = await http.get(path)
                assert response.status_code == 200
                assert SECRET not in response.text and JWT_SECRET not in response.text, path
                assert "acme" in response.text, path
            shown = (await http.get("products/gold")).json()["policies"]
            assert shown[0]["set-header"]["value"] == "REDACTED"
            assert shown[1]["set-query-parameter"]["value"] == "REDACTED"
            assert shown[2]["validate-jwt"]["secret"] == "REDACTED"
            created = await http.post("products", json={"name": "silver", "apis": ["chat"], "policies": [AUTH]})
            assert created.status_code == 201 and SECRET not in created.text


@pytest.mark.parametrize("parameter", ["access_token", "api_key", "Signature", "client-secret", "sig"])
def test_a_credential_query_parameter_value_is_redacted(parameter: str) -> None:
    document = {"policies": [{"set-query-parameter": {"parameter": parameter, "value": SECRET}},
                             {"set-query-parameter": {"parameter": "room", "value": "lobby"}}]}  # fmt: skip
    shown = public_document(document)["policies"]
    assert shown[0]["set-query-parameter"]["value"] == "REDACTED"
    assert shown[1]["set-query-parameter"]["value"] == "lobby"


@pytest.mark.parametrize("header", ["X-Signature", "X-Request-Sig", "X-Db-Pwd", "X-Credential", "X-Passphrase"])
def test_a_credential_header_is_named_by_the_same_words_the_logs_redact(header: str) -> None:
    """The management API had its own, shorter list of credential words than the log redaction:
    a global set-header X-Signature was shown as written by GET (and not guarded by the upstream
    hosts rule) while the logs redacted it. One list now (redact.CREDENTIAL_WORDS)."""
    document = {"policies": [{"set-header": {"header": header, "value": SECRET}}]}
    assert public_document(document)["policies"][0]["set-header"]["value"] == "REDACTED"


def test_a_rewrite_template_shows_no_query_credential() -> None:
    template = f"/rooms/{{path.room}}?access_token={SECRET}&room=1#sig={SECRET}"
    shown = public_document({"rewrite-uri": {"template": template}})["rewrite-uri"]["template"]
    assert shown == "/rooms/{path.room}?access_token=REDACTED&room=1#sig=REDACTED"
    assert public_document({"path": "/ws/chat/{room}"}) == {"path": "/ws/chat/{room}"}


async def test_a_query_secret_sent_back_is_a_422(tmp_path: Any, upstream: UpstreamServer) -> None:
    policies = [{"set-query-parameter": {"parameter": "api_key", "value": SECRET}},
                {"rewrite-uri": {"template": f"/echo?sig={SECRET}"}}]  # fmt: skip
    config = {"apis": [api("chat", "/chat", upstream, policies=policies)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            assert SECRET not in got.text
            sent_back = await http.put("apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422
            assert [p.split(":")[0] for p in sent_back.json()["problems"]] == [
                "policies[0].set-query-parameter.value",
                "policies[1].rewrite-uri.template",
            ]


# --- where the operator's secrets may go ---------------------------------------------------------


def _config(upstream: UpstreamServer, **top: Any) -> dict[str, Any]:
    return {"apis": [api("chat", "/chat", upstream)], **top}


async def test_an_api_created_for_another_host_cannot_inherit_a_global_secret(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    with managed_gateway(_config(upstream, policies=[AUTH]), tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=api("mine", "/mine", attacker))
            assert refused.status_code == 422
            (problem,) = refused.json()["problems"]
            assert problem.startswith(f"upstreams[0]: 127.0.0.1:{attacker.port} is not a host the configuration")
            assert "the global set-header X-Internal-Auth" in problem and SECRET not in problem
            # A backend chosen by set-backend-service is a destination too.
            via_policy = api("mine", "/mine", upstream)
            via_policy["policies"] = [{"set-backend-service": {"base_url": f"ws://127.0.0.1:{attacker.port}"}}]
            assert (await http.post("apis", json=via_policy)).status_code == 422
            # Opting out of the policy, or staying on the file's hosts, is allowed.
            skipped = await http.post("apis", json=api("mine", "/mine", attacker, skip_policies=["set-header"]))
            assert skipped.status_code == 201, skipped.text
            same_host = await http.post("apis", json=api("also", "/also", upstream))
            assert same_host.status_code == 201, same_host.text
        async with await connect(running.url("/mine")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        async with await connect(running.url("/also")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert all("x-internal-auth" not in h.headers for h in attacker.handshakes)
    assert [h.headers["x-internal-auth"] for h in upstream.handshakes] == [[SECRET]]


async def test_a_credential_in_an_inherited_rewrite_template_is_a_secret_too(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    """A global ``rewrite-uri`` whose template carries the operator's key in its query (shown REDACTED
    by GET) went to any host an API created through the API named: the attacker read it in its URL."""
    rewrite = {"rewrite-uri": {"template": f"/echo?api_key={SECRET}"}}
    with managed_gateway(_config(upstream, policies=[rewrite]), tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=api("mine", "/mine", attacker))
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            assert "the global rewrite-uri template (a credential in its URL)" in problem
            assert SECRET not in refused.text
            skipped = await http.post("apis", json=api("mine", "/mine", attacker, skip_policies=["rewrite-uri"]))
            assert skipped.status_code == 201, skipped.text
    assert not attacker.handshakes


async def test_a_file_api_moved_to_another_host_keeps_no_product_secret(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    """The API is the file's and in the file's product, whose policy sends a credential parameter."""
    secret = {"set-query-parameter": {"parameter": "access_token", "value": SECRET}}
    product = {"name": "gold", "apis": ["chat"], "subscription_required": False, "policies": [secret]}
    with managed_gateway(_config(upstream, products=[product]), tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            moved = {**got.json(), "upstreams": [attacker.url("/echo")]}
            refused = await http.put("apis/chat", json=moved, headers={"If-Match": got.headers["etag"]})
            assert refused.status_code == 422
            assert "product 'gold''s set-query-parameter access_token" in refused.json()["problems"][0]
            # An API outside the product inherits nothing: any host.
            assert (await http.post("apis", json=api("mine", "/mine", attacker))).status_code == 201


async def test_the_operator_may_allow_more_hosts(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    for allowed, status in (([f"127.0.0.1:{attacker.port + 1}"], 422), (["127.0.0.1"], 201), (["*"], 201)):
        config = _config(upstream, policies=[AUTH], management={"allowed_upstream_hosts": allowed})
        with managed_gateway(config, tmp_path / f"state-{status}-{len(allowed[0])}.json") as running:
            async with running.http() as http:
                created = await http.post("apis", json=api("mine", "/mine", attacker))
                assert created.status_code == status, (allowed, created.text)


async def test_without_an_inherited_secret_any_host_is_allowed(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    plain = {"set-header": {"header": "X-Tenant", "value": "acme"}}
    with managed_gateway(_config(upstream, policies=[plain]), tmp_path / "state.json") as running:
        async with running.http() as http:
            own = [{"set-header": {"header": "X-Api-Key", "value": "the-holder's-own-key"}}]
            own_secret = api("mine", "/mine", attacker, policies=own)
            assert (await http.post("apis", json=own_secret)).status_code == 201


@pytest.mark.parametrize(
    ("entry", "host"),
    [
        ("chat.internal", ("chat.internal", None)),
        ("Chat.Internal:9000", ("chat.internal", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        ("*.internal", ("*.internal", None)),
        ("*", ("*", None)),
    ],
)
def test_host_patterns(entry: str, host: tuple[str, int | None]) -> None:
    assert parse_host(entry) == host


@pytest.mark.parametrize(
    "entry", ["", "a:b", "h/x", "u@h", "a.*.b", "**", "h:99999", "h?x", "*x", "a b", "[", "h..x", "\u00e9.internal"]
)
def test_bad_host_patterns_fail_start_up_by_field_path(entry: str) -> None:
    document = {"management": {"allowed_upstream_hosts": ["ok.internal", entry]}}
    with pytest.raises(ConfigError, match=r"management\.allowed_upstream_hosts\[1\]"):
        load_config(document)


@given(st.text(max_size=40))
def test_any_host_pattern_parses_or_fails_cleanly(entry: str) -> None:
    try:
        host, port = parse_host(entry)
    except ValueError as exc:
        assert "host" in str(exc) or "wildcard" in str(exc)
    else:
        assert re.fullmatch(r"\*|(\*\.)?[a-z0-9_.-]+|[0-9a-f:.]+", host), host
        assert port is None or 0 <= port <= 65535


async def test_a_stored_api_that_would_take_a_new_file_secret_elsewhere_stops_start_up(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The API was created before the file sent a secret; the file now does: start-up names the API."""
    state = tmp_path / "state.json"
    with managed_gateway(_config(upstream), state) as running:
        async with running.http() as http:
            assert (await http.post("apis", json=api("mine", "/mine", attacker))).status_code == 201
    with pytest.raises(RuntimeError, match="did not start"), managed_gateway(_config(upstream, policies=[AUTH]), state):
        pass
    assert "the stored changes do not fit the configuration file:" in caplog.text
    assert f"apis[1].upstreams[0]: 127.0.0.1:{attacker.port} is not a host" in caplog.text
