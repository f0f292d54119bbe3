"""Each number the gateway's own OTLP providers read from ``OTEL_*`` has a ceiling, checked at start-up.

Only floors were checked: ``OTEL_BSP_SCHEDULE_DELAY=10000000000000`` killed the SDK's export thread at
start-up (a traceback on stderr) while the gateway said it was exporting, and not one span left the
process; ``OTEL_METRIC_EXPORT_INTERVAL`` the same for metrics; ``OTEL_EXPORTER_OTLP_TIMEOUT=1e10`` made
every gRPC export fail; a count limit past ``sys.maxsize`` made every span with an event raise. Now a
value past its ceiling is a ``ConfigError`` naming the variable and the ceiling, and the ceilings
themselves still export.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError
from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import environment_config_problems, resolve_providers
from support.clients import connect
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, Protocol
from support.processes import EXE
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
DAY_MS = 86_400_000
MS = " ms (a day)"
WHOLE = {  # variable: (the ceiling, its unit in the message)
    **{f"OTEL_{p}_{name}": (DAY_MS, MS) for p in ("BSP", "BLRP") for name in ("SCHEDULE_DELAY", "EXPORT_TIMEOUT")},
    **{f"OTEL_{p}_MAX_{name}": (100_000, "") for p in ("BSP", "BLRP") for name in ("QUEUE_SIZE", "EXPORT_BATCH_SIZE")},
    "OTEL_METRIC_EXPORT_INTERVAL": (DAY_MS, MS),
    "OTEL_METRIC_EXPORT_TIMEOUT": (DAY_MS, MS),
    **{name: (1_048_576, " characters") for name in (
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    )},
    **{name: (10_000, "") for name in (
        "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
        "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
        "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    )},
}  # fmt: skip
TIMEOUTS = [f"OTEL_EXPORTER_OTLP{signal}_TIMEOUT" for signal in ("", "_TRACES", "_METRICS", "_LOGS")]
WITH_LOGS = TelemetryConfig(export_logs=True)


def _queue_for(name: str, value: str) -> dict[str, str]:
    """A batch size needs a queue that holds it (checked apart)."""
    if name.endswith("_MAX_EXPORT_BATCH_SIZE"):
        return {name.replace("_MAX_EXPORT_BATCH_SIZE", "_MAX_QUEUE_SIZE"): value}
    return {}


@pytest.mark.parametrize("name", WHOLE)
def test_a_whole_number_past_its_ceiling_is_a_config_error_naming_the_variable_and_the_ceiling(name: str) -> None:
    most, unit = WHOLE[name]
    over = str(most + 1)
    with pytest.raises(ConfigError) as info:
        resolve_providers(WITH_LOGS, environ={**ENDPOINT, **_queue_for(name, over), name: over})
    assert f"{name}: {over} is above {most}{unit}" in info.value.problems
    assert info.value.source == "environment"


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", ["86400.5", "1e10", "1e308"])
def test_an_otlp_timeout_past_a_day_is_a_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_providers(WITH_LOGS, environ={**ENDPOINT, name: value})
    assert info.value.problems == [f"{name}: {value} is above 86400 seconds (a day)"]


def test_every_ceiling_itself_is_taken() -> None:
    at = {name: str(most) for name, (most, _) in WHOLE.items()} | dict.fromkeys(TIMEOUTS, "86400")
    assert environment_config_problems(WITH_LOGS, {**ENDPOINT, **at}) == []


def test_a_logs_only_export_checks_the_limits_its_log_records_meet() -> None:
    """The log records' limits were not checked at all: ``-1`` was the SDK's bare ValueError at start-up."""
    environ = {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
               "OTEL_ATTRIBUTE_COUNT_LIMIT": "-1", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "x"}  # fmt: skip
    assert environment_config_problems(WITH_LOGS, environ) == [
        "OTEL_ATTRIBUTE_COUNT_LIMIT: -1 is below 0",
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT: 'x' is not a whole number",
    ]


SAMPLERS = {
    "unknown": ({"OTEL_TRACES_SAMPLER": "ratio"}, "OTEL_TRACES_SAMPLER: 'ratio' is not supported"),
    "above-1": (
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5"},
        "OTEL_TRACES_SAMPLER_ARG: '5' is not a ratio from 0 to 1",
    ),
    "percent": (
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1%"},
        "OTEL_TRACES_SAMPLER_ARG: '1%' is not a ratio from 0 to 1",
    ),
    "nan": (
        {"OTEL_TRACES_SAMPLER": "TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "nan"},
        "OTEL_TRACES_SAMPLER_ARG: 'nan' is not a ratio from 0 to 1",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("variables", "problem"), SAMPLERS.values(), ids=SAMPLERS.keys())
def test_a_sampler_the_sdk_would_replace_by_sampling_everything_is_a_config_error(
    variables: dict[str, str], problem: str
) -> None:
    """The SDK warned once and sampled every trace (``parentbased_always_on``, or a ratio of 1.0)."""
    (found,) = environment_config_problems(TelemetryConfig(), {**ENDPOINT, **variables})
    assert found.startswith(problem)


@pytest.mark.parametrize(
    "variables",
    [{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
     {"OTEL_TRACES_SAMPLER": "traceidratio"}, {"OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "x"}],
)  # fmt: skip
def test_a_sampler_the_sdk_takes_passes(variables: dict[str, str]) -> None:
    assert environment_config_problems(TelemetryConfig(), {**ENDPOINT, **variables}) == []


def test_run_refuses_durations_past_a_day_before_serving(tmp_path: Path) -> None:
    """They ran: "exporting traces, metrics over OTLP", a dead export thread's traceback, and nothing exported."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, **ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "10000000000000",
           "OTEL_METRIC_EXPORT_INTERVAL": "10000000000000", "OTEL_EXPORTER_OTLP_TIMEOUT": "1e10"}  # fmt: skip
    done = subprocess.run(
        [str(EXE), "run", str(config), "--port", "0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "invalid gateway configuration in environment (3 problem(s)):" in done.stderr
    assert "OTEL_BSP_SCHEDULE_DELAY: 10000000000000 is above 86400000 ms (a day)" in done.stderr
    assert "OTEL_METRIC_EXPORT_INTERVAL: 10000000000000 is above 86400000 ms (a day)" in done.stderr
    assert "OTEL_EXPORTER_OTLP_TIMEOUT: 1e10 is above 86400 seconds (a day)" in done.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_spans_and_metrics_are_exported_with_every_setting_at_its_ceiling(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, protocol: Protocol
) -> None:
    """The ceilings are settings that work, not merely ones that do not break: a day's export timeouts,
    the largest queue and batch, the highest limits (the schedule delay and interval stay short, to see
    what leaves)."""
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, protocol)
        for name, (most, _) in WHOLE.items():
            if not name.endswith(("_SCHEDULE_DELAY", "_EXPORT_INTERVAL")):
                monkeypatch.setenv(name, str(most))
        for name in TIMEOUTS:
            monkeypatch.setenv(name, "86400")
        gateway = ProbedGateway(telemetry_config(upstream))
        with UvicornServer(gateway) as server:
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
            span = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "connection echo")
        # The server's shutdown flushed the meter provider.
        points = [p for p in otlp.points() if p.metric.startswith("ws_gateway.")]
    assert span.protocol == protocol
    assert points and all(p.protocol == protocol for p in points)
