"""Operator signals of one real ``asgi-ws-gateway run``, read as an operator reads them: the metric points a
real OTLP receiver got, beside the status or close code the client saw and the lines the process wrote.

Each failure class a client, an upstream, the store or the gateway itself can cause happens once: handshakes
refused by policies (401, 403, 429), by the gateway (400, 431, 503 over capacity / store down / draining,
504 policy timeout) and for the upstream (502, its own refusal, 504); connections ended by the client, the
upstream, the idle timeout, an oversize or bad frame and the drain, on the splice (an API without message
policies) and on the frame relay (an API with some); messages dropped or closed by message policies. Then
the exported points are checked against docs/telemetry.md ("Metrics"): the instrument, its attributes
(bounded: the API and its route, never a path, a client address or a value a client or policy chose), one
count per event, on the right API; and the instruments' names, units and kinds against the docs' table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.clients import connect, expect_close, expect_status
from support.jwts import HS_SECRET
from support.otlp import Point
from support.rawhttp import exchange, handshake, status_of
from support.signals import SignalsRun, signals_run
from support.upstream import UpstreamServer

DOCS = Path(__file__).parent.parent / "docs" / "telemetry.md"
BASE_KEYS = {"ws_gateway.api.name", "http.route", "network.protocol.name"}

POLICY_MODULE = '''
from asgi_ws_gateway.errors import DropMessage


async def drop_by_text(message):
    """A custom policy that drops every message, its reason taken from the message (the client's words)."""
    raise DropMessage(message.data if isinstance(message.data, str) else "binary", "dropped")
'''


@dataclass
class Run(SignalsRun):
    """What the scenario saw: the clients' results, beside the process's output and the receiver's points."""

    seen: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    upstream_port: int = 0


def _frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _raw_close_code(port: int, path: str, data: bytes) -> int:
    """Upgrade by hand, send ``data`` (a bad frame), answer the gateway's close frame; the code it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + data)  # fmt: skip
    await reader.readuntil(b"\r\n\r\n")
    async with asyncio.timeout(5):
        b0, b1 = await reader.readexactly(2)
        payload = await reader.readexactly(b1 & 0x7F)
    assert b0 & 0x0F == 0x8, payload
    writer.write(_frame(0x8, payload[:2]))  # the closing handshake answered
    await writer.drain()
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()
    await writer.wait_closed()
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


def _unsigned_rs256(kid: str) -> str:
    """A token naming a key the JWKS would have to be fetched for (the fetch never answers)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': kid, 'typ': 'JWT'})}.{part({'sub': 'x'})}.c2ln"


async def _status(url: str, **kw: Any) -> int:
    return (await expect_status(url, **kw))[0]


async def _clients(port: int, seen: dict[str, Any]) -> None:
    base = f"ws://127.0.0.1:{port}"
    for api in ("plain", "framed"):
        async with await connect(f"{base}/{api}/echo/0") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        for code in (1011, 4321):
            async with await connect(f"{base}/{api}/close/{code}") as ws:
                await ws.send("x")
                seen[f"{api} upstream {code}"] = (await expect_close(ws))[0]
        async with await connect(f"{base}/{api}/echo/0") as ws:
            await ws.send("y" * 3000)  # over max_message_size
            seen[f"{api} oversize"] = (await expect_close(ws))[0]
        seen[f"{api} bad opcode"] = await _raw_close_code(port, f"/{api}/echo/0", _frame(0x3, b"x"))
        async with await connect(f"{base}/{api}idle/echo/0") as ws:
            seen[f"{api} idle"] = (await expect_close(ws))[0]
    seen["framed bad utf-8"] = await _raw_close_code(port, "/framed/echo/0", _frame(0x1, b"\xff\xfe"))
    async with await connect(f"{base}/framed/echo/0") as ws:
        await ws.send("z" * 200)  # inbound limit 100, drop: an error reply
        seen["framed drop"] = json.loads(await ws.recv())["error"]
        await ws.send("q" * 60)  # passes inbound; its echo is over the outbound limit of 50: closed
        seen["framed outbound close"] = (await expect_close(ws))[0]
    async with await connect(f"{base}/custom/echo/0") as ws:
        for text in ("Alice's secret", "drop me 1", "drop me 2", *(f"r{i}" for i in range(70))):
            await ws.send(text)
            await ws.recv()  # the error reply
    async with await connect(f"{base}/cookies/cookie/0") as ws:  # Set-Cookie: wide=1; Path=/, held to the API's
        await ws.send("hi")
        assert await ws.recv() == "hi"
    # Handshakes refused.
    seen["401 missing"] = await _status(f"{base}/jwt/echo/0")
    seen["401 invalid"] = await _status(f"{base}/jwt/echo/0", additional_headers={"Authorization": "Bearer a.b.c"})
    seen["403 ip"] = await _status(f"{base}/ipf/echo/0")
    seen["403 origin"] = await _status(f"{base}/origin/echo/0", origin="https://evil.example")
    async with await connect(f"{base}/rate/echo/0"):
        pass
    seen["429 rate"] = await _status(f"{base}/rate/echo/0")
    async with await connect(f"{base}/conc/echo/0"):
        seen["429 concurrency"] = await _status(f"{base}/conc/echo/0")
    big = {f"x-h{i}": "a" * 7000 for i in range(5)}  # 35 KB in lines under 8 KiB: handshake_limits' 431
    seen["431 head"] = await _status(f"{base}/plain/echo/0", additional_headers=big)
    seen["400 dot segment"] = await _status(f"{base}/plain/%2e%2e/x")
    seen["404 unknown"] = await _status(f"{base}/nowhere/{os.urandom(4).hex()}")
    # A handshake the server's own protocol refuses, before any API (a Sec-WebSocket-Version it does not speak).
    seen["400 server"] = status_of(await exchange(port, handshake("/plain/echo/0", version=b"12")))
    seen["502 refused"] = await _status(f"{base}/down")
    seen["502 bad 101"] = await _status(f"{base}/plain/reject/200")
    seen["upstream 500"] = await _status(f"{base}/plain/reject/500")
    seen["504 connect"] = await _status(f"{base}/black")
    auth = {"Authorization": f"Bearer {_unsigned_rs256('k1')}"}
    seen["504 policy"] = await _status(f"{base}/hang/echo/0", additional_headers=auth)
    async with await connect(f"{base}/keys/echo/0?k=a"):
        pass
    seen["503 store"] = await _status(f"{base}/keys/echo/0?k=b")
    for key in ("a", "b"):  # the second admitted unchecked (its limit's store is full, fail-open)
        async with await connect(f"{base}/openkeys/echo/0?k={key}"):
            pass
    # A client that leaves while its handshake waits for the upstream: abandoned.
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /slow/a/b HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    await asyncio.sleep(0.3)
    writer.close()
    await writer.wait_closed()
    # Over capacity: max_connections 6, six held open.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(6):
            await stack.enter_async_context(await connect(f"{base}/plain/echo/0"))
        seen["503 capacity"] = await _status(f"{base}/framed/echo/0")


async def _drain(port: int, server_stop: Any, seen: dict[str, Any]) -> None:
    """SIGTERM with a connection open on each relay and a handshake waiting for its upstream."""
    base = f"ws://127.0.0.1:{port}"
    async with await connect(f"{base}/plain/echo/0") as plain, await connect(f"{base}/framed/echo/0") as framed:
        waiting = asyncio.ensure_future(_status(f"{base}/slow/slow/0"))
        await asyncio.sleep(0.3)  # the handshake waits for the slow upstream
        stopping = asyncio.ensure_future(asyncio.to_thread(server_stop))
        seen["drain plain"] = (await expect_close(plain))[0]
        seen["drain framed"] = (await expect_close(framed))[0]
        seen["503 draining"] = await waiting
        seen["exit"] = await stopping


def _config(upstream: int, black: int) -> dict[str, Any]:
    u = f"ws://127.0.0.1:{upstream}/{{a}}/{{b}}"

    def api(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "path": f"/{name}/{{a}}/{{b}}", "upstreams": [u], **fields}

    framed = {"inbound": [{"limit-message-size": {"max": 100, "action": "drop"}}],
              "outbound": [{"limit-message-size": {"max": 50}}]}  # fmt: skip
    jwks = f"http://127.0.0.1:{black}/jwks"
    custom = "signals_policy:drop_by_text"
    by_query = {"key": "{query.k}", "limit": 100, "window": 60}
    return {
        "max_connections": 6,
        "store": {"type": "memory", "max_keys": 1},
        "handshake_limits": {"policy_timeout": 0.3},
        "apis": [
            api("plain", max_message_size=1024),
            api("plainidle", idle_timeout=0.3),
            api("framed", max_message_size=1024, message_policies=framed),
            api("framedidle", idle_timeout=0.3, message_policies={"inbound": framed["inbound"]}),
            api("custom", message_policies={"inbound": [{"transform-message": {"call": custom}}]}),
            api("cookies"),  # its upstream's /cookie sets one for the whole origin
            api("jwt", policies=[{"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}]),
            api("ipf", policies=[{"ip-filter": {"deny": ["127.0.0.1"]}}]),
            api("origin", policies=[{"check-origin": {"allowed": ["https://ok.example"]}}]),
            api("rate", policies=[{"rate-limit-by-key": {"key": "all", "limit": 1, "window": 60}}]),
            api("conc", policies=[{"limit-concurrency": {"key": "all", "max": 1}}]),
            api("keys", policies=[{"rate-limit-by-key": {**by_query, "on_store_error": "closed"}}]),
            api("openkeys", policies=[{"rate-limit-by-key": by_query}]),
            api("hang", policies=[{"validate-jwt": {"algorithms": ["RS256"], "jwks_url": jwks}}]),
            {"name": "slow", "path": "/slow/{a}/{b}", "upstreams": [f"ws://127.0.0.1:{upstream}/slow?delay=2"]},
            {"name": "down", "path": "/down", "upstreams": ["ws://127.0.0.1:9/"]},
            {"name": "black", "path": "/black", "upstreams": [f"ws://127.0.0.1:{black}/"], "connect_timeout": 0.3},
        ],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("signals")
    (tmp / "signals_policy.py").write_text(POLICY_MODULE)
    result = Run()
    # A listener that never accepts: its backlog filled, a connect to it never completes (no SYN-ACK).
    with contextlib.ExitStack() as stack:
        black = stack.enter_context(socket.socket())
        upstream = stack.enter_context(UpstreamServer())
        black.bind(("127.0.0.1", 0))
        black.listen(0)
        fillers = [stack.enter_context(socket.socket()) for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(black.getsockname())
        result.upstream_port = upstream.port
        with signals_run(tmp, _config(upstream.port, black.getsockname()[1]), result) as server:
            asyncio.run(_clients(server.port, result.seen))
            asyncio.run(_drain(server.port, server.stop, result.seen))
    yield result


EXPECTED_STATUSES = {
    "401 missing": 401, "401 invalid": 401, "403 ip": 403, "403 origin": 403, "429 rate": 429,
    "429 concurrency": 429, "431 head": 431, "400 dot segment": 400, "404 unknown": 404, "400 server": 400,
    "502 refused": 502, "502 bad 101": 502, "upstream 500": 500, "504 connect": 504, "504 policy": 504,
    "503 store": 503, "503 capacity": 503, "503 draining": 503,
}  # fmt: skip


def test_the_clients_saw_the_documented_statuses_and_codes(run: Run) -> None:
    """The scenario itself: each failure happened as documented (else the metrics below prove nothing)."""
    assert {k: run.seen[k] for k in EXPECTED_STATUSES} == EXPECTED_STATUSES, run.output
    codes = {k: v for k, v in run.seen.items() if k.startswith(("plain ", "framed ", "drain "))}
    assert codes == {
        "plain upstream 1011": 1011, "plain upstream 4321": 4321, "plain oversize": 1009, "plain bad opcode": 1002,
        "plain idle": 1001, "framed upstream 1011": 1011, "framed upstream 4321": 4321, "framed oversize": 1009,
        "framed bad opcode": 1002, "framed idle": 1001, "framed bad utf-8": 1007, "framed drop": "message_too_big",
        "framed outbound close": 1001, "drain plain": 1012, "drain framed": 1012,
    }  # fmt: skip
    assert run.seen["exit"] == 0, run.output


REFUSALS = [  # API, status, error.type, the policy that denied (None: the gateway or the upstream)
    ("jwt", 401, "token_missing", "validate-jwt"),
    ("jwt", 401, "token_invalid", "validate-jwt"),
    ("ipf", 403, "ip_forbidden", "ip-filter"),
    ("origin", 403, "origin_forbidden", "check-origin"),
    ("rate", 429, "rate_limited", "rate-limit-by-key"),
    ("conc", 429, "concurrency_limited", "limit-concurrency"),
    ("plain", 431, "headers_too_large", None),
    ("plain", 400, "bad_request", None),
    ("down", 502, "upstream_unreachable", None),
    ("plain", 502, "upstream_unreachable", None),
    ("plain", 500, "upstream_rejected", None),
    ("black", 504, "upstream_timeout", None),
    ("hang", 504, "policy_timeout", None),
    ("keys", 503, "store_unavailable", "rate-limit-by-key"),
    ("framed", 503, "over_capacity", None),
    ("slow", 503, "draining", None),
]


@pytest.mark.parametrize(("api", "status", "error_type", "policy"), REFUSALS, ids=[f"{r[1]}-{r[2]}" for r in REFUSALS])
def test_each_refusal_counted_once_on_its_api(
    run: Run, api: str, status: int, error_type: str, policy: str | None
) -> None:
    """``ws_gateway.handshakes`` and the duration histogram: one count, denied, the status and reason,
    on the API the client asked for; ``ws_gateway.policy.denials`` when a policy denied."""
    attrs = {"ws_gateway__api__name": api, "http__response__status_code": status, "error__type": error_type}
    assert run.value("ws_gateway.handshakes", ws_gateway__handshake__outcome="denied", **attrs) == 1
    assert run.value("ws_gateway.handshake.duration", **attrs) == 1
    denials = run.value("ws_gateway.policy.denials", ws_gateway__api__name=api, http__response__status_code=status)
    if policy is not None:
        assert denials >= 1
        named = [s for s in run.latest("ws_gateway.policy.denials") if s["ws_gateway.api.name"] == api]
        assert {s["ws_gateway.policy.name"] for s in named} == {policy}


def test_a_handshake_the_client_left_is_counted_abandoned_without_a_status(run: Run) -> None:
    abandoned = [s for s in run.latest("ws_gateway.handshakes") if s["ws_gateway.handshake.outcome"] == "abandoned"]
    assert [(s["ws_gateway.api.name"], s["_value"]) for s in abandoned] == [("slow", 1)], abandoned
    assert "http.response.status_code" not in abandoned[0]


def test_a_path_no_api_serves_is_in_no_metric(run: Run) -> None:
    """404 (docs: no API, so no series; the path is the client's)."""
    assert not [p for p in run.points if p.attributes.get("http.response.status_code") == 404]
    assert not [p for p in run.points if "nowhere" in repr(p.attributes)]


CLOSES = [  # API, side, code: one count each
    ("plain", "client", 7), ("plain", "upstream", 1011), ("plain", "upstream", "4xxx"),
    ("plain", "gateway", 1009), ("plain", "gateway", 1002), ("plainidle", "gateway", 1001),
    ("framed", "client", 1000), ("framed", "upstream", 1011), ("framed", "upstream", "4xxx"),
    ("framed", "gateway", 1009), ("framed", "gateway", 1002), ("framed", "gateway", 1007),
    ("framedidle", "gateway", 1001), ("plain", "gateway", 1012), ("framed", "gateway", 1012),
]  # fmt: skip


@pytest.mark.parametrize(("api", "side", "code"), CLOSES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CLOSES])
def test_each_close_counted_once_by_side_and_code(run: Run, api: str, side: str, code: int | str) -> None:
    """One count per connection ended (the plain API's client 1000s: the echo and the six held at capacity)."""
    times = 1
    if (api, side, code) == ("plain", "client", 7):
        code, times = 1000, 7
    assert run.value("ws_gateway.connection.closes", ws_gateway__api__name=api, ws_gateway__close__side=side,
                     ws_gateway__close__code=code) == times  # fmt: skip


def test_a_narrowed_cookie_is_counted_on_its_api(run: Run) -> None:
    """The upstream's ``Set-Cookie: wide=1; Path=/`` held to ``/cookies``: one ``path_narrowed``, nothing else."""
    counted = [(s["ws_gateway.api.name"], s["ws_gateway.cookie.reason"], s["_value"])
               for s in run.latest("ws_gateway.cookies.changed")]  # fmt: skip
    assert counted == [("cookies", "path_narrowed", 1)], counted


def test_a_limit_admitting_unchecked_is_counted_on_its_api(run: Run) -> None:
    assert run.value("ws_gateway.policy.unchecked", ws_gateway__api__name="openkeys",
                     ws_gateway__policy__name="rate-limit-by-key") == 1  # fmt: skip
    assert run.value("ws_gateway.policy.unchecked") == 1


def test_process_wide_counters(run: Run) -> None:
    """The refused connect to port 9, by its errno's name; no connection shed; the store's failed calls."""
    assert run.value("ws_gateway.upstream.address.failures", error__type="refused") == 1
    assert run.value("ws_gateway.connections.shed") == 0
    assert run.value("ws_gateway.log.dropped") == 0  # its output read all along
    assert run.value("ws_gateway.jwks.failures") == 0  # no JWKS: each reason observed from the start, at 0
    # The memory store full (max_keys 1) for the second key of "keys" (503) and of "openkeys" (unchecked).
    failures = [(s["db.system"], s["db.operation"], s["error.type"], s["_value"])
                for s in run.latest("ws_gateway.store.failures")]  # fmt: skip
    assert failures == [("memory", "hit", "full", 2)], failures
    # The server's own refusal of a bad Sec-WebSocket-Version, and its INFO line.
    assert run.value("ws_gateway.server.refusals", http__response__status_code=400) == 1
    assert run.output.count('"WebSocket /plain/echo/0" 400 (invalid Sec-WebSocket-Version header)') == 1, run.output


def test_upstream_attempts_by_backend_and_outcome(run: Run) -> None:
    """One failed attempt per refusal the upstream caused, on its API and backend; none for a policy's."""
    failures = run.latest("ws_gateway.upstream.connect.failures")
    got = sorted((s["ws_gateway.api.name"], s["error.type"], s.get("http.response.status_code"), s["_value"])
                 for s in failures)  # fmt: skip
    assert got == [("black", "upstream_timeout", None, 1), ("down", "upstream_unreachable", None, 1),
                   ("plain", "upstream_rejected", 500, 1), ("plain", "upstream_unreachable", None, 1)]  # fmt: skip


def test_every_connection_closed_is_counted_once_and_none_left_open(run: Run) -> None:
    """Closes and the duration histogram agree with the accepted handshakes, API by API; nothing left open."""
    for api in ("plain", "framed", "plainidle", "framedidle", "conc", "rate", "keys", "openkeys", "custom"):
        accepted = run.value("ws_gateway.handshakes", ws_gateway__api__name=api,
                             ws_gateway__handshake__outcome="accepted")  # fmt: skip
        assert accepted >= 1, api
        assert run.value("ws_gateway.connection.closes", ws_gateway__api__name=api) == accepted, api
        assert run.value("ws_gateway.connection.duration", ws_gateway__api__name=api) == accepted, api
        assert run.value("ws_gateway.active_connections", ws_gateway__api__name=api) == 0, api


def test_message_policy_actions_by_policy_action_direction_and_reason(run: Run) -> None:
    framed = [s for s in run.latest("ws_gateway.policy.actions") if s["ws_gateway.api.name"] == "framed"]
    assert sorted((s["ws_gateway.policy.action"], s["ws_gateway.message.direction"], s["ws_gateway.policy.reason"],
                   s["_value"]) for s in framed) == [
        ("close", "upstream_to_client", "message_too_big", 1),
        ("drop", "client_to_upstream", "message_too_big", 1),
    ]  # fmt: skip


def test_a_reason_a_client_chose_adds_no_series(run: Run) -> None:
    """A custom message policy dropping with the message's own words as its reason: 73 drops, 73 reasons
    (one with a space and a quote). The metric keeps reasons shaped as codes, at most 64 per policy, the
    rest under ``_OTHER``; every drop counted."""
    custom = [s for s in run.latest("ws_gateway.policy.actions") if s["ws_gateway.api.name"] == "custom"]
    reasons = {s["ws_gateway.policy.reason"] for s in custom}
    assert sum(s["_value"] for s in custom) == 73
    assert "Alice's secret" not in reasons and "drop me 1" not in reasons
    assert len(reasons) <= 65 and "_OTHER" in reasons
    assert all(re.fullmatch(r"[a-z][a-z0-9_.-]*|_OTHER", reason) for reason in reasons), reasons


def _documented() -> dict[str, tuple[str, str, str, set[str]]]:
    """docs/telemetry.md's metrics table: instrument → (Prometheus name, type, unit, attribute keys)."""
    rows: dict[str, tuple[str, str, str, set[str]]] = {}
    text = DOCS.read_text().split("## Metrics", 1)[1].split("## The access log", 1)[0]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`ws_gateway."):
            keys = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", cells[4]))
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2], cells[3].strip("`"), keys)
    return rows


def test_names_units_and_kinds_as_documented(run: Run) -> None:
    documented = _documented()
    exported: dict[str, Point] = {}
    for point in run.points:
        exported.setdefault(point.metric, point)
    assert set(exported) == set(documented)  # every instrument the docs name, and no other
    for name, point in exported.items():
        prometheus, kind, unit, _keys = documented[name]
        assert point.unit == unit, name
        assert point.temporality == 2, name  # cumulative: the Collector's Prometheus exporter drops deltas
        word = {"s": "_seconds", "By": "_bytes"}.get(unit, "")  # an {annotation} adds nothing
        total = "_total" if point.kind == "sum" and point.monotonic else ""
        assert prometheus == name.replace(".", "_") + word + total, (name, prometheus)
        if point.kind == "histogram":
            assert kind == "Histogram", name
        elif point.monotonic:
            assert kind == "Counter (observable)", name
        else:
            assert kind == "UpDownCounter (observable)", name


PROCESS_WIDE = {"ws_gateway.upstream.address.failures", "ws_gateway.connections.shed", "ws_gateway.store.failures",
                "ws_gateway.server.refusals", "ws_gateway.log.dropped", "ws_gateway.jwks.failures"}  # fmt: skip
BACKEND_KEYS = {"ws_gateway.api.name", "network.protocol.name"}


def test_every_attribute_is_a_documented_one_with_a_bounded_value(run: Run) -> None:
    """Keys: the API's and the instrument's row, nothing else. Values: never a path, a port of a client, a
    client's text."""
    documented = _documented()
    for point in run.points:
        _prometheus, _kind, _unit, keys = documented[point.metric]
        if point.metric in PROCESS_WIDE:
            allowed = keys
        elif point.metric.startswith("ws_gateway.upstream."):
            allowed = keys | BACKEND_KEYS
        else:
            allowed = keys | BASE_KEYS
        assert set(point.attributes) <= allowed, (point.metric, set(point.attributes) - allowed)
        for key, value in point.attributes.items():
            text = str(value)
            assert "/echo/0" not in text and "nowhere" not in text and "secret" not in text, (point.metric, key)
            if key == "server.port":
                assert value in (run.upstream_port, 9) or isinstance(value, int), value
            if key == "http.route":
                assert "{" in text or text in ("/down", "/black"), text


def test_one_access_line_per_refusal_and_no_traceback(run: Run) -> None:
    """Each refusal: exactly one access line, naming its API, status and reason; no traceback anywhere."""
    assert "Traceback" not in run.output, run.output
    lines = Counter(re.findall(r'" (\d{3}) (\S+) denied \(([a-z_]+)', run.output))
    expected = Counter((str(status), api, error_type) for api, status, error_type, _policy in REFUSALS)
    assert lines == expected, run.output


def test_one_access_line_per_close_with_the_counted_side_and_code(run: Run) -> None:
    """Each close the metric counted (``CLOSES``) has its access line, naming the same API, side and code:
    what an operator reads in the log is what the alert counted."""
    folded: Counter[tuple[str, str, int | str]] = Counter()
    for api, side, code in re.findall(r'" 101 (\S+) closed by (\w+) with (\d+)', run.output):
        value: int | str = int(code) if not 4000 <= int(code) <= 4999 else "4xxx"
        folded[api, side, value] += 1
    for api, side, code in CLOSES:
        times = 1
        if (api, side, code) == ("plain", "client", 7):
            code, times = 1000, 7
        assert folded[api, side, code] == times, (api, side, code, run.output)
