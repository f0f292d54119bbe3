"""Numeric ``OTEL_*`` variables the SDK would ignore (with a traceback) or refuse (a bare ValueError,
exit 1): a start-up ``ConfigError`` naming each, for the signals the gateway exports itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError
from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import environment_config_problems, resolve_providers
from support.processes import EXE

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
BAD = {
    "OTEL_BSP_SCHEDULE_DELAY=abc": ("OTEL_BSP_SCHEDULE_DELAY", "abc", "'abc' is not a whole number"),
    "OTEL_BSP_SCHEDULE_DELAY=0": ("OTEL_BSP_SCHEDULE_DELAY", "0", "0 is below 1"),
    "OTEL_BSP_MAX_QUEUE_SIZE=-1": ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "-1 is below 1"),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096": (
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096", "4096 is more than the queue holds (2048)",
    ),
    "OTEL_SPAN_EVENT_COUNT_LIMIT=-1": ("OTEL_SPAN_EVENT_COUNT_LIMIT", "-1", "-1 is below 0"),
    "OTEL_METRIC_EXPORT_INTERVAL=0": ("OTEL_METRIC_EXPORT_INTERVAL", "0", "0 is below 1"),
    "OTEL_METRIC_EXPORT_TIMEOUT=1.5": ("OTEL_METRIC_EXPORT_TIMEOUT", "1.5", "'1.5' is not a whole number"),
    "OTEL_EXPORTER_OTLP_TIMEOUT=nan": ("OTEL_EXPORTER_OTLP_TIMEOUT", "nan", "'nan' is not a positive number"),
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=-3": (
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-3", "'-3' is not a positive number",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("name", "value", "problem"), BAD.values(), ids=BAD.keys())
def test_a_value_the_sdk_would_not_take_is_a_config_error_naming_it(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_providers(TelemetryConfig(), environ={**ENDPOINT, name: value})
    assert info.value.problems == [f"{name}: {problem}"]
    assert info.value.source == "environment"


def test_every_problem_is_listed_once() -> None:
    environ = {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift", "OTEL_EXPORTER_OTLP_TIMEOUT": "0",
               "OTEL_BSP_SCHEDULE_DELAY": "soon"}  # fmt: skip
    assert environment_config_problems(TelemetryConfig(), environ) == [
        "OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' is not supported (grpc or http/protobuf)",
        "OTEL_BSP_SCHEDULE_DELAY: 'soon' is not a whole number",
        "OTEL_EXPORTER_OTLP_TIMEOUT: '0' is not a positive number",
    ]


def test_values_the_sdk_takes_pass_and_a_signal_not_exported_is_not_checked() -> None:
    good = {**ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}  # fmt: skip
    assert environment_config_problems(TelemetryConfig(), good) == []
    no_traces = {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "abc"}
    assert environment_config_problems(TelemetryConfig(), no_traces) == []
    assert environment_config_problems(TelemetryConfig(), {"OTEL_BSP_SCHEDULE_DELAY": "abc"}) == []  # no export


def test_run_refuses_them_before_serving(tmp_path: Path) -> None:
    """The SDK raised while the app was built: a traceback and exit 1 (or, for 'abc', a traceback in
    the log and its own default of 5 s)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, **ENDPOINT, "OTEL_METRIC_EXPORT_INTERVAL": "0", "OTEL_BSP_SCHEDULE_DELAY": "abc"}
    done = subprocess.run(
        [str(EXE), "run", str(config), "--port", "0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "invalid gateway configuration in environment (2 problem(s)):" in done.stderr
    assert "OTEL_METRIC_EXPORT_INTERVAL: 0 is below 1" in done.stderr


def test_the_gateways_own_choices_are_checked_with_the_signal_that_reads_them() -> None:
    environ = {**ENDPOINT, "ASGI_WS_GATEWAY_SPANS": "lean", "ASGI_WS_GATEWAY_OTLP_ENCODER": " SDK ",
               "ASGI_WS_GATEWAY_HISTOGRAMS": "fast"}  # fmt: skip
    assert environment_config_problems(TelemetryConfig(), environ) == [
        "ASGI_WS_GATEWAY_SPANS: 'lean' is not supported (gateway or sdk)",
        "ASGI_WS_GATEWAY_HISTOGRAMS: 'fast' is not supported (gateway or sdk)",
    ]
    metrics_only = {**environ, "OTEL_TRACES_EXPORTER": "none"}
    assert environment_config_problems(TelemetryConfig(), metrics_only) == [
        "ASGI_WS_GATEWAY_HISTOGRAMS: 'fast' is not supported (gateway or sdk)"
    ]


@pytest.mark.parametrize("value", ["1", " TRUE ", "yes", "on", "0", "false", "No", "off", ""])
def test_the_pure_python_switch_takes_a_yes_or_a_no(value: str) -> None:
    environ = {**ENDPOINT, "ASGI_WS_GATEWAY_PURE_PYTHON": value}
    assert environment_config_problems(TelemetryConfig(), environ) == []


def test_the_pure_python_switch_refuses_anything_else_when_traces_or_metrics_are_exported() -> None:
    """A value it did not know (``ture``, ``python``) left the C encoder and metric records on without a word."""
    environ = {**ENDPOINT, "ASGI_WS_GATEWAY_PURE_PYTHON": "Python"}
    assert environment_config_problems(TelemetryConfig(), environ) == [
        "ASGI_WS_GATEWAY_PURE_PYTHON: 'Python' is not supported (1, true, yes or on; 0, false, no or off)"
    ]
    with pytest.raises(ConfigError, match="ASGI_WS_GATEWAY_PURE_PYTHON: 'Python' is not supported"):
        resolve_providers(TelemetryConfig(), environ=environ)
    metrics_only = {**environ, "OTEL_TRACES_EXPORTER": "none"}  # the C metric records read it too
    assert environment_config_problems(TelemetryConfig(), metrics_only) == [
        "ASGI_WS_GATEWAY_PURE_PYTHON: 'Python' is not supported (1, true, yes or on; 0, false, no or off)"
    ]
    assert environment_config_problems(TelemetryConfig(), {**metrics_only, "OTEL_METRICS_EXPORTER": "none"}) == []


def test_the_pure_python_problem_quotes_at_most_40_characters() -> None:
    environ = {**ENDPOINT, "ASGI_WS_GATEWAY_PURE_PYTHON": "x" * 100_000}
    assert environment_config_problems(TelemetryConfig(), environ) == [
        f"ASGI_WS_GATEWAY_PURE_PYTHON: '{'x' * 40}'... is not supported (1, true, yes or on; 0, false, no or off)"
    ]


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"ASGI_WS_GATEWAY_SPANS": "lean", **ENDPOINT}, "ASGI_WS_GATEWAY_SPANS: 'lean' is not supported"),
        ({"ASGI_WS_GATEWAY_GC": "aggressive"}, "ASGI_WS_GATEWAY_GC: 'aggressive' is not supported (tuned or python)"),
        # run dropped it without a word, the access log on in the config's format
        ({"ASGI_WS_GATEWAY_ACCESS_LOG": "JSON"}, "ASGI_WS_GATEWAY_ACCESS_LOG: 'JSON' is not one of off, text or json"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER: 'console' is not supported"),
        ({"ASGI_WS_GATEWAY_PURE_PYTHON": "ture", **ENDPOINT}, "ASGI_WS_GATEWAY_PURE_PYTHON: 'ture' is not supported"),
    ],
    ids=["spans", "gc", "access-log", "exporter", "pure-python"],
)
def test_run_with_workers_refuses_a_variable_each_worker_reads_before_serving(
    tmp_path: Path, variables: dict[str, str], problem: str
) -> None:
    """Read only in the workers, a wrong value made each worker die with a traceback, restarted for ever."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, **variables}
    done = subprocess.run([str(EXE), "run", str(config), "--port", "0", "--workers", "2"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert problem in done.stderr


SPELLED = {
    "disabled=1": ({"OTEL_SDK_DISABLED": "1"}, "OTEL_SDK_DISABLED: '1' is not one of true, false"),
    "traces=console": (
        {"OTEL_TRACES_EXPORTER": "console"},
        "OTEL_TRACES_EXPORTER: 'console' is not supported by the gateway's own exporters (otlp or none; "
        "another exporter needs a provider of the application's own)",
    ),
    "metrics=otlp,prometheus": (
        {"OTEL_METRICS_EXPORTER": "otlp, prometheus"},
        "OTEL_METRICS_EXPORTER: 'prometheus' is not supported by the gateway's own exporters",
    ),
    "insecure=yes": ({"OTEL_EXPORTER_OTLP_INSECURE": "yes"}, "OTEL_EXPORTER_OTLP_INSECURE: 'yes' is not one of"),
    "traces insecure=1": (
        {"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "1"}, "OTEL_EXPORTER_OTLP_TRACES_INSECURE: '1' is not one of true"
    ),
    "exemplars=ALWAYS_ON": (
        {"OTEL_METRICS_EXEMPLAR_FILTER": "ALWAYS_ON"},
        "OTEL_METRICS_EXEMPLAR_FILTER: 'ALWAYS_ON' is not one of trace_based, always_on, always_off",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("variables", "problem"), SPELLED.values(), ids=SPELLED.keys())
def test_a_word_the_sdk_would_take_for_another_is_a_config_error_naming_the_variable(
    variables: dict[str, str], problem: str
) -> None:
    """``OTEL_SDK_DISABLED=1`` exported all the same, ``OTEL_TRACES_EXPORTER=console`` exported OTLP (or
    nothing, without an endpoint), ``..._INSECURE=yes`` was TLS: each without a word. An unknown exemplar
    filter was a bare ValueError naming no variable."""
    with pytest.raises(ConfigError) as info:
        resolve_providers(TelemetryConfig(), environ={**ENDPOINT, **variables})
    (said,) = info.value.problems
    assert said.startswith(problem) and info.value.source == "environment"
    assert environment_config_problems(TelemetryConfig(), {**ENDPOINT, **variables}) == [said]


def test_an_exporter_choice_is_checked_without_an_endpoint_too() -> None:
    """Without an endpoint, ``console`` exported nothing, silently."""
    environ = {"OTEL_TRACES_EXPORTER": "console"}
    assert environment_config_problems(TelemetryConfig(), environ)[0].startswith("OTEL_TRACES_EXPORTER: 'console'")
    with pytest.raises(ConfigError):
        resolve_providers(TelemetryConfig(), environ=environ)


def test_the_words_the_sdk_takes_pass() -> None:
    good = {**ENDPOINT, "OTEL_SDK_DISABLED": " False", "OTEL_TRACES_EXPORTER": "OTLP", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_INSECURE": "TRUE", "OTEL_METRICS_EXEMPLAR_FILTER": "always_off"}  # fmt: skip
    assert environment_config_problems(TelemetryConfig(), good) == []
    assert environment_config_problems(TelemetryConfig(), {"OTEL_SDK_DISABLED": "true"}) == []
