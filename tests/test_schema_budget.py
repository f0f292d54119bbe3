"""A JSON Schema whose ``$ref``s multiply what one message place is checked against is refused.

``d_i = {allOf: [{$ref: d_(i+1)}] * 4}``, 14 levels: a few hundred bytes, accepted by every settings
limit, compiled in milliseconds, and validating ``{}`` took 4.3 s of the worker's event loop (4^14
subschemas). Recursion the validator follows as deep as the message goes stays accepted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway import ConfigError
from asgi_ws_gateway.loading import retrieve_reference
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.policies.schema_budget import SchemaTooCostly, schema_cost
from support.management import api, managed_gateway
from support.processes import EXE, cli_env
from support.upstream import UpstreamServer

AT = "apis[0].message_policies.inbound[0].validate-message"
TOO_MANY = "one place of a message would be checked against more than 10,000 subschemas"


def _fan_out(width: int, depth: int, wrap: Any = lambda ref: {"$ref": ref}, key: str = "allOf") -> dict[str, Any]:
    defs: dict[str, Any] = {f"d{i}": {key: [wrap(f"#/$defs/d{i + 1}")] * width} for i in range(depth)}
    defs[f"d{depth}"] = {"type": ["object", "array"]}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _document(schema: Any) -> dict[str, Any]:
    inbound = [{"validate-message": {"schema": schema}}]
    return {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h/"], "message_policies": {"inbound": inbound}}]}


FAN_OUTS = {
    "allOf": _fan_out(4, 14),
    "anyOf": _fan_out(4, 14, key="anyOf"),
    "oneOf, two wide": _fan_out(2, 30, key="oneOf"),
    "not / if / then": {
        "$defs": {
            f"d{i}": {
                "not": {"$ref": f"#/$defs/d{i + 1}"},
                "if": {"$ref": f"#/$defs/d{i + 1}"},
                "then": {"$ref": f"#/$defs/d{i + 1}"},
            }
            for i in range(14)
        }
        | {"d14": {}},
        "$ref": "#/$defs/d0",
    },
    "items at each level (nested messages)": _fan_out(4, 14, wrap=lambda ref: {"items": {"$ref": ref}}),
    "properties.a beside additionalProperties": {
        "$defs": {
            f"d{i}": {
                "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}},
                "additionalProperties": {"$ref": f"#/$defs/d{i + 1}"},
            }
            for i in range(20)
        }
        | {"d20": {}},
        "$ref": "#/$defs/d0",
    },
    "anchors": {
        "$defs": {f"d{i}": {"$anchor": f"a{i}", "anyOf": [{"$ref": f"#a{i + 1}"}] * 4} for i in range(14)}
        | {"d14": {"$anchor": "a14"}},
        "$ref": "#a0",
    },
    "$id resources": {
        "$id": "https://schemas.example/root.json",
        "$defs": {f"d{i}": {"$id": f"d{i}.json", "allOf": [{"$ref": f"d{i + 1}.json"}] * 4} for i in range(14)}
        | {"d14": {"$id": "d14.json"}},
        "$ref": "d0.json",
    },
}


@pytest.mark.parametrize("schema", FAN_OUTS.values(), ids=FAN_OUTS.keys())
def test_references_that_fan_out_at_one_place_are_refused(schema: Any) -> None:
    with pytest.raises(SchemaTooCostly, match=TOO_MANY):
        schema_cost(schema, retrieve_reference)
    with pytest.raises(ConfigError) as caught:
        load_config(_document(schema))
    assert f"{AT}.schema: {TOO_MANY}" in str(caught.value)


RECURSIVE: dict[str, Any] = {
    "a tree": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
    "a binary tree": {"type": "object", "properties": {"left": {"$ref": "#"}, "right": {"$ref": "#"}}},
    "any JSON value": {
        "$defs": {
            "v": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"$ref": "#/$defs/v"}},
                    {"type": "array", "items": {"$ref": "#/$defs/v"}},
                    {"type": ["string", "number", "boolean", "null"]},
                ]
            }
        },
        "$ref": "#/$defs/v",
    },
    "a $ref to itself": {"allOf": [{"$ref": "#"}]},
    "a definition shared once per level": {
        "$defs": {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"type": "object"}]} for i in range(200)}
        | {"d200": {}},
        "$ref": "#/$defs/d0",
    },
}


@pytest.mark.parametrize("schema", RECURSIVE.values(), ids=RECURSIVE.keys())
def test_recursion_the_message_drives_and_shared_definitions_are_accepted(schema: Any) -> None:
    assert schema_cost(schema, retrieve_reference).subschemas < 1_000
    load_config(_document(schema))


def test_a_realistic_message_schema_is_far_within_the_bounds() -> None:
    """A union of 50 message types, each a base and its own fields, patterned ids outside the union (oneOf
    checks all 50 branches: a pattern in the shared base would be matched 50 times, and is refused)."""
    identifier = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
    types = {f"t{k}": {"allOf": [{"$ref": "#/$defs/base"}, {"properties": {"type": {"const": f"t{k}"},
                                                                             "data": {"type": "array"}}}]}
             for k in range(50)}  # fmt: skip
    schema = {
        "$defs": {"base": {"type": "object", "required": ["type"], "properties": {"id": {"type": "string"}}},
                  "id": identifier,
                  "item": {"type": "array", "items": {"type": "object", "properties": {"id": {"$ref": "#/$defs/id"},
                                                                                      "ref": {"$ref": "#/$defs/id"}}}},
                  **types},
        "properties": {"id": {"$ref": "#/$defs/id"}, "data": {"$ref": "#/$defs/item"}},
        "oneOf": [{"$ref": f"#/$defs/t{k}"} for k in range(50)],
    }  # fmt: skip
    cost = schema_cost(schema, retrieve_reference)
    assert cost.subschemas < 1_000 and cost.patterns <= 2, cost
    load_config(_document(schema))


@pytest.mark.parametrize(
    "schema",
    [{"allOf": [{"pattern": f"^a{k}"} for k in range(1_000)]},
     {"allOf": [{"items": {"pattern": f"^a{k}"}} for k in range(40)]},
     {"$defs": {"p": {"allOf": [{"pattern": "^a"}, {"patternProperties": {"^b": {}, "^c": {}}}]}},
      "anyOf": [{"$ref": "#/$defs/p"}] * 8}],
    ids=["allOf of 1,000", "40 items keywords beside each other", "a $ref to 3 used 8 times"],
)  # fmt: skip
def test_more_than_16_regular_expressions_at_one_place_are_refused(schema: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_document(schema))
    assert f"{AT}.schema: one place of a message would be matched against " in str(caught.value)
    assert "more than 16" in str(caught.value)


def test_patterns_at_different_places_are_not_added_up() -> None:
    schema = {"type": "object", "properties": {f"p{k}": {"type": "string", "pattern": "^[a-z]+$"} for k in range(100)}}
    load_config(_document(schema))


def test_a_schema_file_is_measured_with_the_files_it_refers_to(tmp_path: Path) -> None:
    """The fan-out split between two files, the second named by a file: $ref; refused at schema_file."""
    leaf = tmp_path / "leaf.json"
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 4} for i in range(8)} | {"d8": {}}
    leaf.write_text(json.dumps({"$defs": defs, "$ref": "#/$defs/d0"}))
    main = tmp_path / "main.yaml"
    main.write_text(yaml.safe_dump({"allOf": [{"$ref": leaf.as_uri()}] * 4}))
    inbound = [{"validate-message": {"schema_file": str(main)}}]
    document = {
        "apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h/"], "message_policies": {"inbound": inbound}}]
    }
    with pytest.raises(ConfigError) as caught:
        load_config(document)
    assert f"{AT}.schema_file: {TOO_MANY}" in str(caught.value)


def test_check_refuses_the_schema_by_field_path(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_document(_fan_out(4, 14))))
    done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{AT}.schema: {TOO_MANY}" in done.stdout + done.stderr


async def test_the_management_api_refuses_it_with_422(tmp_path: Path, upstream: UpstreamServer) -> None:
    with managed_gateway({"apis": [api("chat", "/chat", upstream)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            inbound = [{"validate-message": {"schema": _fan_out(4, 14)}}]
            refused = await http.post(
                "apis", json=api("bomb", "/bomb", upstream, message_policies={"inbound": inbound})
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["problems"][0].startswith(
                f"message_policies.inbound[0].validate-message.schema: {TOO_MANY}"
            )
            inbound = [{"validate-message": {"schema": RECURSIVE["a tree"]}}]
            accepted = await http.post(
                "apis", json=api("tree", "/tree", upstream, message_policies={"inbound": inbound})
            )
            assert accepted.status_code in (200, 201), accepted.text
