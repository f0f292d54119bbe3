"""Pure logic of the relay and the backend pool: close-code mapping, reason capping, balancing order."""

from __future__ import annotations

import pytest

from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.relay.close_codes import wire_code, wire_reason
from asgi_ws_gateway.upstream.balancing import Backend, BackendPool
from asgi_ws_gateway.upstream.base import UpstreamRequest


@pytest.mark.parametrize(
    ("seen", "sent"),
    [(1000, 1000), (1001, 1001), (1005, 1000), (1006, 1011), (1015, 1011), (1004, 1011), (1012, 1012),
     (2999, 1011), (3000, 3000), (4999, 4999), (5000, 1011)],
)  # fmt: skip
def test_reserved_and_invalid_codes_never_reach_the_wire(seen: int, sent: int) -> None:
    assert wire_code(seen) == sent


def test_reason_is_capped_at_123_bytes_on_a_character_boundary() -> None:
    assert wire_reason("x" * 123) == "x" * 123
    assert wire_reason("x" * 200) == "x" * 123
    capped = wire_reason("é" * 100)  # 200 bytes; 123 would split a character
    assert capped == "é" * 61
    assert len(capped.encode()) == 122


class _NoConnector:
    async def connect(self, request: UpstreamRequest) -> object:  # pragma: no cover - never called
        raise AssertionError


def _pool(balancing: str = "round-robin", n: int = 3, **api: object) -> BackendPool:
    config = ApiConfig.model_validate(
        {"name": "a", "path": "/a", "upstreams": [f"ws://h{i}/" for i in range(n)], "balancing": balancing, **api}
    )
    backends = [Backend(label=f"b{i}", connector=_NoConnector(), index=i) for i in range(n)]  # type: ignore[arg-type]
    return BackendPool(config, backends)


def _labels(backends: list[Backend]) -> list[str]:
    return [b.label for b in backends]


def test_round_robin_rotates_the_first_choice() -> None:
    pool = _pool()
    assert [_labels(pool.order(now=0))[0] for _ in range(4)] == ["b0", "b1", "b2", "b0"]
    assert _labels(pool.order(now=0)) == ["b1", "b2", "b0"]  # the rest are the failover order


def test_least_connections_orders_by_connections_then_rotation() -> None:
    pool = _pool("least-connections")
    pool.backends[0].connections = 2  # connects under way count as connections do
    pool.backends[1].connections = 1
    assert _labels(pool.order(now=0)) == ["b2", "b1", "b0"]


def test_failing_backend_cools_down_then_returns() -> None:
    pool = _pool(unhealthy_after=2, cooldown=10)
    b0 = pool.backends[0]
    pool.record_failure(b0, now=100)
    assert b0.healthy(100)  # one failure is not enough
    pool.record_failure(b0, now=100)
    assert not b0.healthy(105)
    assert "b0" not in _labels(pool.order(now=105))
    assert b0.healthy(110)
    pool.record_success(b0)
    assert b0.failures == 0


def test_all_backends_cooling_down_are_all_tried() -> None:
    pool = _pool(n=2, unhealthy_after=1, cooldown=10)
    for backend in pool.backends:
        pool.record_failure(backend, now=0)
    assert sorted(_labels(pool.order(now=1))) == ["b0", "b1"]


def test_a_backend_starting_to_cool_is_logged_once_not_per_failure_while_down(caplog: pytest.LogCaptureFixture) -> None:
    """With every backend cooling the pool tries them anyway: a handshake flood used to log each failure."""
    pool = _pool(n=1, unhealthy_after=3, cooldown=10)
    b0 = pool.backends[0]
    for second in range(12):  # 3 to start cooling, then 9 more within the cooldown each extends
        pool.record_failure(b0, now=100 + second * 0.5)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == "backend b0 of API a failed 3 times in a row; skipped for 10 s"
    pool.record_failure(b0, now=200)  # its cooldown ended: failing again starts another
    assert len(caplog.records) == 2


def test_a_backend_that_never_cools_logs_its_failures_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    """``cooldown: 0`` (never skip a backend) started a cooldown with each failure, and each wrote a WARNING:
    50 a second for a backend down under 50 handshakes a second. Now one per 10 s, with a count."""
    pool = _pool(n=1, unhealthy_after=1, cooldown=0)
    b0 = pool.backends[0]
    for tick in range(500):  # 50 failed handshakes a second for 10 s
        pool.record_failure(b0, now=100 + tick * 0.02)
    assert [r.getMessage() for r in caplog.records] == ["backend b0 of API a failed 1 times in a row; skipped for 0 s"]
    pool.record_failure(b0, now=110)  # COOLING_LINES (10 s) after the first line
    assert caplog.records[-1].getMessage() == (
        "backend b0 of API a failed 501 times in a row; skipped for 0 s (499 more such since the last line)"
    )
