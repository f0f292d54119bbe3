"""``OTEL_EXPORTER_OTLP_HEADERS`` and ``OTEL_RESOURCE_ATTRIBUTES`` as the operator may mistype them.

The OTLP exporters' parser drops a header entry it cannot read (``x-api-key:KEY``, ``api-key KEY``)
and prints it, key and all, to stderr through Python's last-resort handler, where no redaction
reaches (twice: traces and metrics); the gateway then exported without the collector's credential.
The SDK drops a resource attribute without ``=`` the same way. Each is now a start-up problem naming
the variable and the entry's number, never its text.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import environment_config_problems
from support.processes import EXE, ready_server
from support.servers import free_port

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
SECRET = "S3CRET-collector-key"
HEADERS_PROBLEM = (
    "{name}: entry {entry} is not name=value (a header name, '=', a value of printable ASCII without a "
    "comma, semicolon, quote or backslash: URL-encode those); not shown: it may hold a credential"
)
BAD_HEADERS = {
    "a colon for =": ("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20x,x-api-key:{SECRET}", "2 of 2"),
    "a space for =": ("OTEL_EXPORTER_OTLP_HEADERS", f"api-key {SECRET}", "1 of 1"),
    "a quote in the value": ("OTEL_EXPORTER_OTLP_HEADERS", f'api-key="{SECRET}"', "1 of 1"),
    "the traces' own variable": ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"a=b;c={SECRET}", "1 of 1"),
}


@pytest.mark.parametrize(("name", "value", "entry"), BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_header_entry_the_exporter_would_drop_is_a_problem_without_its_text(
    name: str, value: str, entry: str
) -> None:
    problems = environment_config_problems(TelemetryConfig(), {**ENDPOINT, name: value})
    assert problems == [HEADERS_PROBLEM.format(name=name, entry=entry)]


@pytest.mark.parametrize(
    "value", ["api-key=abc", " authorization = Bearer abc , x-tenant=acme ,", "k=a%2Cb=c", "k=/path:1"]
)
def test_headers_the_exporter_reads_pass(value: str) -> None:
    assert environment_config_problems(TelemetryConfig(), {**ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": value}) == []


def test_a_signals_own_headers_variable_replaces_the_shared_one_for_that_signal() -> None:
    """The exporters read ``..._TRACES_HEADERS`` or else ``..._HEADERS``: the shared one is still read by metrics."""
    environ = {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=b", "OTEL_EXPORTER_OTLP_HEADERS": "bad"}
    assert environment_config_problems(TelemetryConfig(), environ) == [
        HEADERS_PROBLEM.format(name="OTEL_EXPORTER_OTLP_HEADERS", entry="1 of 1")
    ]
    assert environment_config_problems(TelemetryConfig(), {**environ, "OTEL_METRICS_EXPORTER": "none"}) == []


def test_a_resource_attribute_without_a_value_is_a_problem() -> None:
    environ = {**ENDPOINT, "OTEL_RESOURCE_ATTRIBUTES": "service.name=chat;deployment.environment=prod,team=a"}
    assert environment_config_problems(TelemetryConfig(), environ) == []  # ';' is part of a value to the SDK
    environ["OTEL_RESOURCE_ATTRIBUTES"] = "service.name,team=chat,"
    assert environment_config_problems(TelemetryConfig(), environ) == [
        "OTEL_RESOURCE_ATTRIBUTES: entry 1 of 3 is not key=value"
    ]


def test_run_refuses_a_malformed_header_before_serving_and_never_prints_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("telemetry: {enabled: true, exporter: otlp}\napis: []\n")
    env = {**os.environ, **ENDPOINT, "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key:{SECRET}"}
    done = subprocess.run(
        [str(EXE), "run", str(config), "--port", str(free_port())], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "invalid gateway configuration in environment (1 problem(s)):" in done.stderr
    assert HEADERS_PROBLEM.format(name="OTEL_EXPORTER_OTLP_HEADERS", entry="1 of 1") in done.stderr
    assert SECRET not in done.stdout + done.stderr


ENDPOINT_PROBLEM = (
    "{name}: must not carry credentials (user:password@): send them with OTEL_EXPORTER_OTLP_HEADERS "
    "(authorization=Basic%20...)"
)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://user:{SECRET}@127.0.0.1:4317"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"https://{SECRET}@collector:4318/v1/metrics"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"user:{SECRET}@collector:4317"),
    ],
)
def test_an_endpoint_with_credentials_is_a_problem_without_them(name: str, value: str) -> None:
    """The gRPC exporter printed ``exporting metrics to user:password@host`` at every failed export."""
    assert environment_config_problems(TelemetryConfig(), {**ENDPOINT, name: value}) == [
        ENDPOINT_PROBLEM.format(name=name)
    ]


def test_an_endpoint_with_an_at_sign_in_its_path_or_query_is_fine() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/a@b?x=@"}
    assert environment_config_problems(TelemetryConfig(), environ) == []


def test_run_writes_other_libraries_lines_formatted_and_redacted(tmp_path: Path) -> None:
    """The exporters' "Transient error" lines went to Python's last-resort handler, past every filter,
    with the collector's ``?api_key=`` from the endpoint in each (and no level prefix)."""
    config = tmp_path / "gateway.yaml"
    # The collector is down: a short shutdown_timeout, or the stop waits out the default 5 s flush.
    config.write_text("telemetry: {enabled: true, exporter: otlp, shutdown_timeout: 0.5}\napis: []\n")
    endpoint = f"http://127.0.0.1:9/v1/metrics?api_key={SECRET}"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
           "OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_TRACES_EXPORTER": "none"}  # fmt: skip
    with ready_server(
        lambda port: ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port)], env=env
    ) as server:
        deadline = time.monotonic() + 20
        while "Transient error" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        output = server.output()
    assert SECRET not in output
    lines = [line for line in output.splitlines() if "Transient error" in line]
    assert lines and all(line.startswith("WARNING:  Transient error") and "api_key=REDACTED" in line for line in lines)
