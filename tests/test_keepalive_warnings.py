"""A keepalive the schema admits but no deployment means (``ping_interval`` or ``ping_timeout`` under a
second) is warned about: at check, at start-up and in a management change's answer."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway, load_config
from asgi_ws_gateway.config.checks import config_warnings
from asgi_ws_gateway.management.change_warnings import change_warnings
from asgi_ws_gateway.standalone import not_found


def _config(**fields: Any) -> dict[str, Any]:
    return {"apis": [{"name": "chat", "path": "/ws", "upstreams": ["ws://h/"], **fields}]}


def _warnings(**fields: Any) -> list[str]:
    return config_warnings(load_config(_config(**fields)))


def test_a_sub_second_ping_interval_is_warned_about() -> None:
    """0.1 s pings each idle connection ten times a second: a third of a core for 300 relayed ones."""
    (warning,) = _warnings(ping_interval=0.1, ping_timeout=5)
    assert warning.startswith("API chat: ping_interval: 0.1 s pings each idle connection 10 times a second")


def test_a_sub_second_ping_timeout_is_warned_about() -> None:
    """0.2 s dropped healthy connections on a loaded host: a late pong is taken for a dead peer."""
    (warning,) = _warnings(ping_timeout=0.2)
    assert warning.startswith("API chat: ping_timeout: 0.2 s drops a connection (1011) whose pong is later")


@pytest.mark.parametrize(
    "fields",
    [{}, {"ping_interval": 1, "ping_timeout": 1}, {"ping_interval": None, "ping_timeout": 0.01}],
    ids=["defaults", "one-second", "no-pings"],
)
def test_a_keepalive_of_seconds_or_none_is_not_warned_about(fields: dict[str, Any]) -> None:
    """Without pings, ping_timeout bounds nothing: no warning for it."""
    assert _warnings(**fields) == []


def test_the_warning_is_logged_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="asgi_ws_gateway.middleware"):
        WebSocketGateway(not_found, config=_config(ping_interval=0.1, ping_timeout=0.05))
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("API chat: ping_")]
    assert [text.split(":")[1] for text in logged] == [" ping_interval", " ping_timeout"]


def test_a_management_change_answers_with_it() -> None:
    """The operator working through the REST API sees it in the answer, as the log's reader does."""
    answered = change_warnings(None, load_config(_config(ping_interval=0.5)), apis=["chat"])
    assert [text[:32] for text in answered] == ["API chat: ping_interval: 0.5 s p"]
