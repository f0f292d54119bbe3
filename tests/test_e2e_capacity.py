"""End to end: a gateway process out of connections or file descriptors refuses with 503, blames no backend.

Real ``asgi-ws-gateway run`` processes under a small open-file limit (set on the supervisor before it
starts, as ``ulimit -n`` would), a real upstream, real sockets. Before: past the limit, upstream
connects failed with EMFILE, the client got 502 ``upstream_unreachable``, and three of them put the
healthy backends in cooldown; the process had no bound of its own on the connections it took.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway import load_config
from asgi_ws_gateway.errors import ConfigError, GatewayOverloaded, UpstreamUnreachable, local_shortage
from asgi_ws_gateway.handshake.capacity import RESERVED_DESCRIPTORS, check_capacity, descriptor_capacity
from asgi_ws_gateway.handshake.capacity import process_capacity as _capacity
from support.clients import connect, expect_status
from support.configs import api_entry, build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")

LIMIT = 128
CAPACITY = (LIMIT - RESERVED_DESCRIPTORS) // 2  # 32 proxied connections


@asynccontextmanager
async def _gateway(
    tmp_path: Path, upstream: UpstreamServer, open_files: tuple[int, int], passthrough: bool = True, **top: Any
) -> AsyncIterator[GatewayProcess]:
    """``run`` with two backends (both the same upstream), under the open-file limit ``open_files``;
    ``passthrough: false`` connects upstream with the websockets client instead of the splice's own."""
    api = {"upstreams": [upstream.url("/echo"), upstream.url("/echo?second")], "passthrough": passthrough}
    config = write_config(tmp_path, build_config(upstream, api=api, **top))
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, open_files=open_files,
                              log=tmp_path / "gateway.log", log_level="info") as gateway:  # fmt: skip
        yield gateway


def _log(tmp_path: Path) -> str:
    return (tmp_path / "gateway.log").read_text()


async def _echoes(ws: ClientConnection, text: str) -> None:
    await ws.send(text)
    assert await ws.recv() == text


async def _settled_descriptors(pid: int) -> int:
    """The process's open descriptors, once the count has not changed for 0.3 s (connections opened to it
    are accepted, closed ones released)."""
    count, since = -1, 0
    while since < 6:
        now = len(os.listdir(f"/proc/{pid}/fd"))
        count, since = now, since + 1 if now == count else 0
        await asyncio.sleep(0.05)
    return count


def _open_file_limits(pid: int) -> list[str]:
    """(soft, hard), as /proc shows the process's limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3:5]
    raise LookupError("no open-file limit in /proc")


def _get(port: int, path: str) -> tuple[int, Any]:
    """Status and JSON body of a plain GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_past_its_capacity_a_process_refuses_with_503_and_its_connections_keep_working(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    async with _gateway(tmp_path, upstream, (LIMIT, LIMIT)) as gateway, AsyncExitStack() as stack:
        url = gateway.url("/ws/echo")
        held = [await stack.enter_async_context(await connect(url)) for _ in range(CAPACITY)]
        status, headers, _ = await expect_status(url)
        assert (status, headers.get("retry-after")) == (503, "5")
        assert await asyncio.to_thread(_get, gateway.port, "/healthz") == (200, {"status": "ok"})  # in reserve
        assert await asyncio.to_thread(_get, gateway.port, "/readyz") == (503, {"status": "full"})
        for i, ws in enumerate(held):
            await _echoes(ws, f"still here {i}")
        await held.pop().close()
        async with asyncio.timeout(10):  # ready again once the closed connection's handshake task ends
            while (await asyncio.to_thread(_get, gateway.port, "/readyz"))[0] != 200:  # noqa: ASYNC110 - its state
                await asyncio.sleep(0.05)
        async with await connect(url) as ws:  # a place is free again
            await _echoes(ws, "admitted")
    log = _log(tmp_path)
    assert "handshake denied with 503 (over_capacity)" in log
    assert "skipped for" not in log and "Too many open files" not in log


async def test_run_raises_the_soft_open_file_limit_to_the_hard_one(tmp_path: Path, upstream: UpstreamServer) -> None:
    """Soft 96 would be 16 connections; ``run`` lifts it to the hard 512 (224 connections) at start."""
    async with _gateway(tmp_path, upstream, (96, 512)) as gateway, AsyncExitStack() as stack:
        assert _open_file_limits(gateway.process.pid) == ["512", "512"]  # type: ignore[union-attr]
        url = gateway.url("/ws/echo")
        for _ in range(40):
            await _echoes(await stack.enter_async_context(await connect(url)), "x")
    assert "open-file limit raised from 96 to 512" in _log(tmp_path)


async def test_max_connections_bounds_a_process_below_its_descriptors(tmp_path: Path, upstream: UpstreamServer) -> None:
    async with _gateway(tmp_path, upstream, (LIMIT, LIMIT), max_connections=3) as gateway, AsyncExitStack() as st:
        url = gateway.url("/ws/echo")
        for _ in range(3):
            await st.enter_async_context(await connect(url))
        assert (await expect_status(url))[0] == 503


@pytest.mark.parametrize("passthrough", [True, False], ids=["splice", "websockets-client"])
async def test_out_of_descriptors_at_the_upstream_connect_is_a_503_that_blames_no_backend(
    tmp_path: Path, upstream: UpstreamServer, passthrough: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's open-file limit lowered (``prlimit``) to what it holds plus one, as descriptors
    taken by what the capacity does not count would leave it: the client's socket is accepted and
    the upstream connect fails with EMFILE. (Idle connections no longer do it: they are shed near
    the limit, ``test_attack_idle_flood.py``.) Each refusal is counted in ``ws_gateway.handshakes``
    and its connect attempt in ``ws_gateway.upstream.connect.failures``, both as ``gateway_overloaded``."""
    with OtlpReceiver() as otlp:
        for name, value in {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "200",
                            "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        async with _gateway(tmp_path, upstream, (LIMIT, LIMIT), passthrough) as gateway:
            pid = gateway.process.pid  # type: ignore[union-attr]
            url = gateway.url("/ws/echo")
            try:
                for attempt in range(3):  # three in a row: before, the backends went into cooldown
                    # Leave the process exactly one descriptor: the client's socket takes it.
                    resource.prlimit(pid, resource.RLIMIT_NOFILE, (await _settled_descriptors(pid) + 1, LIMIT))
                    status, headers, _ = await expect_status(url)
                    assert (status, headers.get("retry-after")) == (503, "5"), attempt
            finally:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
            await asyncio.sleep(0.5)
            async with await connect(url) as ws:  # no backend is cooling down: served at once
                await _echoes(ws, "back")
        handshakes = otlp.latest("ws_gateway.handshakes")
        failures = otlp.latest("ws_gateway.upstream.connect.failures")
    log = _log(tmp_path)
    assert log.count("(gateway_overloaded)") >= 1  # a WARNING now and then through a flood, by reason
    assert "Too many open files (on the gateway)" in log
    assert log.count(" 503 echo denied (gateway_overloaded) ") == 3, log  # the access lines
    assert "skipped for" not in log and "upstream_unreachable" not in log
    refused = {("ws_gateway.handshake.outcome", "denied"), ("http.response.status_code", 503),
               ("error.type", "gateway_overloaded")}  # fmt: skip
    assert [point.value for attrs, point in handshakes.items() if refused <= attrs] == [3], handshakes
    # The attempts are counted as the gateway's own failure, not the backend's (docs/telemetry.md).
    assert sorted((p.attributes["error.type"], p.value) for p in failures.values()) == [("gateway_overloaded", 3)]


# -- pure -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL])
def test_local_shortages_are_the_gateways_503(code: int) -> None:
    refusal = local_shortage("ws://10.0.0.1:9000/x", OSError(code, os.strerror(code), "10.0.0.1"))
    assert isinstance(refusal, GatewayOverloaded)
    assert (refusal.status, refusal.reason) == (503, "gateway_overloaded")
    assert not isinstance(refusal, UpstreamUnreachable)


@pytest.mark.parametrize("code", [errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET, None])
def test_a_backends_failure_is_not_a_shortage(code: int | None) -> None:
    error = OSError(code, "boom") if code is not None else OSError("Multiple exceptions: ...")
    assert local_shortage("ws://10.0.0.1:9000/x", error) is None


def test_capacity_is_checked_with_this_handshake_counted() -> None:
    check_capacity(3, 3)
    check_capacity(10**6, None)
    with pytest.raises(GatewayOverloaded) as refused:
        check_capacity(4, 3)
    assert refused.value.reason == "over_capacity"


def test_max_connections_is_lowered_to_what_descriptors_allow(caplog: pytest.LogCaptureFixture) -> None:
    allowed = descriptor_capacity()
    assert allowed is not None  # Linux: a finite open-file limit
    assert _capacity(None) == allowed
    assert _capacity(1) == 1
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.handshake.capacity"):
        assert _capacity(allowed + 1) == allowed
    assert f"has room for {allowed} proxied connections" in caplog.text


@pytest.mark.parametrize("value", [0, -1, 10**8, "many", 2.5])
def test_an_invalid_max_connections_is_refused_by_field_path(value: object) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"apis": [api_entry()], "max_connections": value})
    assert "max_connections" in str(refused.value)
