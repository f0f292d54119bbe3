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

import pytest

from support.management import Managed, api, managed_gateway
from support.processes import EXE, cli_env
from support.upstream import UpstreamServer

ORIGIN = {"check-origin": {"name": "origins", "allowed": ["https://app.example"]}}
SECRET = "cookie-jwt-secret-" + "s" * 20
JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": SECRET, "token": [{"cookie": "access_token"}]}}
HIJACKING = "cross-site WebSocket hijacking"


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"policies": [ORIGIN], "apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        yield running


def _cookie_api(upstream: UpstreamServer, **fields: Any) -> dict[str, Any]:
    return api("chat", "/ws/chat", upstream, policies=[JWT], skip_policies=["origins"], **fields)


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
        paths = (await http.get("openapi.json")).json()["paths"]
    created = paths["/apis"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert any(part.get("properties", {}).get("warnings") for part in created["allOf"]), created
    for path in ("/apis/{name}", "/products/{name}"):
        deleted = paths[path]["delete"]["responses"]
        assert "204" in deleted and "warnings" in json.dumps(deleted["200"]), deleted


def _echo(managed: Managed) -> dict[str, Any]:
    """The file's API ``echo`` as an API document (its path and upstream)."""
    echo = next(a for a in managed.gateway.config.apis if a.name == "echo")
    return {"name": "echo", "path": echo.path, "upstreams": [u.url for u in echo.upstreams]}
