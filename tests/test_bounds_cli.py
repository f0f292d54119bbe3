"""``run``'s and ``check``'s options and the variables they read: every string bounded, a usage error past it.

``--redis-prefix`` took 10 kB (carried by every key the management API writes), ``--host``,
``--management-host``, ``--state``, ``--ws``, ``--plugin`` and ``$ASGI_WS_GATEWAY_REDIS`` any length,
``--plugin`` any number of times. Each is now refused while the options are read (exit 2), the message
naming the option and its bound, never quoting the value (``--redis`` may hold a password).
"""

from __future__ import annotations

import pytest

from asgi_ws_gateway import cli
from asgi_ws_gateway.config import limits

SECRET_URL = "redis://user:hunter2@127.0.0.1:6379/0?client_name="


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "bound"),
    [
        ("--redis-prefix", "p" * 65, "at most 64 characters"),
        ("--host", "h" * 254, "at most 253 characters"),
        ("--management-host", "h" * 254, "at most 253 characters"),
        ("--state", "s" * 4097, "at most 4096 characters"),
        ("--ws", "m" * 257, "at most 256 characters"),
        ("--plugin", "m" * 257, "at most 256 characters"),
        ("--management", "/" + "m" * 256, "at most 256 characters"),
        ("--redis", SECRET_URL + "a" * 2048, "at most 2048 characters"),
    ],
)
def test_a_run_option_past_its_bound_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], option: str, value: str, bound: str
) -> None:
    err = _usage_error(capsys, "run", "gateway.yaml", option, value)
    assert f"argument {option}: " in err and bound in err
    assert value not in err and "hunter2" not in err


def test_a_config_path_past_path_max_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "check"):
        err = _usage_error(capsys, command, "c" * 4097)
        assert "argument config: 4,097 characters: at most 4096" in err


@pytest.mark.parametrize("value", ["", " 127.0.0.1", "127.0.0.1\n", "host\x1b[2J"])
def test_a_host_with_spaces_or_control_characters_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert "argument --host: not a host name or address" in _usage_error(capsys, "run", "g.yaml", "--host", value)


def test_plugin_given_more_often_than_a_configuration_takes_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugins = [arg for _ in range(limits.MAX_PLUGINS + 1) for arg in ("--plugin", "json")]
    assert "--plugin: at most 64 modules" in _usage_error(capsys, "check", "gateway.yaml", *plugins)


def test_the_redis_variable_past_its_bound_is_an_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_REDIS", SECRET_URL + "a" * 2048)
    assert cli.main(["run", "gateway.yaml"]) == 2
    err = capsys.readouterr().err
    assert "error: $ASGI_WS_GATEWAY_REDIS: " in err and "at most 2048 characters" in err and "hunter2" not in err


def test_the_command_line_bounds_are_the_configuration_s() -> None:
    """cli.py writes two again (importing config would import pydantic for --help): they must agree (the
    plugins' bounds have one home, ``plugins``, which both import)."""
    assert (cli.MAX_PREFIX, cli.MAX_URL) == (limits.MAX_PREFIX, limits.MAX_URL)


@pytest.mark.parametrize(
    ("convert", "value"),
    [(cli._redis_prefix, "p" * 64), (cli._host, "h" * 253), (cli._file_path, "s" * 4096), (cli._plugin, "m" * 256)],
)
def test_an_option_at_its_bound_is_read(convert: object, value: str) -> None:
    assert callable(convert) and convert(value) == value
