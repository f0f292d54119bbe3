"""A change made through the management API answers with the configuration warnings that concern it.

An API created with ``POST /_gateway/apis`` that read its JWT from a cookie and skipped the file's
``check-origin`` (cross-site WebSocket hijacking) was a silent 201: the warning reached only the
server log, never the operator working through the console, the command line or the SDK. Every
change that alters the configuration now answers with ``warnings`` when there are any: about the API
or product it wrote, or new (a product deleted took the ``check-origin`` its APIs ran).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from support.management import Managed, api, managed_gateway
from support.processes import EXE, cli_env
from support.upstream import UpstreamServer

ORIGIN = {"check-origin": {"name": "origins", "allowed": ["https://app.example"]}}
SECRET = "cookie-jwt-secret-" + "s" * 20
JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": SECRET, "token": [{"cookie": "access_token"}]}}
HIJACKING = "cross-site WebSocket hijacking"
# No secret: GET and the answers show a secret as REDACTED, so a document with one cannot be sent back as it is.
JWKS_JWT = {
    "validate-jwt": {
        "algorithms": ["RS256"], "jwks_url": "https://issuer.example/jwks.json", "token": [{"cookie": "access_token"}]
    }
}  # fmt: skip


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"policies": [ORIGIN], "apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        yield running


def _cookie_api(upstream: UpstreamServer, **fields: Any) -> dict[str, Any]:
    return api("chat", "/ws/chat", upstream, policies=[JWT], skip_policies=["origins"], **fields)


def _sendable_cookie_api(upstream: UpstreamServer) -> dict[str, Any]:
    """A cookie-token API without check-origin whose answer holds no REDACTED secret."""
    return api("chat", "/ws/chat", upstream, policies=[JWKS_JWT], skip_policies=["origins"])


def _hijacking(warnings: list[str]) -> list[str]:
    return [w for w in warnings if HIJACKING in w]


async def test_creating_a_cookie_token_api_without_check_origin_answers_with_the_warning(
    managed: Managed, upstream: UpstreamServer
) -> None:
    """The finding: 201 and no ``warnings``; the API is named (not apis[1]) and the secret is not shown."""
    async with managed.http() as http:
        created = await http.post("apis", json=_cookie_api(upstream))
    assert created.status_code == 201, created.text
    warnings = created.json()["warnings"]
    assert len(_hijacking(warnings)) == 1 and warnings[0].startswith("API 'chat': "), warnings
    assert SECRET not in created.text


async def test_replacing_answers_with_the_warning_until_it_is_fixed(managed: Managed, upstream: UpstreamServer) -> None:
    """A save of the API still wrong says so again; a save that fixes it has no ``warnings`` field."""
    async with managed.http() as http:
        assert (await http.post("apis", json=_cookie_api(upstream))).status_code == 201
        again = await http.put("apis/chat", json=_cookie_api(upstream))  # sent as it is
        fixed = await http.put("apis/chat", json=api("chat", "/ws/chat", upstream, policies=[JWT]))
    assert again.status_code == 200 and len(_hijacking(again.json()["warnings"])) == 1, again.text
    assert fixed.status_code == 200 and "warnings" not in fixed.json(), fixed.text


async def test_a_clean_change_answers_as_before(managed: Managed, upstream: UpstreamServer) -> None:
    """Warnings about another API are not repeated in the answer to a change that did not touch it."""
    async with managed.http() as http:
        assert (await http.post("apis", json=_cookie_api(upstream))).status_code == 201
        other = await http.post("apis", json=api("other", "/ws/other", upstream))
        deleted = await http.delete("apis/other")
    assert other.status_code == 201 and "warnings" not in other.json(), other.text
    assert deleted.status_code == 204 and deleted.content == b""


async def test_a_product_that_brings_a_cookie_token_answers_with_the_warning(managed: Managed) -> None:
    """A product's policies run for its APIs: a cookie token it adds to an API that skips check-origin."""
    async with managed.http() as http:
        assert (await http.put("apis/echo", json={**_echo(managed), "skip_policies": ["origins"]})).status_code == 200
        created = await http.post("products", json={"name": "p", "apis": ["echo"], "policies": [JWT]})
    assert created.status_code == 201, created.text
    warnings = created.json()["warnings"]
    assert len(_hijacking(warnings)) == 1 and warnings[0].startswith("API 'echo': "), warnings
    assert SECRET not in created.text


async def test_deleting_the_product_that_ran_check_origin_answers_with_the_warning(
    managed: Managed, upstream: UpstreamServer
) -> None:
    """The product gave the API its only check-origin: deleting it is a 200 naming the API (the SDK returns them)."""
    product_origin = {"check-origin": {"allowed": ["https://app.example"]}}
    async with managed.http() as http, managed.client() as client:
        created = await client.create_product("p", ["echo"], policies=[product_origin])
        assert "warnings" not in created
        replaced = await client.replace_api("echo", {**_echo(managed), "policies": [JWT], "skip_policies": ["origins"]})
        assert "warnings" not in replaced, replaced
        warnings = await client.delete_product("p", force=True)
        assert len(_hijacking(warnings)) == 1 and warnings[0].startswith("API 'echo': "), warnings
        # the raw answer: 200 with the warnings (the same deletion with none is a 204, as before)
        await client.create_product("q", ["echo"], policies=[product_origin])
        response = await http.delete("products/q", params={"force": "true"})
    assert response.status_code == 200 and _hijacking(response.json()["warnings"]), response.text


async def test_the_command_line_prints_the_warnings_on_stderr(
    managed: Managed, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """``apis create`` prints the API as YAML on stdout, and each warning as ``warning: ...`` on stderr."""
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(_cookie_api(upstream)))
    process = await asyncio.create_subprocess_exec(
        str(EXE), "apis", "create", str(path), "--url", managed.base,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err
    assert "warning: API 'chat': " in err.decode() and HIJACKING in err.decode(), err
    assert "name: chat" in out.decode() and "warnings" not in out.decode(), out


async def test_the_openapi_document_describes_the_warnings(managed: Managed) -> None:
    async with managed.http(None) as http:
        document = (await http.get("openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    created = paths["/apis"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert schemas[created["$ref"].rpartition("/")[2]]["properties"]["warnings"]["readOnly"] is True, created
    for path in ("/apis/{name}", "/products/{name}"):
        deleted = paths[path]["delete"]["responses"]
        assert "204" in deleted and "warnings" in json.dumps(deleted["200"]), deleted


# -- warnings are output only: an answer sent back as it is is taken (it was a 422 when it had warnings) --


async def test_the_answer_to_a_create_is_taken_back_as_it_is(managed: Managed, upstream: UpstreamServer) -> None:
    """The finding: PUT with the 201 body and its If-Match was 422 ``warnings: unknown field``."""
    async with managed.http() as http:
        created = await http.post("apis", json=_sendable_cookie_api(upstream))
        assert created.status_code == 201 and _hijacking(created.json()["warnings"]), created.text
        document = {**created.json(), "max_lifetime": 60}
        replaced = await http.put("apis/chat", json=document, headers={"If-Match": created.headers["etag"]})
        assert replaced.status_code == 200 and _hijacking(replaced.json()["warnings"]), replaced.text
        again = await http.put("apis/chat", json=replaced.json(), headers={"If-Match": replaced.headers["etag"]})
        read = await http.get("apis/chat")
    assert again.status_code == 200, again.text
    assert read.json()["max_lifetime"] == 60 and "warnings" not in read.json(), read.text
    assert read.headers["etag"] == again.headers["etag"]  # the warnings were not stored with the API


async def test_a_warnings_field_of_any_shape_is_not_stored(managed: Managed, upstream: UpstreamServer) -> None:
    """The server drops a top-level ``warnings`` whatever it holds: it never reaches the configuration."""
    async with managed.http() as http:
        created = await http.post("apis", json={**api("odd", "/ws/odd", upstream), "warnings": {"x": 1}})
        read = await http.get("apis/odd")
        exported = await http.get("config")
    assert created.status_code == 201 and "warnings" not in created.json(), created.text
    assert "warnings" not in read.json() and "warnings" not in json.dumps(exported.json()["apis"]), read.text


async def test_the_answer_to_a_product_create_is_taken_back_as_it_is(managed: Managed) -> None:
    """A product's answer with ``warnings``, sent as a new product's body, is a 201 (it was a 422)."""
    async with managed.http() as http:
        assert (await http.put("apis/echo", json={**_echo(managed), "skip_policies": ["origins"]})).status_code == 200
        created = await http.post("products", json={"name": "p", "apis": ["echo"], "policies": [JWKS_JWT]})
        assert created.status_code == 201 and _hijacking(created.json()["warnings"]), created.text
        again = await http.post("products", json={**created.json(), "name": "p2"})
        read = await http.get("products/p2")
    assert again.status_code == 201 and _hijacking(again.json()["warnings"]), again.text
    assert "warnings" not in read.json(), read.text


async def test_the_sdk_returns_the_resource_and_the_warnings_apart(managed: Managed, upstream: UpstreamServer) -> None:
    """The finding: ``doc = await create_api(...); doc[...] = ...; await replace_api(name, doc)`` was a 422."""
    async with managed.client() as client:
        doc = await client.create_api(_sendable_cookie_api(upstream))
        assert "warnings" not in doc and len(_hijacking(doc.warnings)) == 1, doc
        doc["max_lifetime"] = 60
        replaced = await client.replace_api("chat", doc)
        assert "warnings" not in replaced and _hijacking(replaced.warnings) and replaced["max_lifetime"] == 60
        clean = await client.create_api(api("clean", "/ws/clean", upstream))
        assert clean.warnings == [] and clean == await client.get_api("clean")
        await client.replace_api("echo", {**_echo(managed), "skip_policies": ["origins"]})
        product = await client.create_product("p", ["echo"], policies=[JWKS_JWT])
    assert "warnings" not in product and _hijacking(product.warnings) and product["apis"] == ["echo"], product


async def test_the_command_lines_json_is_the_resource_and_can_be_sent_back(
    managed: Managed, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The finding: ``apis create f --json > out.json`` then ``apis update chat out.json`` was a 422."""
    source, out = tmp_path / "chat.json", tmp_path / "out.json"
    source.write_text(json.dumps(_sendable_cookie_api(upstream)))
    code, printed, err = await _cli("apis", "create", str(source), "--json", "--url", managed.base)
    assert code == 0 and "warning: API 'chat': " in err and HIJACKING in err, err
    document = json.loads(printed)
    assert document["name"] == "chat" and "warnings" not in document, printed
    out.write_text(json.dumps({**document, "max_lifetime": 60}))
    code, printed, err = await _cli("apis", "update", "chat", str(out), "--json", "--url", managed.base)
    assert code == 0 and HIJACKING in err, err
    assert json.loads(printed)["max_lifetime"] == 60 and "warnings" not in json.loads(printed), printed


async def _cli(*args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(EXE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env()
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


# -- the OpenAPI document: every answer, warned or not, is valid against it --

JSON = {"Content-Type": "application/json"}  # a change without a body is typed too


def _validator(document: dict[str, Any], path: str, method: str, status: str) -> jsonschema_rs.Validator:
    schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


async def test_warned_and_clean_answers_are_valid_against_the_openapi_document(
    managed: Managed, upstream: UpstreamServer
) -> None:
    """The finding: ``allOf: [ApiConfig, {warnings}]`` with ``additionalProperties: false`` refused every warned
    answer; the subscription's ``allOf: [Subscription, {key}]`` refused every answer with its key the same way."""
    product_origin = {"check-origin": {"allowed": ["https://app.example"]}}
    async with managed.http() as http:
        document = (await http.get("openapi.json")).json()
        answers = [
            ("/apis", "post", await http.post("apis", json=_cookie_api(upstream))),
            ("/apis", "post", await http.post("apis", json=api("clean", "/ws/clean", upstream))),
            ("/apis/{name}", "put", await http.put("apis/chat", json=_cookie_api(upstream))),
            ("/apis/{name}", "put", await http.put("apis/clean", json=api("clean", "/ws/clean2", upstream))),
            ("/apis/{name}", "get", await http.get("apis/chat")),
            ("/products", "post", await http.post("products", json={"name": "p", "apis": ["echo"]})),
            ("/products/{name}", "get", await http.get("products/p")),
            ("/subscriptions", "post", await http.post("subscriptions", json={"product": "p", "id": "s1"})),
            (
                "/subscriptions/{id}/regenerate-key",
                "post",
                await http.post("subscriptions/s1/regenerate-key", headers=JSON),
            ),
        ]
        assert (await http.delete("subscriptions/s1")).status_code == 204
        assert (await http.delete("products/p", params={"force": "true"})).status_code == 204
        await http.put("apis/echo", json={**_echo(managed), "policies": [JWT], "skip_policies": ["origins"]})
        answers += [
            ("/products", "post", await http.post("products", json={"name": "q", "apis": ["echo"], "policies": [JWT]})),
            ("/products", "post", await http.post("products", json={"name": "o", "apis": ["echo"],
                                                                     "policies": [product_origin]})),
            ("/products/{name}", "delete", await http.delete("products/o", params={"force": "true"})),
        ]  # fmt: skip
    warned = [response for *_, response in answers if "warnings" in response.json()]
    assert len(warned) == 5, [response.text for response in warned]  # chat twice, products q and o, deleting o
    for path, method, response in answers:
        assert response.status_code in (200, 201), response.text
        errors = [error.message for error in _validator(document, path, method, str(response.status_code))
                  .iter_errors(response.json())]  # fmt: skip
        assert errors == [], (path, method, response.text)


def _echo(managed: Managed) -> dict[str, Any]:
    """The file's API ``echo`` as an API document (its path and upstream)."""
    echo = next(a for a in managed.gateway.config.apis if a.name == "echo")
    return {"name": "echo", "path": echo.path, "upstreams": [u.url for u in echo.upstreams]}
