"""A field that takes "a thing or a list of things" reports the errors of the form given, not both forms.

Pydantic tries each member of ``X | list[X]``: a single mapping with one bad field used to get a
second, wrong problem ("Input should be a valid list"), a list with one bad item "Input should be a
valid dictionary". The value's shape selects the member; the field paths stay as users see them.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.cli import main
from asgi_ws_gateway.config.problems import describe_errors
from support.configs import write_config

BAD_REGEX = "a\\Z"  # RE2 refuses \Z
CHOOSE = "apis[0].policies[0].choose.when[0]"
JWT = "apis[0].policies[0].validate-jwt"


def _problems(policy: dict[str, Any]) -> list[str]:
    config = {"apis": [{"name": "a", "path": "/ws", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy]}]}
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value.problems


def _choose(condition: Any) -> dict[str, Any]:
    return {"choose": {"when": [{"if": condition, "policies": []}]}}


def _jwt(**settings: Any) -> dict[str, Any]:
    return {"validate-jwt": {"jwks_url": "https://idp.example/jwks", "algorithms": ["RS256"], **settings}}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (_choose({"ref": "header.x", "matches": BAD_REGEX}), f"{CHOOSE}.if.matches: not a regular expression"),
        (_choose([{"ref": "header.x", "matches": BAD_REGEX}]), f"{CHOOSE}.if[0].matches: not a regular expression"),
        (_choose({"ref": "header.x"}), f"{CHOOSE}.if: "),  # no test given: the condition's own error
        (_choose({"matches": "^a"}), f"{CHOOSE}.if.ref: Field required"),
        (_choose([{"ref": "header.x", "exists": True}, {"ref": 5, "exists": True}]), f"{CHOOSE}.if[1].ref: "),
        (_jwt(issuer=["https://idp.example", 1]), f"{JWT}.issuer[1]: Input should be a valid string"),
        (_jwt(audience=[1]), f"{JWT}.audience[0]: Input should be a valid string"),
    ],
    ids=[
        "if-mapping",
        "if-list",
        "if-mapping-model-error",
        "if-mapping-missing",
        "if-list-second",
        "issuer",
        "audience",
    ],
)
def test_the_value_shape_selects_the_form_whose_errors_are_reported(policy: dict[str, Any], expected: str) -> None:
    """One problem, at the path of the form given; no "should be a valid list/dictionary/string" for the other."""
    problems = _problems(policy)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert "valid list" not in problems[0] and "instance of ConditionSettings" not in problems[0]


@pytest.mark.parametrize(("settings", "field"), [({"issuer": 5}, "issuer"), ({"audience": {"a": 1}}, "audience")])
def test_a_value_of_no_accepted_shape_is_still_refused_at_the_field(settings: dict[str, Any], field: str) -> None:
    """Neither a string nor a list: refused, one problem at the field itself."""
    problems = _problems(_jwt(**settings))
    assert problems == [f"{JWT}.{field}: Input should be a valid string (got {settings[field]!r})"]


def test_check_reports_one_problem_for_a_bad_regex_in_a_single_condition(tmp_path: Any, capsys: Any) -> None:
    """``check`` on the finding's configuration: exit 2, the regex problem only."""
    policy = _choose({"ref": "header.x", "matches": BAD_REGEX})
    path = write_config(tmp_path, {"apis": [{"name": "a", "path": "/ws", "upstreams": ["ws://127.0.0.1:9/x"],
                                              "policies": [policy]}]})  # fmt: skip
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{CHOOSE}.if.matches: not a regular expression RE2 accepts" in err
    assert "valid list" not in err


class _OneOrMany(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class ItemSettings(BaseModel):  # models are named *Settings: the formatter knows the union tag
        model_config = ConfigDict(extra="forbid")
        name: str

    names: str | list[str] = "x"
    items: ItemSettings | list[ItemSettings] = []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"names": [1]}, ["names[0]: Input should be a valid string (got 1)"]),
        ({"names": 1}, ["names: Input should be a valid string; Input should be a valid list (got 1)"]),
        ({"items": {"name": 1}}, ["items.name: Input should be a valid string (got 1)"]),
        ({"items": {"nope": 1, "name": "a"}}, ["items.nope: unknown field"]),
        ({"items": [{"name": "a"}, {"name": 1}]}, ["items[1].name: Input should be a valid string (got 1)"]),
    ],
)
def test_configuration_models_report_the_selected_form_too(data: dict[str, Any], expected: list[str]) -> None:
    """The configuration's formatter (``describe_errors``) applies the same rule to any ``X | list[X]`` field."""
    with pytest.raises(ValidationError) as caught:
        _OneOrMany.model_validate(data)
    assert describe_errors(caught.value.errors()) == expected
