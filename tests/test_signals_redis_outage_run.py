"""A Redis outage under load, as an operator sees it: statuses, log lines, metric points and the recovery.

A real ``asgi-ws-gateway run`` exporting to a real OTLP receiver, a real upstream, and a private
``redis-server`` (never the shared one) killed after a first handshake, then started again on its port.
Two APIs share the store: one's limit fails closed (503 + ``Retry-After: 1``), the other's open (admitted
unchecked). 100 handshakes on each through the outage: a few log lines, not one per handshake; every failed
call counted in ``ws_gateway.store.failures``; and, once Redis is back, one INFO line says so (it was a
WARNING: an alert on WARNING lines fired again as the outage ended) and the closed API admits again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from support.clients import echo_status, expect_status
from support.configs import api_entry, build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import GatewayProcess
from support.redis import RedisServer, unique_prefix
from support.signals import exporting_to
from support.upstream import UpstreamServer

HANDSHAKES = 100


def _limit(on_store_error: str) -> dict[str, object]:
    return {"rate-limit-by-key": {"key": "everyone", "limit": 10_000, "window": 60, "on_store_error": on_store_error}}


def _wait_for(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()}"
        time.sleep(0.05)


async def test_a_redis_outage_is_a_few_lines_a_metric_and_one_info_line_at_recovery(
    tmp_path: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OtlpReceiver() as otlp, RedisServer() as redis:
        for name, value in {**exporting_to(otlp), "OTEL_LOGS_EXPORTER": "none"}.items():
            monkeypatch.setenv(name, value)
        document = build_config(
            upstream, name="closed", path="/closed", api={"policies": [_limit("closed")]},
            more_apis=[api_entry(upstream, name="open", path="/open", policies=[_limit("open")])],
            store={"type": "redis", "url": redis.url, "prefix": unique_prefix(), "timeout": 0.3},
        )  # fmt: skip
        log = tmp_path / "gateway.log"
        config = str(write_config(tmp_path, document))
        async with GatewayProcess([config], cwd=tmp_path, workers=1, log=log, log_level="info") as gw:
            assert await echo_status(gw.url("/closed"), {}) == 101
            redis.stop()
            refusals = [await expect_status(gw.url("/closed")) for _ in range(HANDSHAKES)]
            admitted = [await echo_status(gw.url("/open"), {}) for _ in range(HANDSHAKES)]
            outage = await asyncio.to_thread(log.read_text)
            redis.start()
            await asyncio.to_thread(_wait_for, log, "Redis store answers again")
            assert await echo_status(gw.url("/closed"), {}) == 101
        points = otlp.latest("ws_gateway.store.failures").values()  # the last export: at the process's stop
        failures = {tuple(p.attributes.values()): p.value for p in points}
    output = log.read_text()
    assert {status for status, _headers, _body in refusals} == {503}
    assert {headers.get("retry-after") for _status, headers, _body in refusals} == {"1"}
    assert set(admitted) == {101}
    # Lines other than the access log's (one per handshake, by design): the outage's own.
    warnings = [line for line in outage.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(warnings) <= 6, "\n".join(warnings)  # store failed, 503s, unchecked: each once, plus one per 10 s
    assert sum(failures.values()) >= 2 * HANDSHAKES, failures  # every call that failed, "unavailable" ones too
    assert "INFO:     Redis store answers again" in output, output
    assert output.count("Redis store answers again") == 1, output
