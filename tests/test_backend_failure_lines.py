"""A backend that is down writes its "failed" line now and then with how many, not one per handshake
(docs/telemetry.md: a flood of 502s is not a second line per handshake)."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.errors import UpstreamUnreachable
from asgi_ws_gateway.log_throttle import OutageLog
from asgi_ws_gateway.upstream.balancing import Backend, BackendPool
from asgi_ws_gateway.upstream.base import Connector


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _down(backend: Backend) -> Any:
    raise UpstreamUnreachable(f"{backend.label} is unreachable: [Errno 111] Connection refused")


def _pool(clock: _Clock, *labels: str) -> BackendPool:
    api = ApiConfig.model_validate({"name": "chat", "path": "/ws", "upstreams": [f"ws://{x}/" for x in labels]})
    backends = [Backend(label, cast(Connector, None), i) for i, label in enumerate(labels)]
    for backend in backends:
        backend.failure_log = OutageLog(clock=clock)
    return BackendPool(api, backends)


def _failed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]


async def test_a_flood_of_handshakes_to_a_down_backend_writes_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 refused handshakes: one line at once; the next, an interval later, says how many it stands for."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    clock = _Clock()
    pool = _pool(clock, "a:1")
    for _ in range(100):
        with pytest.raises(UpstreamUnreachable):
            await pool.open(_down)
    assert _failed_lines(caplog) == ["API chat: backend a:1 failed: a:1 is unreachable: [Errno 111] Connection refused"]
    clock.now = 10.0
    with pytest.raises(UpstreamUnreachable):
        await pool.open(_down)
    assert _failed_lines(caplog)[1].endswith("refused (99 more since the last such line)")
    assert len(_failed_lines(caplog)) == 2


async def test_failover_throttles_each_backend_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """With failover over two down backends, each has its first line, and no more per handshake."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    pool = _pool(_Clock(), "a:1", "b:2")
    for _ in range(20):
        with pytest.raises(UpstreamUnreachable):
            await pool.open(_down)
    assert sorted(line.split()[3] for line in _failed_lines(caplog)) == ["a:1", "b:2"]
