"""Each way the gateway ends a connection that ``tests/test_signals_metrics_run.py`` does not cover, under one
real ``asgi-ws-gateway run`` exporting to a real OTLP receiver: the code the client got, the access line
(side, code, reason) and ``ws_gateway.connection.closes`` (side, code) agree, once each, with no traceback
to the client. The maximum lifetime, a credential expiring, a message policy that fails, a client that
answers no ping, an upstream or a client that drops its TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from support.clients import connect, expect_close
from support.jwts import HS_SECRET, token
from support.otlp import OtlpReceiver, Point
from support.processes import SRC, ready_server
from support.rawws import next_frame, raw_client_of
from support.upstream import UpstreamServer

POLICY_MODULE = '''
async def fail(message):
    """A custom message policy with a bug."""
    raise RuntimeError("a bug in a message policy")
'''
JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}

CASES = {  # API: the code the client gets, the side and code counted, a line besides the access line
    "life": (1001, "gateway", 1001, None),
    "expiry": (1008, "gateway", 1008, None),
    "broken": (1011, "gateway", 1011, "ERROR:    API broken: message policy transform-message failed"),
    "deaf": (1006, "client", 1006, "passthrough: the client did not answer a ping in 0.3 s; dropping it"),
    "crash": (1011, "upstream", 1006, "it failed a connection 0.0 s after accepting it (1006"),
    "gone": (None, "client", 1006, None),
}


@dataclass
class Run:
    seen: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    points: list[Point] = field(default_factory=list)

    def closes(self, api: str) -> dict[tuple[Any, Any], float]:
        last: dict[tuple[Any, Any], float] = {}
        for p in self.points:
            if p.metric == "ws_gateway.connection.closes" and p.attributes["ws_gateway.api.name"] == api:
                last[p.attributes["ws_gateway.close.side"], p.attributes["ws_gateway.close.code"]] = p.value
        return last


def _config(upstream: int) -> dict[str, Any]:
    def api(name: str, path: str = "echo", **fields: Any) -> dict[str, Any]:
        return {"name": name, "path": f"/{name}", "upstreams": [f"ws://127.0.0.1:{upstream}/{path}"], **fields}

    return {
        "apis": [
            api("life", max_lifetime=0.5),
            api("expiry", policies=[JWT], message_policies={"inbound": [{"credential-expiry": {}}]}),
            api("broken", message_policies={"inbound": [{"transform-message": {"call": "close_reasons_policy:fail"}}]}),
            api("deaf", ping_interval=0.2, ping_timeout=0.3),
            api("crash", "vanish"),
            api("gone"),
        ]
    }


async def _clients(port: int, seen: dict[str, Any]) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with await connect(f"{base}/life") as ws:
        seen["life"] = (await expect_close(ws))[0]
    await asyncio.sleep(1 - time.time() % 1)  # exp is in whole seconds: a token that lives ~1 s
    async with await connect(f"{base}/expiry", additional_headers={"Authorization": f"Bearer {token(ttl=1)}"}) as ws:
        seen["expiry"] = (await expect_close(ws))[0]
    async with await connect(f"{base}/broken") as ws:
        await ws.send("x")
        seen["broken"] = (await expect_close(ws))[0]
    reader, writer = await raw_client_of(f"{base}/deaf")  # reads, never answers a ping
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        async with asyncio.timeout(10):
            while (await next_frame(reader))[0] == 0x9:
                pass
            seen["deaf"] = "a frame that is not a ping"
    seen.setdefault("deaf", 1006)  # the connection dropped, no close frame
    writer.close()
    async with await connect(f"{base}/crash") as ws:
        await ws.send("x")
        seen["crash"] = (await expect_close(ws))[0]
    reader, writer = await raw_client_of(f"{base}/gone")
    writer.transport.abort()  # no close frame
    seen["gone"] = None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("closes")
    (tmp / "close_reasons_policy.py").write_text(POLICY_MODULE)
    result = Run()
    with UpstreamServer() as upstream, OtlpReceiver() as otlp:
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(_config(upstream.port)))
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "200",
               "OTEL_TRACES_EXPORTER": "none", "PYTHONPATH": os.pathsep.join([str(tmp), str(SRC)])}  # fmt: skip
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "info"]
        with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp, env=env) as server:
            asyncio.run(_clients(server.port, result.seen))
            time.sleep(0.5)  # the last close's access line and metric
            assert server.stop() == 0
            result.output = server.output()
        result.points = otlp.points()
    yield result


@pytest.mark.parametrize("api", list(CASES))
def test_the_client_code_the_access_line_and_the_metric_agree(run: Run, api: str) -> None:
    client_code, side, code, line = CASES[api]
    assert run.seen[api] == client_code, (run.seen, run.output)
    lines = re.findall(rf'"WebSocket /{api}" 101 {api} closed by (\w+) with (\d+) ', run.output)
    assert [(found_side, int(found_code)) for found_side, found_code in lines] == [(side, code)], run.output
    if line is not None:
        assert run.output.count(line) == 1, run.output
    assert run.closes(api) == {(side, code): 1}, run.points


def test_no_traceback_but_the_failing_policy_s_own(run: Run) -> None:
    """The broken policy's exception is logged (an ERROR with its traceback: a bug to fix); nothing else."""
    assert run.output.count("Traceback") == 1, run.output
