"""JSON Schema patterns meet every message: they are matched in linear time, or refused.

jsonschema-rs compiles ``pattern``/``patternProperties``/``propertyNames`` with a backtracking engine
by default: ``"(?<=(a|aa)+)b"`` (accepted from the management API) let one 30 KB message hold the
worker's event loop for 37 s. The gateway asks for its linear-time engine, as ``safe_regex`` does for
policies: what that engine cannot match is a configuration problem by field path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import build_config
from support.management import api, managed_gateway
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

BACKTRACKING = ["(?<=(a|aa)+)b", "(?=a)a", "(?!b)a", "(a)\\1", "(?<!x)y"]


def _schemas(pattern: str) -> list[dict[str, Any]]:
    return [
        {"type": "string", "pattern": pattern},
        {"patternProperties": {pattern: {"type": "string"}}},
        {"propertyNames": {"pattern": pattern}},
        {"type": "object", "properties": {"text": {"anyOf": [{"pattern": pattern}, {"type": "number"}]}}},
    ]


def _document(schema: dict[str, Any]) -> dict[str, Any]:
    inbound = [{"validate-message": {"schema": schema}}]
    return {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h/"], "message_policies": {"inbound": inbound}}]}


def _refused(pattern: str, why: str) -> None:
    for schema in _schemas(pattern):
        with pytest.raises(ConfigError) as caught:
            load_config(_document(schema))
        assert "apis[0].message_policies.inbound[0].validate-message.schema:" in str(caught.value), schema
        assert why in str(caught.value)


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_a_schema_pattern_without_linear_matching_fails_start_up(pattern: str) -> None:
    _refused(pattern, "linear-time matching (no lookaround or backreference)")


@pytest.mark.parametrize("pattern", ["a.{1000}x", "(?s)a.{100}x", "a.{40}x"])
def test_a_schema_pattern_that_compiles_too_large_fails_start_up(pattern: str) -> None:
    """``a.{1000}x`` took 11.6 s per MiB of message (twice for an invalid one: checked, then described)."""
    _refused(pattern, "compiles to at most 50,000 bytes")


@pytest.mark.parametrize("pattern", ["^[A-Za-z0-9_-]{1,64}$", "^[\\p{L} ]{1,100}$", "^.{1,1000}$", "a.{10}x"])
def test_the_schema_patterns_messages_use_are_within_the_bound(pattern: str) -> None:
    load_config(_document({"type": "string", "pattern": pattern}))


async def test_the_management_api_refuses_it_by_field_path(tmp_path: Any, upstream: UpstreamServer) -> None:
    with managed_gateway({"apis": [api("chat", "/chat", upstream)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            schema = {"type": "string", "pattern": BACKTRACKING[0]}
            body = api(
                "slow", "/slow", upstream, message_policies={"inbound": [{"validate-message": {"schema": schema}}]}
            )
            refused = await http.post("apis", json=body)
            assert refused.status_code == 422
            assert refused.json()["problems"][0].startswith("message_policies.inbound[0].validate-message.schema:")


async def test_a_linear_pattern_still_checks_a_message_made_to_backtrack(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``^(a|aa)+$`` against 256 KiB of ``a`` then ``!``: dropped with its reason, and the next message passes."""
    schema = {"type": "object", "properties": {"text": {"type": "string", "pattern": "^(a|aa)+$"}}}
    config = build_config(upstream, api={"message_policies": {"inbound": [{"validate-message": {"schema": schema}}]}})
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    async with await connect(server.url("/ws/echo")) as ws:
        await ws.send(json.dumps({"text": "a" * 262_144 + "!"}))
        reply = json.loads(await ws.recv())
        # Matched once, and too large to describe where (message_checks.DESCRIBED_UP_TO)
        assert (reply["error"], reply["detail"]) == ("schema_mismatch", "the message does not match the schema")
        await ws.send('{"text": "aaa"}')
        assert json.loads(await ws.recv()) == {"text": "aaa"}
