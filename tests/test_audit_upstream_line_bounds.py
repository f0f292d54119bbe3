"""Every line the gateway writes to an upstream fits the 8,192 bytes (CRLF included) a ``websockets``
server reads (``http11.MAX_LINE_LENGTH``; most servers' default), on the relay and the splice alike.

A ``set-header`` value of 8,192 characters made a line of 8,200 bytes: the upstream refused it (431) and
the gateway relayed that as the upstream's refusal, a backend contacted for a request it could not read.
The class: a line the gateway writes from the client's values (a template copying a header under a
longer name, two headers written into one value, the subprotocol offer and the splice's extension offer
joined from the client's lines, a trusted client's ``tracestate`` joined from its lines) or from the
configuration (a static value). Now a static value that can never fit is refused at start-up by its
field path; at runtime the client gets the gateway's 431 ``headers_too_large`` (one access line, the
refusal counted in ``ws_gateway.handshakes``) and the upstream is never contacted; what the gateway may
leave out (the splice's compression offer, trace state members) is left out instead.

Real ``asgi-ws-gateway run``, a real ``websockets`` upstream (``support.upstream``), real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.http11 import MAX_LINE_LENGTH as MAX_UPSTREAM_LINE

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.checks import check_upstream_request
from support.clients import connect, expect_status
from support.otlp import OtlpReceiver
from support.processes import SRC, ServerProcess, cli, ready_server
from support.servers import UvicornServer
from support.upstream import UpstreamServer

COPY = "X-Upstream-Copy-Of-Long"
"""23 characters: the upstream's line is longer than the client's ``x-l`` line it copies."""
MODES = {"relay": False, "splice": True}
TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@dataclass
class Gateway:
    server: ServerProcess
    upstream: UpstreamServer
    otlp: OtlpReceiver

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.server.port}{path}"


def _apis(upstream: UpstreamServer) -> list[dict[str, Any]]:
    apis = []
    for mode, passthrough in MODES.items():
        policies = {
            "copy": [{"set-header": {"header": COPY, "value": "{header.x-l}"}}],
            "counted": [{"set-header": {"header": COPY, "value": "{header.x-l}"}}],
            "pair": [{"set-header": {"header": "X-A", "value": "{header.x-l}{header.x-m}"}}],
            "plain": [],
        }
        for name, chosen in policies.items():
            apis.append({"name": f"{mode}-{name}", "path": f"/{mode}/{name}", "upstreams": [upstream.url("/echo")],
                         "passthrough": passthrough, "policies": chosen})  # fmt: skip
    return apis


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("line_bounds")
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(UpstreamServer())
        otlp = stack.enter_context(OtlpReceiver())
        config = {"telemetry": {"trust_client_trace": True}, "apis": _apis(upstream)}
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "200",
               "PYTHONPATH": str(SRC)}  # fmt: skip
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "info"]
        server = stack.enter_context(ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp, env=env))
        yield Gateway(server, upstream, otlp)


async def _refused_unsent(gateway: Gateway, path: str, headers: list[tuple[str, str]], **kw: Any) -> str:
    """The gateway's own 431 for the handshake, no upstream handshake made; its detail."""
    before = len(gateway.upstream.handshakes)
    status, answer_headers, body = await expect_status(gateway.url(path), additional_headers=headers, **kw)
    assert status == 431, body[:300]
    # The gateway's problem document, not the upstream's text relayed (its reason: in the access line).
    assert answer_headers["content-type"] == "application/problem+json", body[:300]
    answer = json.loads(body)
    assert len(gateway.upstream.handshakes) == before, "the upstream was contacted"
    return str(answer["detail"])


async def _echoes(gateway: Gateway, path: str, headers: list[tuple[str, str]], **kw: Any) -> dict[str, list[str]]:
    """The handshake opens and echoes; the request headers the upstream received."""
    async with await connect(gateway.url(path), additional_headers=headers, **kw) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    return gateway.upstream.handshakes[-1].headers


# -- runtime: a template expanding a client's value ----------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("line", [8189, 8190, 8191, 8192], ids=lambda n: f"{n}-bytes")
async def test_a_copied_header_line_fits_up_to_8190_bytes_and_past_it_is_the_gateways_431(
    gateway: Gateway, mode: str, line: int
) -> None:
    """``name: value`` of ``line`` bytes (its CRLF makes two more): what a websockets server reads, up to
    8,190; past it the gateway refuses, never the upstream."""
    value = "v" * (line - len(COPY) - 2)
    if line + 2 <= MAX_UPSTREAM_LINE:
        sent = await _echoes(gateway, f"/{mode}/copy", [("X-L", value)])
        assert sent[COPY.lower()] == [value]
        return
    detail = await _refused_unsent(gateway, f"/{mode}/copy", [("X-L", value)])
    assert COPY.lower() in detail.lower() and str(MAX_UPSTREAM_LINE) in detail, detail


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_set_header_value_of_exactly_8192_characters_is_refused_unsent(gateway: Gateway, mode: str) -> None:
    """The note's case at runtime: two client headers of 4,096 written into one value of 8,192 characters
    (a line of 8,199 bytes with ``X-A: ``); one character fewer each side of the room passes."""
    detail = await _refused_unsent(gateway, f"/{mode}/pair", [("X-L", "l" * 4096), ("X-M", "m" * 4096)])
    assert "'x-a'" in detail.lower(), detail
    room = MAX_UPSTREAM_LINE - len("x-a: \r\n")
    sent = await _echoes(gateway, f"/{mode}/pair", [("X-L", "l" * 4096), ("X-M", "m" * (room - 4096))])
    assert len(sent["x-a"][0]) == room == 8185


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_subprotocol_offer_joined_past_one_line_is_refused_unsent(gateway: Gateway, mode: str) -> None:
    """Two ``Sec-WebSocket-Protocol`` lines of ~4 KB each, within the client's limits, are joined into one
    line by both connectors: at 8,192 bytes it goes, one byte more is the gateway's 431."""
    room = MAX_UPSTREAM_LINE - len("sec-websocket-protocol: \r\n")
    first = "a" * 4000
    at_limit = [("Sec-WebSocket-Protocol", first), ("Sec-WebSocket-Protocol", "b" * (room - 4000 - 2))]
    await _echoes(gateway, f"/{mode}/plain", at_limit)
    past = [at_limit[0], ("Sec-WebSocket-Protocol", "b" * (room - 4000 - 1))]
    detail = await _refused_unsent(gateway, f"/{mode}/plain", past)
    assert "sec-websocket-protocol" in detail, detail


@pytest.mark.parametrize("mode", list(MODES))
async def test_an_extension_offer_joined_past_one_line_is_not_sent(gateway: Gateway, mode: str) -> None:
    """The splice forwards the client's ``permessage-deflate`` offers joined into one line: past 8 KiB
    (the upstream's 431 relayed on HEAD) it offers none, as the relay, which sends its own offer: both open."""
    # 4,333 characters a line in four items (more than 64 items is a 400: tests/test_attack_header_lists.py)
    offer = "permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=" + "1" * 4250
    extra = f"Sec-WebSocket-Extensions: {offer}\r\n" * 2
    before = len(gateway.upstream.handshakes)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        writer.write(
            f"GET /{mode}/plain HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 101 "), head[:300]
    assert len(gateway.upstream.handshakes) == before + 1
    sent = gateway.upstream.handshakes[-1].headers.get("sec-websocket-extensions", [])
    assert all(len(value) + len("sec-websocket-extensions: \r\n") <= MAX_UPSTREAM_LINE for value in sent), sent


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_trusted_clients_tracestate_past_one_line_loses_whole_members(gateway: Gateway, mode: str) -> None:
    """``trust_client_trace``: a state of 8,192 characters (what OpenTelemetry reads at most), sent in two lines,
    was written as one line of 8,206 bytes, and the upstream's 431 was the client's answer. Now members are
    dropped, those over 128 characters first (W3C Trace Context), until it fits: the handshake goes on."""
    short = [f"s{i}=" + "a" * (121 if i == 0 else 100) for i in range(4)]
    long = [f"{'k' * 18}{i:02d}=" + "v" * 255 for i in range(28)]
    members = short + long
    assert len(",".join(members)) == 8192
    lines = [",".join(members[:16]), ",".join(members[16:])]
    headers = [("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01"), *(("tracestate", line) for line in lines)]
    sent = await _echoes(gateway, f"/{mode}/plain", headers)
    assert sent["traceparent"][0].split("-")[1] == TRACE_ID  # the client's trace, continued
    assert sent["tracestate"] == [",".join(short)]


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_refusal_is_one_access_line_and_counted(gateway: Gateway, mode: str) -> None:
    """One access line naming the API, 431 and the reason; one point of ``ws_gateway.handshakes`` with the
    status and ``error.type`` (an API no other test uses)."""
    await _refused_unsent(gateway, f"/{mode}/counted", [("X-L", "v" * 8170)])
    api = f"{mode}-counted"
    for _ in range(100):
        points = gateway.otlp.latest("ws_gateway.handshakes").values()
        counted = sum(point.value for point in points if point.attributes.get("ws_gateway.api.name") == api
                      and point.attributes.get("http.response.status_code") == 431
                      and point.attributes.get("error.type") == "headers_too_large")  # fmt: skip
        lines = re.findall(rf'" 431 {api} denied \(headers_too_large', gateway.server.output())
        if counted and lines:
            break
        await asyncio.sleep(0.1)
    assert (counted, len(lines)) == (1, 1), gateway.server.output()
    assert "Traceback" not in gateway.server.output()


# -- start-up: a static value that can never fit -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value", "size"),
    [("X-Static", "s" * 8192, 8204), ("X-Quite-Long-Header-Name", "s" * 8180, 8208), ("X-A", "s" * 8186, 8193)],
    ids=["8192-characters", "8180-with-a-long-name", "one-byte-over"],
)
async def test_a_static_value_that_can_never_fit_is_refused_at_start_up(
    tmp_path: Path, header: str, value: str, size: int
) -> None:
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"],
           "policies": [{"set-header": {"header": header, "value": value}}]}  # fmt: skip
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": [api]}))
    code, out, err = await cli("check", str(tmp_path / "gateway.yaml"))
    output = out + err
    assert code == 2, output
    assert f"apis[0].policies[0].set-header.value: the header line '{header}: ...' would take {size} bytes" in output
    assert value not in output  # never quoted: it may be a credential


async def test_a_static_value_that_fits_and_a_template_whose_text_fits_pass_the_check(tmp_path: Path) -> None:
    policies = [{"set-header": {"header": "X-A", "value": "s" * 8185}},
                {"set-header": {"header": "X-B", "value": "{header.x-l}" + "s" * 8000}}]  # fmt: skip
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], "policies": policies}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": [api]}))
    code, out, err = await cli("check", str(tmp_path / "gateway.yaml"))
    assert code == 0, out + err


# -- the request line and the gateway's other lines, as checked before any connect ----------------------------


@pytest.mark.parametrize("line", [8191, 8192, 8193], ids=lambda n: f"{n}-bytes")
def test_the_request_line_fits_8192_bytes(line: int) -> None:
    """``GET target HTTP/1.1`` and its CRLF, for a short host: the URL's 8,192 characters allow a line of
    8,201 bytes, which a websockets upstream refuses (414)."""
    url = "ws://h/" + "p" * (line - len("GET / HTTP/1.1\r\n"))
    if line <= MAX_UPSTREAM_LINE:
        check_upstream_request(url, [], in_process=False)
        return
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request(url, [], in_process=False)
    assert caught.value.status == 400 and f"request line would take {line} bytes" in caught.value.detail


@pytest.mark.parametrize("name", ["x-forwarded-for", "x-forwarded-host", "traceparent", "via"])
def test_any_header_line_the_gateway_writes_fits_8192_bytes(name: str) -> None:
    at_limit = [(name, "v" * (MAX_UPSTREAM_LINE - len(name) - 4))]
    check_upstream_request("ws://up:9000/a", at_limit, in_process=False)
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request("ws://up:9000/a", [(name, at_limit[0][1] + "v")], in_process=False)
    assert (caught.value.status, caught.value.reason) == (431, "headers_too_large")
    assert f"'{name}' would make a line of {MAX_UPSTREAM_LINE + 1} bytes" in caught.value.detail
    check_upstream_request("/a", [(name, at_limit[0][1] + "v")], in_process=True)  # no line written in-process


async def test_a_clients_own_line_past_8_kib_is_the_gateways_431_under_a_server_that_reads_it(
    gateway: Gateway,
) -> None:
    """``run`` and uvicorn's websockets refuse a client's line over 8 KiB themselves; uvicorn's wsproto (h11:
    16 KiB of head) and httptools take it, and the gateway forwarded it to the upstream's 431. Now it is the
    gateway's own refusal, the upstream never contacted."""
    api = {"name": "plain", "path": "/plain", "upstreams": [gateway.upstream.url("/echo")]}
    with UvicornServer(WebSocketGateway(not_found, config={"apis": [api]}), ws="wsproto") as server:
        before = len(gateway.upstream.handshakes)
        status, answer_headers, body = await expect_status(
            server.url("/plain"), additional_headers={"X-Big": "b" * 8187}
        )
    assert (status, answer_headers["content-type"]) == (431, "application/problem+json"), body[:300]
    assert "'x-big' would make a line of 8196 bytes" in json.loads(body)["detail"]
    assert len(gateway.upstream.handshakes) == before
