"""The variables the gateway reads, past the numbers ``test_server_environment_bounds`` and
``test_telemetry_environment_bounds`` hold: text bounded, values spelled exactly, never quoted at length.

``ASGI_WS_GATEWAY_ACCESS_LOG=JSON`` (or ``yes``) was ignored without a word; ``OTEL_EXPORTER_OTLP_HEADERS``
and ``OTEL_RESOURCE_ATTRIBUTES`` of any size were sent with every export; a problem quoted whatever the
variable held (a 4,000-digit ``OTEL_BSP_SCHEDULE_DELAY`` was a 4 kB line); a JWT ``secret_env`` of
megabytes was hashed again for every token.
"""

from __future__ import annotations

import logging

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.loading import MAX_ENV_VALUE
from asgi_ws_gateway.middleware import WebSocketGateway
from asgi_ws_gateway.plugins import PLUGINS_ENV
from asgi_ws_gateway.standalone import ACCESS_LOG_ENV, CONFIG_ENV, GC_ENV, collector_problems, create_app, not_found
from asgi_ws_gateway.startup import STANDALONE_VARIABLES
from asgi_ws_gateway.telemetry.environment import MAX_ENDPOINT, MAX_LIST, MAX_SERVICE_NAME
from asgi_ws_gateway.telemetry.providers import environment_config_problems

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize("value", ["JSON", "yes", "false", "Off", " text", "x" * 10_000])
def test_an_access_log_variable_that_is_not_off_text_or_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_ACCESS_LOG", value)
    with pytest.raises(ConfigError) as info:
        create_app(GatewayConfig())
    (problem,) = info.value.problems
    assert problem.startswith("ASGI_WS_GATEWAY_ACCESS_LOG: ") and "off, text or json" in problem
    assert len(problem) < 200 and info.value.source == "environment"


@pytest.mark.parametrize("value", ["off", "text", "json", ""])
def test_an_access_log_variable_spelled_exactly_is_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_ACCESS_LOG", value)
    # "off" disables the process's access logger, as run's workers want: not for the tests after this one
    monkeypatch.setattr(logging.getLogger("asgi_ws_gateway.access"), "disabled", False)
    create_app(GatewayConfig())
    assert logging.getLogger("asgi_ws_gateway.access").disabled == (value == "off")


@pytest.mark.parametrize("name", sorted(STANDALONE_VARIABLES))
def test_a_standalone_variable_set_around_a_middleware_is_a_warning_naming_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """``ASGI_WS_GATEWAY_ACCESS_LOG=off uvicorn app:app`` (a ``WebSocketGateway`` of the user's) kept the access
    log on, and ``ASGI_WS_GATEWAY_GC=tuned`` left the collector alone, without a word: only the standalone
    gateway reads them."""
    monkeypatch.setenv(name, "off" if name.endswith("ACCESS_LOG") else "tuned")
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        WebSocketGateway(not_found, config=GatewayConfig())
    (warning,) = [record.getMessage() for record in caplog.records if name in record.getMessage()]
    assert warning.startswith(f"{name} is set, but only asgi-ws-gateway run reads it (and its create_app factories)")
    assert STANDALONE_VARIABLES[name] in warning


def test_the_standalone_gateway_reads_its_variables_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_ACCESS_LOG", "json")
    monkeypatch.setenv("ASGI_WS_GATEWAY_GC", "python")
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        create_app(GatewayConfig())
    assert not [record for record in caplog.records if "is set, but only" in record.getMessage()]
    assert set(STANDALONE_VARIABLES) == {CONFIG_ENV, ACCESS_LOG_ENV, GC_ENV, PLUGINS_ENV}


def test_a_collector_mode_is_quoted_at_most_forty_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_GC", "x" * 100_000)
    (problem,) = collector_problems()
    assert len(problem) < 150 and "is not supported (tuned or python)" in problem


@pytest.mark.parametrize(
    ("name", "most"),
    [
        ("OTEL_EXPORTER_OTLP_HEADERS", MAX_LIST),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", MAX_LIST),
        ("OTEL_RESOURCE_ATTRIBUTES", MAX_LIST),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", MAX_ENDPOINT),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", MAX_ENDPOINT),
        ("OTEL_SERVICE_NAME", MAX_SERVICE_NAME),
    ],
)
def test_an_otel_text_past_its_ceiling_is_a_problem_naming_the_variable_not_its_text(name: str, most: int) -> None:
    value = "http://127.0.0.1:9/" + "a" * most if "ENDPOINT" in name else "key=" + "v" * most
    problems = environment_config_problems(TelemetryConfig(), {**ENDPOINT, name: value})
    assert f"{name}: {len(value):,} characters, more than {most:,}" in problems
    assert all("v" * 50 not in problem and "a" * 50 not in problem for problem in problems)


def test_an_otel_text_at_its_ceiling_is_taken() -> None:
    at = {"OTEL_EXPORTER_OTLP_HEADERS": "key=" + "v" * (MAX_LIST - 4), "OTEL_SERVICE_NAME": "s" * MAX_SERVICE_NAME,
          "OTEL_RESOURCE_ATTRIBUTES": "k=" + "v" * (MAX_LIST - 2)}  # fmt: skip
    assert environment_config_problems(TelemetryConfig(), {**ENDPOINT, **at}) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_BSP_SCHEDULE_DELAY", "9" * 4000),
        ("OTEL_BSP_SCHEDULE_DELAY", "x" * 100_000),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "x" * 100_000),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "9" * 100_000),
        ("OTEL_TRACES_SAMPLER", "x" * 100_000),
    ],
)
def test_a_problem_quotes_at_most_forty_characters_of_a_variable(name: str, value: str) -> None:
    (problem,) = environment_config_problems(TelemetryConfig(), {**ENDPOINT, name: value})
    assert problem.startswith(f"{name}: ") and len(problem) < 200


def test_a_secret_env_past_a_setting_s_length_is_refused_by_field_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOUNDS_JWT_SECRET", "s" * (MAX_ENV_VALUE + 1))
    jwt = {
        "algorithms": ["HS256"],
        "secret_env": "BOUNDS_JWT_SECRET",
        "audience": "chat",
        "issuer": "https://i.example",
    }
    with pytest.raises(ConfigError) as info:
        load_config({"policies": [{"validate-jwt": jwt}]})
    (problem,) = info.value.problems
    assert problem.startswith("policies[0].validate-jwt.secret_env: environment variable BOUNDS_JWT_SECRET holds")
    assert "s" * 100 not in problem
    monkeypatch.setenv("BOUNDS_JWT_SECRET", "s" * MAX_ENV_VALUE)
    load_config({"policies": [{"validate-jwt": jwt}]})
