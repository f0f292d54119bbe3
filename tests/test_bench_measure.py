"""The bench's CPU figures: read to the nanosecond, and a proxy whose CPU cannot be measured gets no figure
(None and a warning), never a 0.0 that reads as a proxy that costs nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.paths import url
from bench.procs import Service, free_port
from bench.runner import upstream_server
from bench.scenarios import ECHO_64, Timing, measure, unmeasured_proxy

ROOT = Path(__file__).resolve().parent.parent
SMOKE_TIMING = Timing(0.02, 0.06, (20,), 5, 30.0, 0.01)
# Listens (what Service.start waits for), then spends CPU_SECONDS of CPU, prints the CPU time it has used by
# its own clock, and sleeps without a timer: from then on it uses none.
BURNER = """
import signal, socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while time.process_time() < float(sys.argv[2]):
    pass
print(repr(time.process_time()), flush=True)
signal.pause()
"""


def _service(tmp_path: Path, cpu_seconds: float) -> Service:
    port = free_port()
    argv = [sys.executable, "-c", BURNER, str(port), str(cpu_seconds)]
    return Service("idle", argv, port=port, log=tmp_path / f"idle-{port}.log")


def _printed(service: Service) -> float:
    """The CPU seconds the burner printed, once it has."""
    for _ in range(600):
        text = service.log.read_text()
        if text.endswith("\n"):
            return float(text)
        time.sleep(0.05)
    raise AssertionError(f"the burner printed nothing: {service.log.read_text()!r}")


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.chdir(ROOT)  # the generator is `python -m bench.loadgen` from this checkout
    with upstream_server(tmp_path) as service:
        yield service


def test_a_process_cpu_time_is_read_to_the_nanosecond(tmp_path: Path) -> None:
    """Not in clock ticks (10 ms), which gave 0.0 s for a proxy's 6 ms in a 0.06 s window."""
    with _service(tmp_path, 0.025) as service:
        used = _printed(service)
        assert used <= service.cpu_seconds() < used + 0.01, used


def test_a_proxy_that_used_no_cpu_while_messages_flowed_gets_no_cpu_figure(upstream: Service, tmp_path: Path) -> None:
    """The generator echoes through the upstream alone: the "proxy" read is not the process that relayed."""
    with _service(tmp_path, 0.0) as idle:
        _printed(idle)
        metrics, warnings = measure(ECHO_64, url(upstream.port), SMOKE_TIMING, proxy=idle, upstream=upstream)
    assert metrics["messages_per_s"]
    assert metrics["proxy_cpu_util"] is None and metrics["proxy_cpu_us_per_message"] is None, metrics
    assert metrics["other_cores"] is None, metrics  # the proxy's share would be counted in it
    assert [w for w in warnings if w.startswith("proxy CPU not measured: 0.000000 s read for idle")], warnings


def test_a_proxy_that_exited_gets_no_cpu_figure(tmp_path: Path) -> None:
    with _service(tmp_path, 0.0) as service:
        service.stop()
        assert unmeasured_proxy(service, 0.01, 100) == "proxy CPU not measured: idle exited in the window"
