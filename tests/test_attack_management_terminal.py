"""The management command line against a hostile server: nothing it sends reaches the terminal raw.

A server's names, ids, URLs, errors and keys may hold an OSC 52 clipboard write (``\\x1b]52;``), a
screen clear, a carriage return and a forged line, or a bidi override. The command line prints each
through ``printable`` (escapes, one value on one line); ``--json`` prints the exact values, JSON-escaped.
And the free-text fields the API stores (a subscription's ``name``, ``display_name``) refuse control,
line-breaking and bidi characters with 422 by field path, in configuration files too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_ws_gateway import ConfigError, load_config
from support.configs import api_entry
from support.management import Managed, api, managed_gateway
from support.processes import cli
from support.servers import UvicornServer
from support.upstream import UpstreamServer

ESC = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07\x1b[2J\x1b[H\rFORGED: all good\n\u202egnp.exe"


def _raw(text: str) -> list[str]:
    """What a terminal would obey or break a line at, in ``text`` (its own newlines aside)."""
    return [c for c in text.replace("\n", "") if not c.isprintable() or c in "\x1b\x07\r\u202e"]


def _hostile() -> Starlette:
    """A fake management API whose every value holds escape sequences."""

    async def apis(request: Request) -> JSONResponse:
        return JSONResponse({"apis": [{"name": "chat" + ESC, "path": "/ws/" + ESC, "upstreams": [{"url": ESC}]}]})

    async def subscriptions(request: Request) -> JSONResponse:
        return JSONResponse({"subscriptions": [{"id": "s" + ESC, "product": "p", "name": ESC, "state": "active"}]})

    async def missing(request: Request) -> JSONResponse:
        problem = {"title": "Not Found" + ESC, "detail": "no such subscription" + ESC, "problems": ["x: " + ESC]}
        return JSONResponse(problem, 404)

    async def created(request: Request) -> JSONResponse:
        return JSONResponse({"id": "s1", "product": "p", "name": ESC, "key": "k" + ESC}, 201)

    async def connections(request: Request) -> JSONResponse:
        row = {"id": "c1" + ESC, "api": "chat", "client": ESC, "worker": "w"}
        return JSONResponse({"connections": [row], "total": 1})

    async def sent(request: Request) -> JSONResponse:
        return JSONResponse({"sent": True, "worker": "w" + ESC})

    return Starlette(
        routes=[
            Route("/apis", apis),
            Route("/subscriptions", subscriptions),
            Route("/subscriptions", created, methods=["POST"]),
            Route("/subscriptions/{id}", missing),
            Route("/connections", connections),
            Route("/connections/{id}/messages", sent, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with UvicornServer(_hostile()) as server:
        yield server.url("", scheme="http")


COMMANDS = {
    "apis list": ["apis", "list"],
    "subscriptions list": ["subscriptions", "list"],
    "subscriptions show": ["subscriptions", "show", "x"],
    "subscriptions create": ["subscriptions", "create", "p"],
    "connections list": ["connections", "list"],
    "connections send": ["connections", "send", "c1", "hi"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
async def test_a_hostile_servers_values_are_printed_as_escapes(hostile: str, command: list[str]) -> None:
    _, out, err = await cli(*command, "--url", hostile)
    assert _raw(out) == [] and _raw(err) == [], (out, err)
    assert "FORGED" in out + err and "\\x1b]52;c;" in out + err  # shown, as escapes
    assert not any(line.startswith("FORGED") for line in (out + err).splitlines())


async def test_json_output_keeps_the_exact_values(hostile: str) -> None:
    code, out, _ = await cli("apis", "list", "--json", "--url", hostile)
    assert code == 0 and _raw(out) == []
    assert json.loads(out)[0]["name"] == "chat" + ESC


async def test_an_error_from_a_hostile_server_is_one_escaped_line_per_problem(hostile: str) -> None:
    code, out, err = await cli("subscriptions", "show", "x", "--url", hostile)
    assert code == 3 and out == ""
    first, problem = err.splitlines()
    assert first.startswith("error: 404 Not Found\\x1b]52;c;") and "\\rFORGED: all good\\n\\u202egnp.exe" in first
    assert problem == "  x: \\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\\x07\\x1b[2J\\x1b[H\\rFORGED: all good\\n\\u202egnp.exe"


# -- the API refuses to store such text --


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"apis": [api("echo", "/ws/echo", upstream)], "products": [{"name": "gold", "apis": ["echo"]}]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        yield running


@pytest.mark.parametrize("text", ["a\x1b[2Jb", "a\nFORGED", "a\rb", "a\u202eb", "a\x07", "a\u2028b", "a\x9bb", "a\tb"])
async def test_a_subscription_name_with_control_or_bidi_characters_is_a_422(managed: Managed, text: str) -> None:
    before = managed.state.read_bytes() if managed.state.exists() else b""
    async with managed.http() as http:
        response = await http.post("subscriptions", json={"product": "gold", "name": text})
        assert response.status_code == 422
        (problem,) = response.json()["problems"]
        assert problem.startswith("name: control, line-breaking and bidi characters are not allowed")
        assert text not in problem
        ok = await http.post("subscriptions", json={"product": "gold", "name": 'Zoë O\'Brien — 東京 "VIP"'})
        assert ok.status_code == 201
    assert before != managed.state.read_bytes()  # only the second one was stored


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("products", {"name": "p2", "apis": ["echo"], "display_name": "Gold\x1b[2J"}),
        ("apis", {"name": "e2", "path": "/ws/e2", "upstreams": ["ws://127.0.0.1:9/"], "display_name": "E\u202e2"}),
    ],
    ids=["product", "api"],
)
async def test_a_display_name_with_control_characters_is_a_422(managed: Managed, path: str, body: Any) -> None:
    async with managed.http() as http:
        response = await http.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["problems"][0].startswith("display_name: control, line-breaking and bidi characters")


def test_a_configuration_file_with_such_text_is_refused_by_field_path(upstream: UpstreamServer) -> None:
    """``check`` and start-up report it as any other problem."""
    config = {
        "apis": [api_entry(upstream, name="echo", path="/ws/echo", display_name="Echo\x1b]52;c;eA==\x07")],
        "products": [{"name": "gold", "apis": ["echo"]}],
        "subscriptions": [{"id": "s1", "product": "gold", "name": "al\nice", "key_sha256": "ab" * 32}],
    }
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    problems = refused.value.problems
    assert any(p.startswith("apis[0].display_name: control, line-breaking and bidi") for p in problems), problems
    assert any(p.startswith("subscriptions[0].name: control, line-breaking and bidi") for p in problems), problems
    assert not _raw("\n".join(problems))
