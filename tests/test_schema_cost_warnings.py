"""validate-message: a fractional ``multipleOf`` with no maximum and minimum beside it is warned about by
field path (logged at start-up, printed by ``check``): jsonschema-rs checks each number against it in up to
~20 µs, seconds of the event loop for a 1 MiB message of numbers near 1e308 (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.policies.schema_costs import FRACTIONAL_MULTIPLE, unbounded_fractional_multiples
from support.configs import api_entry
from support.processes import main_in_process

WHERE = "apis[0].message_policies.inbound[0].validate-message"


@pytest.mark.parametrize(
    ("schema", "paths"),
    [
        ({"type": "number", "multipleOf": 0.01}, [("multipleOf",)]),
        ({"items": {"multipleOf": 0.5, "maximum": 10}}, [("items", "multipleOf")]),  # no minimum
        ({"items": {"multipleOf": 0.5, "minimum": 0}}, [("items", "multipleOf")]),  # no maximum
        ({"multipleOf": 0.5, "maximum": 10, "minimum": -10}, []),
        ({"multipleOf": 0.5, "exclusiveMaximum": 10, "exclusiveMinimum": -10}, []),
        ({"multipleOf": 3}, []),  # an integer divisor costs nothing measurable
        ({"multipleOf": 2.0}, []),
        ({"enum": [{"multipleOf": 0.1}], "const": {"multipleOf": 0.1}}, []),  # data, not schemas
        ({"properties": {"multipleOf": {"type": "number"}}}, []),  # a property of that name
        (
            {"anyOf": [{"multipleOf": 0.25}, {"$defs": {"p": {"multipleOf": 1e-300}}}]},
            [("anyOf", 0, "multipleOf"), ("anyOf", 1, "$defs", "p", "multipleOf")],
        ),
    ],
)
def test_the_paths_warned(schema: dict[str, Any], paths: list[tuple[str | int, ...]]) -> None:
    assert sorted(unbounded_fractional_multiples(schema), key=str) == sorted(paths, key=str)


def test_a_deep_schema_is_walked_without_recursion() -> None:
    schema: dict[str, Any] = {"multipleOf": 0.1}
    for _ in range(5000):
        schema = {"items": schema}
    (path,) = unbounded_fractional_multiples(schema)
    assert len(path) == 5001


def _config(settings: dict[str, Any]) -> dict[str, Any]:
    return {"apis": [api_entry(message_policies={"inbound": [{"validate-message": settings}]})]}


def test_the_warning_names_the_field_inline_and_where_in_a_file(tmp_path: Path) -> None:
    inline = load_policies(_config({"schema": {"properties": {"price": {"multipleOf": 0.01}}}})).warnings
    assert inline == [f"{WHERE}.schema.properties.price.multipleOf: {FRACTIONAL_MULTIPLE}"]
    file = tmp_path / "schema.json"
    file.write_text('{"items": {"multipleOf": 0.01}}')
    in_file = load_policies(_config({"schema_file": str(file)})).warnings
    assert in_file == [f"{WHERE}.schema_file: at /items/multipleOf: {FRACTIONAL_MULTIPLE}"]
    bounded = {"schema": {"properties": {"price": {"multipleOf": 0.01, "minimum": 0, "maximum": 1e6}}}}
    assert load_policies(_config(bounded)).warnings == []


def test_check_prints_it_and_passes(tmp_path: Path) -> None:
    """A warning, not a problem: the file is valid (exit 0) and the field is named."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config({"schema": {"items": {"type": "number", "multipleOf": 0.01}}})))
    code, out, err = main_in_process("check", str(path))
    assert code == 0, out + err
    assert f"{WHERE}.schema.items.multipleOf: a multipleOf that is not an integer" in out + err
