"""What ``run --management`` hands its workers through the environment, and ``GatewayManagement``'s own
arguments, are bounded as the options are: a variable set directly (outside ``run``), or a value a
program passes, gets one clear error that never quotes it, not a mount at a 10 MB path or Redis keys
under a prefix that moves their cluster hash tag."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config import limits
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management import standalone as management_standalone
from asgi_ws_gateway.management.cli import TOKEN_ENV
from asgi_ws_gateway.management.mount_path import MAX_MANAGEMENT_PATH
from asgi_ws_gateway.management.store import FileStore
from asgi_ws_gateway.standalone import CONFIG_ENV, not_found
from asgi_ws_gateway.startup import MANAGEMENT_VARIABLES

TOKEN = "a-long-enough-admin-token-for-tests"
GATEWAY_CONFIG = {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:1/x"]}]}


def _mount(**options: object) -> GatewayManagement:
    return GatewayManagement(WebSocketGateway(not_found, config=GATEWAY_CONFIG), admin_token=TOKEN, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "a{b}", "a b", "ns\n", "x" * (limits.MAX_PREFIX + 1)])
def test_a_redis_prefix_outside_store_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=f"redis_prefix: 1 to {limits.MAX_PREFIX} letters") as caught:
        _mount(redis_url="redis://127.0.0.1:1/0", redis_prefix=prefix)
    assert len(str(caught.value)) < 200


def test_the_longest_prefix_is_taken() -> None:
    _mount(redis_url="redis://127.0.0.1:1/0", redis_prefix="p" * limits.MAX_PREFIX)


def test_a_management_path_too_long_is_refused_unquoted() -> None:
    path = "/" + "g" * 100_000
    with pytest.raises(ValueError, match=f"100,001 characters, at most {MAX_MANAGEMENT_PATH}") as caught:
        _mount(path=path)
    assert "g" * 300 not in str(caught.value)
    _mount(path="/" + "g" * (MAX_MANAGEMENT_PATH - 1))


def test_a_state_path_too_long_is_refused_unquoted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text('{"apis": []}')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv(management_standalone.REDIS_ENV, raising=False)
    monkeypatch.setenv(management_standalone.STATE_ENV, "s" * 5000)
    with pytest.raises(RuntimeError, match="5,000 characters, at most 4096") as caught:
        management_standalone.create_app()
    assert "s" * 300 not in str(caught.value)


def test_the_bounds_are_the_options() -> None:
    """``run``'s ``--redis-prefix`` takes what the environment does (``--management`` and ``--state`` read
    the bounds ``management.mount_path`` and ``loading`` hold for both)."""
    from asgi_ws_gateway import cli

    assert cli.MAX_PREFIX == limits.MAX_PREFIX


@pytest.mark.parametrize("name", sorted(MANAGEMENT_VARIABLES))
def test_a_run_variable_set_around_an_applications_management_is_a_warning_naming_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """``ASGI_WS_GATEWAY_STATE=/var/lib/gw.json uvicorn app:app`` kept the changes in memory without a word:
    only ``run --management``'s workers read it; ``GatewayManagement`` takes its arguments."""
    monkeypatch.setenv(name, "9001" if name.endswith("PORT") else "/x")
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        _mount()
    (warning,) = [record.getMessage() for record in caplog.records if name in record.getMessage()]
    assert "this GatewayManagement ignores it" in warning and MANAGEMENT_VARIABLES[name][1] in warning


GIVEN: dict[str, dict[str, object]] = {
    "path": {"path": "/_admin"},
    "port": {"port": 9001},
    "store": {"store": FileStore("/tmp/never-written.json")},
    "redis_prefix": {"redis_prefix": "ns"},
}
"""An argument per variable, as an application that reads the variable itself passes it."""


@pytest.mark.parametrize("name", sorted(MANAGEMENT_VARIABLES))
def test_a_run_variable_beside_the_argument_it_stands_for_is_the_applications_to_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """The example app reads ``ASGI_WS_GATEWAY_STATE`` into ``store=``: no warning that it is ignored."""
    monkeypatch.setenv(name, "9001" if name.endswith("PORT") else "/x")
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        _mount(**GIVEN[MANAGEMENT_VARIABLES[name][0]])
    assert not [record for record in caplog.records if name in record.getMessage()]


def test_run_managements_own_variables_are_read_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.json"
    config.write_text('{"apis": []}')
    for name, value in {
        CONFIG_ENV: str(config),
        TOKEN_ENV: TOKEN,
        management_standalone.STATE_ENV: str(tmp_path / "s"),
        management_standalone.PATH_ENV: "/_admin",
        management_standalone.PREFIX_ENV: "ns",
    }.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    monkeypatch.delenv(management_standalone.REDIS_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        assert management_standalone.create_app().path == "/_admin"
    assert not [record for record in caplog.records if "is set, but only" in record.getMessage()]
    names = {management_standalone.PATH_ENV, management_standalone.PORT_ENV, management_standalone.STATE_ENV,
             management_standalone.PREFIX_ENV}  # fmt: skip
    assert set(MANAGEMENT_VARIABLES) == names
