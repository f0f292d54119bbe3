"""Each way the gateway ends a connection that ``tests/test_signals_metrics_run.py`` does not cover, under one
real ``asgi-ws-gateway run`` exporting to a real OTLP receiver: the code the client got, the access line
(side, code, reason) and ``ws_gateway.connection.closes`` (side, code) agree, once each, with no traceback
to the client. The maximum lifetime, a credential expiring, a message policy that fails, a client that
answers no ping, an upstream or a client that drops its TCP connection, a subscription expiring or revoked
(suspended with ``?drain=true``), a kick through the management API, a client or an upstream that reads
nothing while the other side streams to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway.management import ManagementClient
from support.clients import connect, expect_close
from support.jwts import HS_SECRET, token
from support.management import TOKEN
from support.rawhttp import handshake
from support.rawws import next_frame, raw_client_of
from support.signals import SignalsRun, signals_run
from support.unread import small_socket
from support.upstream import UpstreamServer

POLICY_MODULE = '''
async def fail(message):
    """A custom message policy with a bug."""
    raise RuntimeError("a bug in a message policy")
'''
REASONS = {"subscribed": "subscription expired", "revoked": "subscription revoked", "kicked": "bye"}
KEY = "X-Subscription-Key"
UNREAD = "passthrough: the client read nothing for 0.5 s"
KEEPALIVE = {"ping_interval": 0.2, "ping_timeout": 0.5, "close_timeout": 0.5}
JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}

CASES = {  # API: the code the client gets, the side and code counted, a line besides the access line
    "life": (1001, "gateway", 1001, None),
    "expiry": (1008, "gateway", 1008, None),
    "broken": (1011, "gateway", 1011, "ERROR:    API broken: message policy transform-message failed"),
    "deaf": (1006, "client", 1006, "passthrough: the client did not answer a ping in 0.3 s; dropping it"),
    "crash": (1011, "upstream", 1006, "it failed a connection 0.0 s after accepting it (1006"),
    "gone": (None, "client", 1006, None),
    "subscribed": (1008, "gateway", 1008, None),
    "revoked": (1001, "gateway", 1001, None),  # drain_close_code, reason "subscription revoked"
    "kicked": (4000, "gateway", 4000, None),
    "unread": (None, "gateway", 1006, UNREAD),
    "deafup": (1011, "gateway", 1011, "passthrough: the upstream read nothing for 0.5 s"),
}


@dataclass
class Run(SignalsRun):
    seen: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

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
        "products": [{"name": "timed", "apis": ["subscribed", "revoked"]}],
        "apis": [
            api("life", max_lifetime=0.5),
            api("expiry", policies=[JWT], message_policies={"inbound": [{"credential-expiry": {}}]}),
            api("broken", message_policies={"inbound": [{"transform-message": {"call": "close_reasons_policy:fail"}}]}),
            api("deaf", ping_interval=0.2, ping_timeout=0.3),
            api("crash", "vanish"),
            api("gone"),
            api("subscribed"),
            api("revoked"),
            api("kicked"),
            api("unread", "flood/65536", **KEEPALIVE),
            api("deafup", "stall/4096", **KEEPALIVE),
        ],
    }


async def _clients(
    port: int, seen: dict[str, Any], reasons: dict[str, str], wait_for_line: Callable[[str], None]
) -> None:
    base = f"ws://127.0.0.1:{port}"
    async with ManagementClient(f"http://127.0.0.1:{port}/_gateway", token=TOKEN) as manage:
        expiring, revoked = [await manage.create_subscription("timed", expires_at=expires) for expires in (
            datetime.fromtimestamp(time.time() + 2, UTC), None)]  # fmt: skip

        async def subscribed() -> None:  # while the other cases run
            async with await connect(f"{base}/subscribed", additional_headers={KEY: expiring["key"]}) as ws:
                seen["subscribed"], reasons["subscribed"] = await expect_close(ws)

        expiry = asyncio.create_task(subscribed())
        async with await connect(f"{base}/revoked", additional_headers={KEY: revoked["key"]}) as ws:
            await manage.suspend_subscription(revoked["id"], drain=True)
            seen["revoked"], reasons["revoked"] = await expect_close(ws)
        async with await connect(f"{base}/kicked") as ws:
            (live,) = await manage.list_connections("kicked")
            await manage.kick(live["id"], 4000, "bye")
            seen["kicked"], reasons["kicked"] = await expect_close(ws)
    unread = small_socket(port)  # sends its handshake, then reads nothing of what the upstream streams
    unread.send(handshake("/unread"))
    await asyncio.to_thread(wait_for_line, UNREAD)
    unread.close()
    seen["unread"] = None  # dropped: no close frame it could read
    async with await connect(f"{base}/deafup", ping_interval=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await ws.send(b"z" * 60000)
                    await asyncio.sleep(0)  # else send() never yields while it has room: the close frame unread
        seen["deafup"] = (await expect_close(ws))[0]
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
    await expiry


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("closes")
    (tmp / "close_reasons_policy.py").write_text(POLICY_MODULE)
    result = Run()
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}
    with (
        UpstreamServer() as upstream,
        signals_run(tmp, _config(upstream.port), result, arguments=["--management", "/_gateway"], env=env) as server,
    ):
        asyncio.run(_clients(server.port, result.seen, result.reasons, server.wait_for_line))
        time.sleep(0.5)  # the last close's access line and metric
        assert server.stop() == 0
    yield result


@pytest.mark.parametrize("api", list(CASES))
def test_the_client_code_the_access_line_and_the_metric_agree(run: Run, api: str) -> None:
    client_code, side, code, line = CASES[api]
    assert run.seen[api] == client_code, (run.seen, run.output)
    lines = re.findall(rf'"WebSocket /{api}" 101 {api} closed by (\w+) with (\d+) ', run.output)
    assert [(found_side, int(found_code)) for found_side, found_code in lines] == [(side, code)], run.output
    if line is not None:
        assert run.output.count(line) == 1, run.output
    counted = "4xxx" if 4000 <= code < 5000 else code  # the application's own codes as one value
    assert run.closes(api) == {(side, counted): 1}, run.points


def test_no_traceback_but_the_failing_policy_s_own(run: Run) -> None:
    """The broken policy's exception is logged (an ERROR with its traceback: a bug to fix); nothing else."""
    assert run.output.count("Traceback") == 1, run.output


@pytest.mark.parametrize("api", list(REASONS))
def test_the_documented_reason_reaches_the_client(run: Run, api: str) -> None:
    assert run.reasons[api] == REASONS[api], run.reasons
