"""Operator signals of a failing limit store: every failed store call is counted in
``ws_gateway.store.failures`` (``db.system``, ``db.operation``, ``error.type``), beside the log line.

A concurrency lease whose release failed at its connection's end was logged ("could not release") and
counted nowhere: an operator alerting on metrics never saw leases left counted against their tenant until
``lease_ttl``. A real ``asgi-ws-gateway run`` exporting to a real OTLP receiver, real clients and upstream,
and a real Redis made to fail once a connection holds its lease: killed (the connection refused) or hung
(the shared Redis behind a proxy that stops answering: the store's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clients import connect, echo_status
from support.configs import api_entry, build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import GatewayProcess
from support.redis import DelayingProxy, RedisServer, redis_available
from support.signals import exporting_to
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")

FAILURES = "ws_gateway.store.failures"


@contextlib.contextmanager
def _killed() -> Iterator[tuple[str, Callable[[], None]]]:
    """A private redis-server, and what kills it."""
    with RedisServer() as server:
        yield server.url, server.stop


@contextlib.contextmanager
def _hung() -> Iterator[tuple[str, Callable[[], None]]]:
    """The shared Redis behind a proxy, and what makes it take every command and answer none."""
    with DelayingProxy() as proxy:

        def hang() -> None:
            proxy.delay = 3600

        yield proxy.url, hang


FAULTS = {"killed": (_killed, "connection"), "hung": (_hung, "timeout")}


def _export_to(otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway started next sends its metrics to ``otlp``, and no logs."""
    for name, value in {**exporting_to(otlp), "OTEL_LOGS_EXPORTER": "none"}.items():
        monkeypatch.setenv(name, value)


def _failures(otlp: OtlpReceiver) -> dict[tuple[Any, Any, Any], float]:
    """The latest ``ws_gateway.store.failures`` by (system, operation, error type)."""
    return {
        (p.attributes.get("db.system"), p.attributes.get("db.operation"), p.attributes.get("error.type")): p.value
        for p in otlp.latest(FAILURES).values()
    }


async def _until_counted(otlp: OtlpReceiver, operation: str) -> dict[tuple[Any, Any, Any], float]:
    deadline = time.monotonic() + 15
    while not any(op == operation for _system, op, _error in _failures(otlp)):
        assert time.monotonic() < deadline, f"no {FAILURES} point for {operation}: {_failures(otlp)}"
        await asyncio.sleep(0.1)
    return _failures(otlp)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failed_lease_release_and_an_unchecked_limit_are_counted_by_operation_and_error(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """Redis fails after the lease was taken: the release at the connection's end fails (its WARNING line)
    and is counted as a ``release`` with the fault's error type; the next handshake's rate limit, admitted
    unchecked, as a ``hit``. The attributes are the documented ones, with bounded values."""
    make, error_type = FAULTS[fault]
    with OtlpReceiver() as otlp, make() as (url, fail):
        _export_to(otlp, monkeypatch)
        lease = {"limit-concurrency": {"key": "everyone", "max": 5, "lease_ttl": 60}}
        rate = {"rate-limit-by-key": {"key": "everyone", "limit": 100, "window": 60}}
        document = build_config(
            upstream, name="conc", path="/conc", api={"policies": [lease]},
            more_apis=[api_entry(upstream, name="rate", path="/rate", policies=[rate])],
            store={"type": "redis", "url": url, "prefix": redis_prefix, "timeout": 0.3},
        )  # fmt: skip
        log = tmp_path / "gateway.log"
        async with GatewayProcess([str(write_config(tmp_path, document))], cwd=tmp_path, workers=1, log=log) as gw:
            async with await connect(gw.url("/conc")) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                fail()
            counted = await _until_counted(otlp, "release")
            assert counted[("redis", "release", error_type)] >= 1, counted
            assert await echo_status(gw.url("/rate"), {}) == 101  # fail-open: admitted unchecked
            counted = await _until_counted(otlp, "hit")
    output = log.read_text()
    assert "could not release 1 concurrency lease(s)" in output, output
    assert "Traceback" not in output, output
    operations = {op for _system, op, _error in counted}
    assert {"release", "hit"} <= operations <= {"acquire", "release", "renew", "hit"}, counted
    assert {system for system, _op, _error in counted} == {"redis"}, counted
    # The first failed call meets the fault itself; calls during the store's retry window answer at once.
    assert {error for _system, _op, error in counted} <= {error_type, "unavailable"}, counted
    point = next(iter(otlp.latest(FAILURES).values()))
    assert point.unit == "{operation}" and point.kind == "sum" and point.monotonic, point
    assert set(point.attributes) == {"db.system", "db.operation", "error.type"}, point.attributes


async def test_a_store_call_cut_short_by_policy_timeout_is_counted_as_a_timeout(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that takes every command and answers none, behind a ``policy_timeout`` shorter than the
    store's ``timeout``: the handshake is a 504 and the store call it cut short a ``timeout``. Such a
    call was counted nowhere: the store's own timeout never came, and the metric showed a healthy store."""
    with OtlpReceiver() as otlp, _hung() as (url, hang):
        hang()
        _export_to(otlp, monkeypatch)
        rate = {"rate-limit-by-key": {"key": "everyone", "limit": 100, "window": 60}}
        document = build_config(
            upstream, name="rate", path="/rate", api={"policies": [rate]},
            store={"type": "redis", "url": url, "prefix": redis_prefix, "timeout": 30},
            handshake_limits={"policy_timeout": 0.3},
        )  # fmt: skip
        log = tmp_path / "gateway.log"
        async with GatewayProcess([str(write_config(tmp_path, document))], cwd=tmp_path, workers=1, log=log) as gw:
            assert await echo_status(gw.url("/rate"), {}) == 504
            counted = await _until_counted(otlp, "hit")
    output = log.read_text()
    assert counted == {("redis", "hit", "timeout"): 1}, counted
    assert "handshake denied with 504 (policy_timeout): handshake policy rate-limit-by-key" in output, output
    assert "Traceback" not in output, output
