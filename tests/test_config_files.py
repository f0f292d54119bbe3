"""Hostile configuration files: an alias bomb, a value that contains itself, nesting deeper than the
parsers recurse. Each is one problem naming the file, found before validation walks anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.loading import MAX_VALUES

API = """\
apis:
  - name: a
    path: /a
    upstreams: ["ws://127.0.0.1:9/x"]
"""


def _bomb(width: int, levels: int) -> str:
    """Ten-odd lines of anchors, each a list of ``width`` aliases of the one before: width**levels values."""
    lines = [f"x0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _problems(tmp_path: Path, name: str, text: str) -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_an_alias_bomb_is_refused_before_anything_walks_it(tmp_path: Path) -> None:
    """Nine levels of nine aliases used to take minutes and gigabytes in validation (transform-message's
    ``set`` takes any value); 11**6 here is past the limit and small enough to expand if it regressed."""
    assert MAX_VALUES < 11**6
    text = _bomb(11, 6) + API + "    message_policies:\n      inbound:\n        - transform-message: {set: {f: *a5}}\n"
    assert _problems(tmp_path, "bomb.yaml", text) == [
        f"{tmp_path / 'bomb.yaml'}: holds more than 1,000,000 values once its aliases are expanded"
    ]


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = API + "    message_policies:\n      inbound:\n        - transform-message: {set: {f: &r [1, *r]}}\n"
    assert _problems(tmp_path, "cycle.yaml", text) == [
        f"{tmp_path / 'cycle.yaml'}: an alias refers to a value that contains it"
    ]


def test_aliases_that_share_a_few_values_are_fine(tmp_path: Path) -> None:
    """Anchors are how YAML files say a thing once: two APIs with one origin check."""
    path = tmp_path / "shared.yaml"
    path.write_text(
        "apis:\n"
        "  - {name: a, path: /a, upstreams: [ws://127.0.0.1:9/x],\n"
        "     policies: [{check-origin: &origins {allowed: [https://a.example, https://b.example]}}]}\n"
        "  - {name: b, path: /b, upstreams: [ws://127.0.0.1:9/x], policies: [{check-origin: *origins}]}\n"
    )
    config = load_config(path)
    assert [api.name for api in config.apis] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.yaml", "apis: " + "[" * 3000 + "]" * 3000 + "\n"),
        ("deep.json", '{"apis": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ],
)
def test_nesting_deeper_than_the_parser_recurses_is_one_problem_not_a_traceback(
    tmp_path: Path, name: str, text: str
) -> None:
    assert _problems(tmp_path, name, text) == [f"{tmp_path / name}: nested too deeply to read"]


SCHEMAS = {
    "broken.yaml": ("type: [object\n", "not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    "broken.json": ('{"type": ', "not valid JSON: Expecting value: line 1 column 10 (char 9)"),
    "deep.json": ('{"allOf": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
    "cycle.yaml": ("allOf: &r [*r]\n", "an alias refers to a value that contains it"),
    "bomb.yaml": (_bomb(11, 6) + "enum: *a5\n", "holds more than 1,000,000 values once its aliases are expanded"),
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_hostile_json_schema_file_is_one_problem_by_field_path(tmp_path: Path, name: str) -> None:
    """validate-message's schema_file is read as the configuration is (a YAML error used to be a traceback)."""
    text, message = SCHEMAS[name]
    (tmp_path / name).write_text(text)
    config = (
        API + f"    message_policies:\n      inbound:\n        - validate-message: {{schema_file: {tmp_path / name}}}\n"
    )
    field = "apis[0].message_policies.inbound[0].validate-message.schema_file"
    assert _problems(tmp_path, "gateway.yaml", config) == [f"{field}: {message}"]
