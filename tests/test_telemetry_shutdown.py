"""A collector that is down or never answers does not hold a draining gateway: ``telemetry.shutdown_timeout``.

Real ``asgi-ws-gateway run`` processes, a real upstream, and as the OTLP endpoint either a real receiver
or a listener that accepts connections and never answers (a collector that hangs: every export waits
for ``OTEL_EXPORTER_OTLP_TIMEOUT``, then retries). Without the bound, SIGTERM took the exporters'
timeout once per signal (about 20 s with the SDK's 10 s default, before the process could exit).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver, Protocol
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
EXPORT_TIMEOUT = "30"
"""The exporters' own timeout (s): a flush the gateway did not bound would outlast ``stop``'s 20 s."""
GAVE_UP = "did not send what they held within 0.5 s"


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def _start(tmp: Path, upstream: UpstreamServer, endpoint: str, protocol: Protocol, **env: str) -> ServerProcess:
    config = write_config(tmp, build_config(upstream, path="/echo", telemetry={"shutdown_timeout": 0.5}))
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT, "OTEL_SERVICE_NAME": "shutdown-test", **env}  # fmt: skip
    return ready_server(lambda port: [*RUN, str(config), "--port", str(port)], env=environ)


async def _one_echo(port: int) -> None:
    async with await connect(f"ws://127.0.0.1:{port}/echo") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_a_silent_collector_delays_the_exit_by_the_timeout_not_the_exporters(
    tmp_path: Path, upstream_server: UpstreamServer, silent_collector: int, protocol: Protocol
) -> None:
    """SIGTERM with spans and metrics waiting for a collector that never answers: the process exits (0)
    once ``shutdown_timeout`` has passed, well before the exporters' 30 s, and says what it dropped."""
    with _start(tmp_path, upstream_server, f"http://127.0.0.1:{silent_collector}", protocol) as server:
        await _one_echo(server.port)
        assert server.stop(timeout=20) == 0
        output = server.output()
    assert GAVE_UP in output, output
    assert "Traceback" not in output


async def test_a_healthy_collector_gets_everything_at_shutdown_and_no_warning(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    """The bound costs nothing when the collector answers: the connection span, which only the shutdown
    flush sends (a batch delay of a minute), arrives, and nothing is said to be dropped."""
    with OtlpReceiver() as receiver:
        endpoint = receiver.endpoint("grpc")
        with _start(tmp_path, upstream_server, endpoint, "grpc", OTEL_BSP_SCHEDULE_DELAY="60000") as server:
            await _one_echo(server.port)
            assert not [s for s in receiver.spans() if s.name == "connection echo"]
            assert server.stop(timeout=20) == 0
            output = server.output()
        span = receiver.wait_for_span(lambda s: s.name == "connection echo", timeout=5)
    assert span.resource["service.name"] == "shutdown-test"
    assert "did not send what they held" not in output, output
