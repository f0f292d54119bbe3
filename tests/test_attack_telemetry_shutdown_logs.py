"""Once the gateway gave up on its exporters at shutdown, its one WARNING is all the log says about it.

Real ``asgi-ws-gateway run`` processes exporting traces, metrics and the access log over OTLP to a
collector that accepts connections and never answers. Past ``telemetry.shutdown_timeout`` the gateway
closes the exporters and says so once; before, the closing went on in the log: gRPC's cancelled call as
``ERROR: Failed to export traces to ..., error code: StatusCode.CANCELLED`` and the SDK's ``Exporter
already shutdown, ignoring call`` once per signal, an ERROR on every deploy while the collector is down.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import resolve_providers
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import Protocol
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
GAVE_UP = "did not send what they held within 0.5 s"


@pytest.fixture
async def hanging_collector() -> AsyncIterator[int]:
    """A port that accepts TCP connections, reads what is sent and never answers."""
    held: list[tuple[asyncio.StreamWriter, asyncio.Task[object]]] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        held.append((writer, task))
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer, _ in held:
            writer.close()
        await asyncio.gather(*(task for _, task in held), return_exceptions=True)  # they read the EOF and end
        await server.wait_closed()


def _start(tmp: Path, upstream: UpstreamServer, port: int, protocol: Protocol, **env: str) -> ServerProcess:
    telemetry = {"shutdown_timeout": 0.5, "export_logs": True}
    config = write_config(tmp, build_config(upstream, path="/echo", telemetry=telemetry))
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_SERVICE_NAME": "shutdown-logs-test", **env}  # fmt: skip
    return ready_server(lambda p: [*RUN, str(config), "--port", str(p)], env=environ)


async def _gave_up_output(tmp: Path, upstream: UpstreamServer, port: int, protocol: Protocol, **env: str) -> str:
    with _start(tmp, upstream, port, protocol, **env) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        # stop() blocks: off the event loop, which serves the collector meanwhile
        assert await asyncio.to_thread(server.stop, timeout=20) == 0, server.output()
        return server.output()


def _assert_one_warning_only(output: str) -> None:
    assert output.count(GAVE_UP) == 1, output
    assert "ERROR" not in output, output
    assert "already shut" not in output.lower(), output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_after_giving_up_on_a_hanging_collector_only_the_one_warning_is_logged(
    tmp_path: Path, upstream_server: UpstreamServer, hanging_collector: int, protocol: Protocol
) -> None:
    """SIGTERM with spans, metrics and access-log records held for a collector that never answers: exit 0,
    the gateway's one WARNING, and no ERROR or "already shutdown" line from the exporters it closed."""
    output = await _gave_up_output(tmp_path, upstream_server, hanging_collector, protocol)
    _assert_one_warning_only(output)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_the_sdk_span_pipeline_is_as_quiet_after_giving_up(
    tmp_path: Path, upstream_server: UpstreamServer, hanging_collector: int, protocol: Protocol
) -> None:
    """The same with the SDK's own tracer provider and encoder (``ASGI_WS_GATEWAY_SPANS=sdk``,
    ``ASGI_WS_GATEWAY_OTLP_ENCODER=sdk``): the SDK's exporter classes are as quiet as the gateway's."""
    env = {"ASGI_WS_GATEWAY_SPANS": "sdk", "ASGI_WS_GATEWAY_OTLP_ENCODER": "sdk"}
    output = await _gave_up_output(tmp_path, upstream_server, hanging_collector, protocol, **env)
    _assert_one_warning_only(output)


async def test_the_sdk_still_logs_on_other_threads_after_giving_up(
    monkeypatch: pytest.MonkeyPatch, hanging_collector: int, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: the closed gRPC exporter's cancelled call is not logged, but the silence is only for the
    threads of the providers given up on: an exporter error logged on any other thread (an application's
    own SDK pipeline) after the give-up is still in the log."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hanging_collector}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    providers = resolve_providers(TelemetryConfig(), environ=os.environ)
    assert providers.tracer is not None
    providers.tracer.get_tracer("test").start_span("held").end()
    assert not await asyncio.to_thread(providers.shutdown, 0.5)
    logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").error("an error of another pipeline")
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == ["an error of another pipeline"], caplog.text
    assert caplog.text.count("did not send what they held within 0.5 s") == 1, caplog.text
