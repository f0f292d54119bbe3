"""Shared fixtures: real upstream servers, uvicorn's WebSocket implementations and a uvicorn factory."""

from __future__ import annotations

import functools
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpcore2
import pytest
import redis.asyncio as redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway.redact import credential_names
from asgi_ws_gateway.redact import text as redact_text
from asgi_ws_gateway.telemetry import otlp_wire
from support.gateway import MODES, GatewayMode
from support.redis import SHARED_REDIS, unique_prefix
from support.redis_ha import RedisClusterSet, RedisSentinelSet, ha_available
from support.servers import WS_IMPLS, UpstreamServer, UvicornFactory, UvicornServer, WSImpl
from support.spans import NO_NATIVE_ENCODER

LONG_MODULES = (
    "test_conformance.py", "test_bench_smoke.py", "test_redis_failover.py", "test_attack_shutdown_signals.py",
    "test_attack_upstream_keepalive.py", "test_run_cli.py", "test_console_browser.py", "test_e2e_messages.py",
    "test_attack_changes_mgmt_workers.py", "test_management_cli.py", "test_attack_management_client.py",
    "test_attack_cswsh_warnings.py", "test_redis_ha.py", "test_attack_inprocess_upstream_faults.py",
    "test_telemetry_otlp_wire.py", "test_telemetry_e2e.py", "test_e2e_upstream_close.py",
    "test_run_slow_worker_start.py",
)  # fmt: skip
"""Modules that keep a worker 12 s or more (a full run's durations, longest first)."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long modules first, then the rest as collected.

    ``--dist loadfile`` gives a worker a whole module, and a worker takes its next one before it
    finishes the last two tests of the current one: a long module handed out near the end ran on one
    worker while the other had nothing left (xdist's own order, by number of tests, put modules of a
    few slow tests, the bench and Autobahn among them, last).
    """
    rank = {name: place for place, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


_default_ssl_context = httpcore2.default_ssl_context


@functools.cache
def _authorities(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """httpcore2's default context for these ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (read from the environment)."""
    return _default_ssl_context(_trust_env=bool(cafile or capath))


def _shared_default_ssl_context(*, _trust_env: bool = True) -> ssl.SSLContext:
    """httpcore2's default context, the authorities parsed once per test process and ``SSL_CERT_*`` values.

    Every ``httpx2`` client made with ``verify=True`` (the tests' own) parses the CA bundle, ~40 ms, and the
    suite makes thousands. None of them verifies a certificate with it (no test reaches a public host; the
    TLS tests bring contexts of their own), and httpcore2 changes the context only for a TLS connection.
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` get a context of their own (a test's CA), parsed once too: this
    machine's environment sets both, and every client parsed the bundle they name (150 ms at load 10).
    """
    if not _trust_env:
        return _authorities(None, None)
    return _authorities(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@pytest.fixture(scope="session", autouse=True)
def _ssl_authorities_parsed_once() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpcore2, "default_ssl_context", _shared_default_ssl_context)
        yield


@pytest.fixture(autouse=True)
def _credential_headers_as_found() -> Iterator[None]:
    """The header names gateways register as credentials (``redact.add_sensitive_headers``: a token header,
    a set-header copying a cookie) are the process's: a test's gateway registering ``X-Session`` changed how
    a later test's text was redacted. Each test leaves them as it found them (a module's gateway, set up
    before the test, keeps its own). So are the credential paths (``redact.add_credential_paths``)."""
    found = set(credential_names._extra_headers), redact_text._HEADER_IN_TEXT, redact_text._HEADER_NAMES
    paths = set(redact_text._credential_templates), redact_text._credential_paths
    yield
    credential_names._extra_headers.intersection_update(found[0])
    redact_text._HEADER_IN_TEXT, redact_text._HEADER_NAMES = found[1:]  # the patterns made of them
    redact_text._credential_templates.intersection_update(paths[0])
    redact_text._credential_paths = paths[1]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory of its own for a Unix socket (a socket's path is at most 107 bytes; pytest's are long)."""
    directory = Path(tempfile.mkdtemp(prefix="uds-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    """A running ``UpstreamServer`` that negotiates permessage-deflate."""
    with UpstreamServer(compression="deflate") as server:
        yield server


@pytest.fixture
def upstream_nodeflate() -> Iterator[UpstreamServer]:
    """A running ``UpstreamServer`` that refuses permessage-deflate."""
    with UpstreamServer(compression=None) as server:
        yield server


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[UpstreamServer]:
    """A running ``UpstreamServer`` with its defaults, one per test module (for module-scoped gateways)."""
    with UpstreamServer() as server:
        yield server


@pytest.fixture(params=WS_IMPLS)
def ws_impl(request: pytest.FixtureRequest) -> WSImpl:
    """Each of uvicorn's WebSocket implementations the end-to-end tests cover."""
    impl: WSImpl = request.param
    return impl


@pytest.fixture(params=MODES)
def gateway_mode(request: pytest.FixtureRequest) -> GatewayMode:
    """Each way the gateway serves a connection: relayed under each uvicorn implementation, spliced."""
    return GatewayMode(request.param)


@pytest.fixture
def uvicorn_server() -> Iterator[UvicornFactory]:
    """Factory ``start(app, ws=..., **config) -> UvicornServer``; every server is stopped at teardown."""
    with ExitStack() as stack:

        def start(
            app: Callable[..., Awaitable[None]], *, ws: WSImpl = "websockets-sansio", **config: Any
        ) -> UvicornServer:
            return stack.enter_context(UvicornServer(app, ws=ws, **config))

        yield start


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterSet]:
    """A real 3-master, 3-replica Redis Cluster for the session (tests use their own key prefix)."""
    if not ha_available():
        pytest.skip("redis-server and redis-cli are needed")
    with RedisClusterSet() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """A real Sentinel set (1 master, 1 replica, 3 sentinels) for the session."""
    if not ha_available():
        pytest.skip("redis-server and redis-cli are needed")
    with RedisSentinelSet() as sentinel:
        yield sentinel


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of its own on the shared Redis; its keys are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    client = redis.Redis.from_url(SHARED_REDIS)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider exporting to memory at once (``SimpleSpanProcessor``), and its exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture(scope="module", params=["c", "python"])
def span_encoder(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test of a module (``pytest.mark.usefixtures("span_encoder")``) twice: with the usual lean spans
    encoded by the C extension, then with every span in Python (the reference); the C run skipped when the
    extension is not built. Module-scoped: hypothesis's tests take no function-scoped fixture."""
    if request.param == "c" and otlp_wire.NATIVE_ENCODER is None:
        pytest.skip(NO_NATIVE_ENCODER)
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "python":
            patch.setattr(otlp_wire, "NATIVE_ENCODER", None)  # read by each SpanEncoder made
            patch.setattr(otlp_wire, "NATIVE_BATCH_ENCODER", None)
        yield request.param


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    """A meter provider read on demand (``get_metrics_data``), and its reader."""
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    yield provider, metric_reader
    provider.shutdown()
