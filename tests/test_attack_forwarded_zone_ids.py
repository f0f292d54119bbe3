"""An address a client or a proxy reports carries no IPv6 zone id; every recorded address is bounded.

``ipaddress`` takes any text after an IPv6 address's ``%`` as its zone: behind ``trusted_proxies``,
``X-Forwarded-For: fe80::1%`` and 6,000 characters was believed, and that text was the client, in
the access log (6,008 characters), on the spans' ``client.address`` (6,011; every other client value
is cut at 512) and in the exported log record, ESC, NEL or U+2028 in it written raw in spans and
exported attributes. A zone names an interface of the host that wrote it, meaningless here: a hop
with one is no address (the client is ``unknown``, as for any hop that is not one). The socket's own
peer may have a zone (a link-local peer): it is kept, and recorded cut to 512 characters with its
control characters escaped, as any value a client chose (``telemetry.values.address_text``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import load_config
from asgi_ws_gateway.forwarded import Networks, client_address, forwarded_chain
from asgi_ws_gateway.redact import CONTROL_CHARACTERS
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import Telemetry
from asgi_ws_gateway.telemetry import names as n
from support.configs import build_config
from support.otlp import OtlpReceiver
from support.processes import ready_server
from support.rawhttp import handshake, ws_frame
from support.upstream import UpstreamServer

LIMIT = 512
RAW = re.compile(f"[{CONTROL_CHARACTERS}]")
LONG_ZONE = b"fe80::1%" + b"Z" * 6000

# Each case's X-Forwarded-For (bytes as sent: 0x85 and 0x9B read as Latin-1 are NEL and CSI) and the
# client the gateway must name: the nearest hop decides, a zoned one is no address.
CASES: dict[str, tuple[bytes, str]] = {
    "long-zone": (LONG_ZONE, "unknown"),
    "control-zone": (b"fe80::1%\x85\x9b[2J\xe2\x80\xa8", "unknown"),
    "bracketed-zone": (b"[fe80::1%eth0]:443", "unknown"),
    "mapped-zone": (b"::ffff:203.0.113.7%eth0", "unknown"),
    "zone-left-of-client": (b"fe80::1%" + b"Z" * 100 + b", 2001:db8::7", "2001:db8::7"),
    "plain": (b"2001:db8::7", "2001:db8::7"),  # still believed
}


async def _session(port: int, room: str, forwarded_for: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(f"/ws/echo/{room}", b"X-Forwarded-For: " + forwarded_for + b"\r\n"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(ws_frame(8, (1000).to_bytes(2, "big")))
    await writer.drain()
    assert await reader.read() != b""  # the gateway's close frame, then EOF
    writer.close()
    await writer.wait_closed()  # close() only schedules the FIN, and the gateway lingers for it: stop() blocks the loop


async def test_a_forwarded_zone_id_is_no_address_in_the_access_log_spans_and_exported_logs(
    tmp_path: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the client was ``fe80::1%ZZZ...`` (6,008 characters in the access log, 6,011 on the
    spans), NEL and CSI raw on the spans and in the exported log attributes."""
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    config = build_config(
        upstream, path="/ws/echo/{room}", trusted_proxies=["127.0.0.1"],
        telemetry={"access_log": "json", "export_logs": True},
    )  # fmt: skip
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint("http/protobuf"),
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRICS_EXPORTER": "none"}  # fmt: skip
        command = ["-m", "asgi_ws_gateway", "run", str(tmp_path / "gateway.yaml")]
        with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:
            for room, (forwarded_for, _) in CASES.items():
                await _session(server.port, room, forwarded_for)
            assert server.stop() == 0  # the exporters flush at shutdown
            stdout = server.stdout()
        spans, logs = otlp.spans(), otlp.logs()
    lines = [json.loads(line[line.index("{") :]) for line in stdout.splitlines() if '{"time"' in line]
    access = {line["path"].rsplit("/", 1)[1]: line for line in lines if line["api"] == "echo"}
    exported = {str(log.attributes[n.URL_PATH]).rsplit("/", 1)[1]: log.attributes for log in logs}
    for room, (_, client) in CASES.items():
        assert access[room]["client"] == client, room
        assert access[room]["peer"].startswith("127.0.0.1:")
        assert exported[room][n.CLIENT_ADDRESS] == client, room
        recorded = [s.attributes for s in spans if str(s.attributes.get(n.URL_PATH, "")).endswith(f"/{room}")]
        assert {s.get(n.CLIENT_ADDRESS) for s in recorded} == {client}, room  # the handshake's and connection's
    addresses = [v for s in spans for k, v in s.attributes.items() if k.endswith(".address")]
    addresses += [v for log in logs for k, v in log.attributes.items() if "client" in k or "peer" in k]
    assert addresses and all(len(str(v)) <= LIMIT and not RAW.search(str(v)) for v in addresses)


_TRUSTED = Networks(["10.0.0.0/8", "fe80::/10"])


@pytest.mark.parametrize(
    ("header", "value", "client"),
    [
        ("x-forwarded-for", "fe80::1%eth0", "unknown"),
        ("x-forwarded-for", "fe80::1%25eth0", "unknown"),  # RFC 6874's URI spelling
        ("x-forwarded-for", '"[fe80::1%eth0]:80"', "unknown"),
        ("x-forwarded-for", "::ffff:203.0.113.7%1", "unknown"),  # unmapping dropped the zone
        ("x-forwarded-for", "203.0.113.9, fe80::2%eth0", "unknown"),  # a zoned hop ends the chain
        ("forwarded", 'for="[fe80::1%25eth0]"', "unknown"),
        ("forwarded", 'for="[fe80::1%eth0]:443"', "unknown"),
        ("forwarded", 'for="[fe80::1\\%eth0]"', "unknown"),  # an escape in the quoted-string
        ("x-forwarded-for", "203.0.113.9, fe80::2", "203.0.113.9"),  # without zones: believed
        ("forwarded", 'for=203.0.113.9, for="[fe80::2]"', "203.0.113.9"),
    ],
)
def test_no_forwarding_header_reports_a_zoned_address(header: Any, value: str, client: str) -> None:
    assert client_address("10.0.0.1", forwarded_chain([value], header), _TRUSTED) == client


def test_the_sockets_zoned_peer_is_kept_and_trusted() -> None:
    """A link-local peer's zone is the kernel's: the peer is the client, or a trusted proxy."""
    assert client_address("fe80::9%eth0", ["203.0.113.9"], Networks([])) == "fe80::9%eth0"
    assert client_address("fe80::9%eth0", ["203.0.113.9"], _TRUSTED) == "203.0.113.9"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("forwarded", [False, True])
def test_a_peer_address_is_recorded_bounded_and_escaped(
    spans: tuple[TracerProvider, InMemorySpanExporter], forwarded: bool
) -> None:
    """A peer's text is the server's (a server that rewrote it from a forwarding header put a client's
    there): cut to 512 characters on the spans and in the access line, its controls escaped."""
    peer = "fe80::1%\x1b[2J\u2028\u0085" + "Z" * 6000
    scope = {"type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
             "client": (peer, 4567), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"[fe80::1%\x1b\xe2\x80\xa8" + b"h" * 6000 + b"]:80")]}  # fmt: skip
    config = load_config(build_config("ws://127.0.0.1:9/echo", telemetry={"access_log": "json"}))
    handshake = Telemetry(config, tracer_provider=spans[0]).handshake(
        config.apis[0], scope, "203.0.113.9" if forwarded else None
    )
    stats = RelayStats()
    stats.closed_by, stats.close_code = "client", 1000
    handler, logger = _Lines(), logging.getLogger("asgi_ws_gateway.access")
    level, disabled = logger.level, logger.disabled  # another test's logging configuration may have set them
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # not .level: isEnabledFor caches the answer setLevel clears
    logger.disabled = False
    try:
        handshake.accepted("ws://127.0.0.1:9/echo", None, stats).closed(stats)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    (line,) = [json.loads(text) for text in handler.lines]
    shake = next(dict(s.attributes or {}) for s in spans[1].get_finished_spans() if s.name == "GET /ws/echo")
    recorded = [shake[n.SERVER_ADDRESS], line["client"], line.get("peer", "")]
    recorded.append(shake[n.NETWORK_PEER_ADDRESS] if forwarded else shake[n.CLIENT_ADDRESS])
    for value in recorded:
        assert len(value) <= LIMIT + len(":4567") and not RAW.search(value)
    assert (line["peer"] if forwarded else line["client"]).startswith("fe80::1%\\x1b[2J\\u2028\\x85ZZZ")
