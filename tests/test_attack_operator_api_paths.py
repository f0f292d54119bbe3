"""An API's path and size that no client could use are refused by field path, in the file and through
the management API, instead of being served as nothing (or as a traceback per message).

A request's path is matched segment by segment, each segment decoded once, so a path's literal text
is decoded text. ``/ws/caf%C3%A9`` was reached only by ``/ws/caf%25C3%25A9``, ``/ws/chat?v=1`` only
by ``/ws/chat%3Fv=1``; ``/ws/../x`` by no browser or proxy (they resolve it), while the gateway refused
every path resolving to it as a disguise of it. ``check`` said each was valid. ``max_message_size:
10**30`` was valid too, and every compressed message the relay read was an ``OverflowError``
traceback and a 1011.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.apis import MAX_MESSAGE_SIZE
from asgi_ws_gateway.routing import Router, param_problem, resolve_scope, split_path
from support.clients import connect
from support.configs import api_entry
from support.management import api, managed_gateway
from support.upstream import UpstreamServer


def _problems(**fields: Any) -> list[str]:
    try:
        load_config({"apis": [api_entry("ws://127.0.0.1:9/", **fields)]})
    except ConfigError as error:
        return error.problems
    return []


REFUSED = {
    "/ws/caf%C3%A9": "holds '%'",
    "/ws/a%2Fb/{room}": "holds '%'",
    "/ws/%2e%2e/{room}": "holds '%'",
    "/ws/chat?v=1": "holds '?'",
    "/ws/chat#top": "holds '#'",
    "/ws/../x": "is a dot segment",
    "/ws/./{room}": "is a dot segment",
    "/ws/x\\y": "contains a path separator or a control character",
    "/ws/\x00": "contains a path separator or a control character",
    "/ws/chat\n": "contains a path separator or a control character",
    "/ws/\u0085/{room}": "contains a path separator or a control character",
    "/ws/\uff0e\uff0e/{room}": "folds to a dot segment",
}


@pytest.mark.parametrize("path", REFUSED)
def test_a_path_no_client_sends_as_written_is_a_problem_by_field_path(path: str) -> None:
    problems = _problems(path=path)
    assert len(problems) == 1 and problems[0].startswith("apis[0].path: "), problems
    assert REFUSED[path] in problems[0]
    assert "\n" not in problems[0] and "\x00" not in problems[0]  # shown escaped, on one line


@pytest.mark.parametrize(
    "path", ["/ws/chat", "/ws/chat/", "/", "/ws/café/{room}", "/ws/a b", "/ws/x;v=1,y@:+$!~*()'", "/ws/a.b/..c/..."]
)
def test_paths_clients_send_stay_valid(path: str) -> None:
    assert _problems(path=path) == []


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="/{}"), min_size=1, max_size=8))
def test_every_literal_the_rule_accepts_is_reached_by_its_percent_encoding(segment: str) -> None:
    """What is valid is what some client reaches: the segment, percent-encoded as a client sends it."""
    path = f"/ws/{segment}"
    if _problems(path=path):
        return
    assert param_problem(segment) is None
    raw = "/ws/" + "".join(f"%{byte:02X}" for byte in segment.encode())
    parts = split_path(path, raw.encode())
    assert parts == ["ws", segment]
    router = Router([(path, "api")])
    assert resolve_scope(router, {"path": path, "raw_path": raw.encode(), "root_path": ""}) == (("api", {}), None)


def test_the_largest_message_size_is_the_bound_and_larger_is_a_problem() -> None:
    assert _problems(max_message_size=MAX_MESSAGE_SIZE) == []
    for size in (MAX_MESSAGE_SIZE + 1, 2**63, 10**30):
        (problem,) = _problems(max_message_size=size)
        assert problem.startswith("apis[0].max_message_size: Input should be less than or equal to 1073741824")


def test_the_bound_leaves_the_published_schema_as_generated() -> None:
    from asgi_ws_gateway.schema import json_schema

    field = json_schema()["$defs"]["ApiConfig"]["properties"]["max_message_size"]
    assert "maximum" not in field  # the validator decides; schema/gateway.schema.json is unchanged


async def test_a_compressed_message_is_relayed_at_the_largest_size(upstream: UpstreamServer, tmp_path: Path) -> None:
    config = {"apis": [api("echo", "/ws/echo", upstream, passthrough=False, max_message_size=MAX_MESSAGE_SIZE)]}
    with managed_gateway(config, tmp_path / "state.json") as managed:
        async with await connect(managed.url("/ws/echo"), compression="deflate") as ws:
            await ws.send("x" * 100_000)  # before, at 10**30: OverflowError in the upstream leg's inflate, 1011
            assert await ws.recv() == "x" * 100_000


async def test_the_management_api_refuses_them_and_stores_nothing(upstream: UpstreamServer, tmp_path: Path) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            before = (await http.get("config")).json()
            for index, path in enumerate(["/ws/caf%C3%A9", "/ws/chat?v=1", "/n/../ws/echo", "/ws/\\x"]):
                answer = await http.post("apis", json=api(f"a{index}", path, upstream))
                assert answer.status_code == 422, path
                assert answer.json()["problems"][0].startswith("path: "), answer.json()
            big = await http.post("apis", json=api("big", "/ws/big", upstream, max_message_size=10**30))
            assert big.status_code == 422
            assert big.json()["problems"] == [
                "max_message_size: Input should be less than or equal to 1073741824 (1 GiB: a relayed message "
                "is held whole in memory) (got 1000000000000000000000000000000)"
            ]
            assert (await http.get("config")).json() == before
    assert not (tmp_path / "state.json").exists() or "caf" not in json.dumps(
        json.loads((tmp_path / "state.json").read_text())
    )
