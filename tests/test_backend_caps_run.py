"""Backend caps under one real ``asgi-ws-gateway run`` (metrics to a real OTLP receiver, the management API on):
a backend at its ``max_connections`` refuses the next client with 503 ``upstream_full``, counted in
``ws_gateway.handshakes`` with its ``error.type``, one access line and one WARNING naming the API and the
backend; a cap raised through the management API (``PUT /apis/{name}``) admits the client at once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from asgi_ws_gateway.management import ManagementClient
from support.clients import connect, expect_status
from support.management import TOKEN
from support.signals import SignalsRun, signals_run
from support.upstream import UpstreamServer


@dataclass
class Run(SignalsRun):
    seen: list[int] = field(default_factory=list)
    backend: str = ""


def _api(backend: str, cap: int) -> dict[str, Any]:
    return {"name": "capped", "path": "/capped", "upstreams": [{"url": backend, "max_connections": cap}],
            "max_connecting": 8}  # fmt: skip


async def _clients(port: int, backend: str, seen: list[int]) -> None:
    url = f"ws://127.0.0.1:{port}/capped"
    async with await connect(url):
        seen.append(101)
        seen.append((await expect_status(url))[0])  # the one slot is taken
        async with ManagementClient(f"http://127.0.0.1:{port}/_gateway", token=TOKEN) as manage:
            await manage.replace_api("capped", _api(backend, 2))
        async with await connect(url):
            seen.append(101)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("caps")
    result = Run()
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}
    with UpstreamServer() as upstream:
        result.backend = upstream.url("/echo")
        config = {"apis": [_api(result.backend, 1)]}
        with signals_run(tmp, config, result, arguments=["--management", "/_gateway"], env=env) as server:
            asyncio.run(_clients(server.port, result.backend, result.seen))
            assert server.stop() == 0
    yield result


def test_the_client_past_the_cap_is_refused_and_admitted_once_it_is_raised(run: Run) -> None:
    assert run.seen == [101, 503, 101], run.output


def test_the_refusal_is_counted_with_its_error_type(run: Run) -> None:
    where = {"ws_gateway__api__name": "capped", "http__response__status_code": 503}
    assert run.value("ws_gateway.handshakes", **where, ws_gateway__handshake__outcome="denied",
                     error__type="upstream_full") == 1  # fmt: skip
    assert run.value("ws_gateway.handshakes", ws_gateway__api__name="capped",
                     ws_gateway__handshake__outcome="accepted") == 2  # fmt: skip


def test_one_access_line_and_one_warning_naming_the_api_and_backend(run: Run) -> None:
    assert len(re.findall(r'" 503 capped denied \(upstream_full', run.output)) == 1, run.output
    warnings = [line for line in run.output.splitlines() if "WARNING" in line and "upstream_full" in line]
    assert len(warnings) == 1, run.output
    assert "API capped" in warnings[0] and f"{run.backend} (1 of 1)" in warnings[0], warnings
    assert "Traceback" not in run.output
