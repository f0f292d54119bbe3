"""A module the operator allows whole (``allowed_asgi_upstreams: [module]``) admits its own apps only.

An admin-token holder, given ``allowed_asgi_upstreams: [apps]`` for an ``apps`` module that imports
``asyncio``, created APIs whose in-process upstream was ``asgi:apps:asyncio.sleep`` (an attribute path
through the module into another one), ``asgi:apps:sleep`` (``from asyncio import sleep``) and
``asgi:apps:_hidden`` (a private coroutine): each an async callable, so ``201``, and every handshake then
called it with the scope, the receive and the send. Through a module's imports every async function of
every module it reaches was an app to the gate. Now, under a module allowed whole, the attribute path
may not reach another module or a private name, and a function must be written in that module (or one
under it): ``422`` naming the field, logged once as a WARNING. A target allowed exactly, and the
configuration file's own, are imported as they are named. Real uvicorn, the management API.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from asgi_ws_gateway import load_config
from support.clients import connect
from support.management import api, managed_gateway
from support.syspath import prepend_sys_path
from support.upstream import UpstreamServer

MODULE = """
import asyncio
from asyncio import sleep


async def app(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": message.get("text")})
    await send({"type": "websocket.close", "code": 1000})


async def _hidden(scope, receive, send):
    raise RuntimeError("never to be served")
"""


@pytest.fixture
def apps_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"allowed_apps_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    prepend_sys_path(monkeypatch, str(tmp_path))
    return name


async def test_a_whole_module_admits_no_object_of_another_module_nor_a_private_one(
    upstream: UpstreamServer, tmp_path: Path, apps_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    refused = {
        "asyncio.sleep": "reaches another module, 'asyncio'",
        "sleep": "is a function of 'asyncio.tasks'",
        "_hidden": "'_hidden' is private to",
    }
    with managed_gateway(config, tmp_path / "state.json", allowed_asgi_upstreams=[apps_module]) as managed:
        async with managed.http() as http:
            for i, (attr, problem) in enumerate(refused.items()):
                body = {"name": f"x{i}", "path": f"/ws/x{i}", "upstreams": [f"asgi:{apps_module}:{attr}"]}
                with caplog.at_level("WARNING", logger="asgi_ws_gateway"):
                    answer = await http.post("apis", json=body)
                assert answer.status_code == 422, answer.text
                (found,) = answer.json()["problems"]
                assert found.startswith("upstreams[0]: ") and problem in found, found
                assert "not allowed through the management API" in found
                assert (await http.get(f"apis/x{i}")).status_code == 404
            answer = await http.post("apis", json={"name": "own", "path": "/ws/own",
                                                   "upstreams": [f"asgi:{apps_module}:app"]})  # fmt: skip
            assert answer.status_code == 201, answer.text
        async with await connect(managed.url("/ws/own")) as ws:
            await ws.send("its own app")
            assert await ws.recv() == "its own app"
    warnings = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.management.service"]
    assert len(warnings) == len(refused), warnings
    assert not any(r.exc_info for r in caplog.records)


async def test_a_target_allowed_exactly_is_imported_as_named(
    upstream: UpstreamServer, tmp_path: Path, apps_module: str
) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    target = f"{apps_module}:asyncio.sleep"  # the operator's own choice, however odd
    with managed_gateway(config, tmp_path / "state.json", allowed_asgi_upstreams=[target]) as managed:
        async with managed.http() as http:
            answer = await http.post("apis", json={"name": "x", "path": "/ws/x", "upstreams": [f"asgi:{target}"]})
            assert answer.status_code == 201, answer.text


def test_the_configuration_file_names_what_it_likes(apps_module: str) -> None:
    gateway = load_config({"apis": [{"name": "a", "path": "/a", "upstreams": [f"asgi:{apps_module}:sleep"]}]})
    assert gateway.apis[0].upstreams[0].app is not None
