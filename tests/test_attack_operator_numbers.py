"""Numbers in a configuration that Python cannot read, or that JSON cannot carry.

An attack pass found three: an integer of more than 4,300 digits (Python's limit on reading one) and a
YAML timestamp that is no date (``2024-13-45``) made ``check`` and ``run`` end in a ``ValueError``
traceback, exit 1; and ``.inf``/``.nan`` (YAML) or ``1e999``/``NaN`` (JSON) in a free-form value
(``transform-message``'s ``set``, an ``error_reply`` template) passed ``check`` and reached the
upstream as ``null``. Typed fields already refused infinity. Each is now a problem by file, line or
field path, exit 2. And ``ping_interval: 1e-300`` was valid, pinging in a loop.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from support.processes import EXE, cli_env
from support.servers import free_port

API = 'apis:\n  - name: a\n    path: /a\n    upstreams: ["ws://127.0.0.1:9/x"]\n'
JSON_API = '{"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"]%s}]}'
LONG = "1" * 5000
SET_PATH = "apis[0].message_policies.inbound[0].transform-message.set"


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"    connect_timeout: {LONG}\n", "{file}:5:22: not valid YAML: apis[0].connect_timeout: cannot be read: "
         "an integer too long to read"),
        (f"    ? {LONG}\n    : 1\n", "{file}:5:7: not valid YAML: apis[0]." + LONG[:40] + ": cannot be read: "
         "an integer too long to read"),
        ("    display_name: 2024-13-45\n", "{file}:5:19: not valid YAML: apis[0].display_name: cannot be read: "
         "month must be in 1..12"),
    ],
    ids=["long-integer", "long-integer-key", "no-date"],
)  # fmt: skip
def test_a_yaml_value_python_cannot_build_is_a_problem_by_line_and_path(
    tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + text)
    assert _problems(config) == [problem.format(file=config)]


def test_a_json_integer_python_cannot_read_is_a_problem_by_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(JSON_API % f', "connect_timeout": {LONG}')
    assert _problems(config) == [f"{config}:1:95: an integer too long to read"]


@pytest.mark.parametrize(
    "config",
    [
        API + "    message_policies: {inbound: [transform-message: {set: {a: .inf, b: -.inf, c: .nan}}]}\n",
        JSON_API % ', "message_policies": {"inbound": [{"transform-message": {"set": {"a": 1e999, "b": -1e999, '
        '"c": NaN}}}]}',
    ],
    ids=["yaml", "json"],
)
def test_infinity_or_nan_in_a_free_form_value_is_refused_by_path(tmp_path: Path, config: str) -> None:
    path = tmp_path / ("gateway.json" if config.startswith("{") else "gateway.yaml")
    path.write_text(config)
    assert _problems(path) == [
        f"{SET_PATH}.a: inf is not a finite number (JSON has none)",
        f"{SET_PATH}.b: -inf is not a finite number (JSON has none)",
        f"{SET_PATH}.c: nan is not a finite number (JSON has none)",
    ]


def test_infinity_in_a_configuration_given_as_data_is_refused_too() -> None:
    inbound = [{"transform-message": {"set": {"a": float("inf")}}}]
    config: dict[str, Any] = {
        "apis": [
            {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"], "message_policies": {"inbound": inbound}}
        ]
    }
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [f"{SET_PATH}.a: inf is not a finite number (JSON has none)"]


@pytest.mark.parametrize("value", ["1e-300", "0.05", "0"])
def test_a_ping_interval_below_a_tenth_of_a_second_is_refused(tmp_path: Path, value: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + f"    ping_interval: {value}\n")
    (problem,) = _problems(config)
    assert problem.startswith("apis[0].ping_interval: Input should be greater than or equal to 0.1"), problem


def test_check_and_run_exit_2_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + f"    connect_timeout: {LONG}\n")
    for args in (["check", str(config)], ["run", str(config), "--port", str(free_port())]):
        done = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=cli_env())
        assert done.returncode == 2, done.stderr
        assert "an integer too long to read" in done.stderr and "Traceback" not in done.stderr, done.stderr
