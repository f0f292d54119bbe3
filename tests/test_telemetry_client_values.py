"""What a client chooses reaches telemetry bounded and redacted (``asgi_ws_gateway.telemetry.values``).

A client controls its User-Agent, Host, path, subprotocol and close reason, and, through a token,
its subject. Each is recorded on spans and in the access log at most 512 characters long (then
``...[cut]``), credentials in it redacted (``Bearer eyJ...``, ``token=...``); the subprotocol only
when it reads like a protocol name, else ``REDACTED``: clients put bearer tokens there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import load_config
from asgi_ws_gateway.redact import REDACTED
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import Telemetry
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.values import client_text
from support.configs import build_config
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver
from support.rawhttp import handshake
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNla3JldA"
SECRET = "sekret-value-7"
LIMIT = 512


class _Recorder(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _scope(**headers: bytes) -> dict[str, Any]:
    return {
        "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
        "client": ("10.1.2.3", 4567), "server": ("127.0.0.1", 8000),
        "headers": [(name.replace("_", "-").encode(), value) for name, value in headers.items()],
    }  # fmt: skip


def _run(
    spans: tuple[TracerProvider, InMemorySpanExporter], scope: dict[str, Any], subprotocol: str, *,
    subject: str = "alice", reason: str = "",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:  # fmt: skip
    """One handshake and connection: the handshake span's, the connection span's and the access line's fields."""
    config = load_config(build_config("ws://127.0.0.1:9/echo", telemetry={"access_log": "json"}))
    telemetry = Telemetry(config, tracer_provider=spans[0])
    handshake = telemetry.handshake(config.apis[0], scope)
    handshake.identify(subject=subject)
    stats = RelayStats()
    stats.closed_by, stats.close_code, stats.close_reason = "client", 1000, reason
    records: list[logging.LogRecord] = []
    handler = _Recorder(records)
    logger = logging.getLogger("asgi_ws_gateway.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        handshake.accepted("ws://127.0.0.1:9/echo", subprotocol, stats).closed(stats)
    finally:
        logger.removeHandler(handler)
    finished = {s.name: dict(s.attributes or {}) for s in spans[1].get_finished_spans()}
    (record,) = records
    return finished["GET /ws/echo"], finished["connection echo"], json.loads(record.getMessage())


def test_long_client_values_are_cut_at_512_characters_with_a_mark(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    scope = _scope(host=b"h" * 8000, user_agent=b"a" * 8000)
    scope["path"] = "/ws/echo"  # the route; a long path is measured end to end below
    handshake, connection, line = _run(spans, scope, "chat.v2", subject="s" * 8000, reason="r" * 123)
    assert handshake[n.USER_AGENT] == "a" * (LIMIT - 8) + "...[cut]"
    assert handshake[n.SERVER_ADDRESS] == "h" * (LIMIT - 8) + "...[cut]"
    for attrs in (handshake, connection):
        assert attrs[n.ENDUSER_ID] == "s" * (LIMIT - 8) + "...[cut]"
    assert line["subject"] == "s" * (LIMIT - 8) + "...[cut]"
    assert connection[n.CLOSE_REASON] == "r" * 123  # short enough: as sent
    assert all(len(v) <= LIMIT for attrs in (handshake, connection) for v in attrs.values() if isinstance(v, str))


def test_credentials_in_user_agent_host_subject_and_close_reason_are_redacted(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    scope = _scope(host=b"gw.example", user_agent=f"probe/1 Bearer {JWT}".encode())
    handshake, connection, line = _run(
        spans, scope, "chat.v2", subject=f"alice?token={SECRET}", reason=f"bye token={SECRET} {JWT}"
    )
    recorded = json.dumps([handshake, connection, line])
    assert SECRET not in recorded and JWT not in recorded and JWT[:40] not in recorded
    assert handshake[n.USER_AGENT] == f"probe/1 Bearer {REDACTED}"
    assert handshake[n.ENDUSER_ID] == connection[n.ENDUSER_ID] == line["subject"] == f"alice?token={REDACTED}"


@pytest.mark.parametrize(
    "credential",
    [
        "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJhZG1pbiJ9" * 100 + ".c2lnbmF0dXJl",  # cut inside its payload
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9." + "c2ln" * 400,  # inside its signature
        "Bearer " + "t" * 2000,
        "token=" + "t" * 2000,
    ],
)
def test_a_credential_that_runs_past_what_redaction_reads_is_redacted(credential: str) -> None:
    """Only the first SCANNED_CHARS are read (an 8 KB value of ``a=b;`` pairs took 1.1 ms per value to scan,
    0.11 ms now): a credential that starts in them and runs past them is redacted all the same."""
    recorded = client_text("x" * 300 + " " + credential + " trailer")
    assert REDACTED in recorded and credential[:30] not in recorded and len(recorded) <= LIMIT


@pytest.mark.parametrize("name", ["chat.v2", "graphql-transport-ws", "wamp.2.json", "v12.stomp", "mqtt"])
def test_a_protocol_name_is_recorded_as_it_is(spans: tuple[TracerProvider, InMemorySpanExporter], name: str) -> None:
    handshake, connection, line = _run(spans, _scope(host=b"gw"), name)
    assert handshake[n.SUBPROTOCOL] == connection[n.SUBPROTOCOL] == line["subprotocol"] == name


@pytest.mark.parametrize(
    "offered",
    [JWT, f"access_token.{SECRET}" + "x" * 60, "Bearer " + SECRET, f"base64url.bearer.authorization.k8s.io.{JWT}",
     "a" * 65, "tok,en", "t\u00e9l\u00e9"],
    ids=["jwt", "long-token", "bearer", "k8s", "65-chars", "comma", "non-ascii"],
)  # fmt: skip
def test_a_subprotocol_that_is_not_a_protocol_name_is_recorded_as_redacted(
    spans: tuple[TracerProvider, InMemorySpanExporter], offered: str
) -> None:
    handshake, connection, line = _run(spans, _scope(host=b"gw"), offered)
    assert handshake[n.SUBPROTOCOL] == connection[n.SUBPROTOCOL] == line["subprotocol"] == REDACTED


async def test_an_8_kb_header_set_makes_a_handshake_span_of_about_2_kb(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """User-Agent, Host and path of 2.7 KB each (8.1 KB): the exported handshake span stays under 2.5 KB
    (it was 8585 bytes; 2009 now, and still 2009 with 7.9 KB each, where it was 24185)."""
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            request = handshake("/ws/headers/" + "p" * 2700, b"User-Agent: " + b"u" * 2700 + b"\r\n")
            request = request.replace(b"Host: gw", b"Host: " + b"h" * 2700)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            writer.close()
            span = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "GET /ws/headers/{room}")
    assert span.attributes[n.URL_PATH].endswith("...[cut]") and len(span.attributes[n.URL_PATH]) == LIMIT
    assert span.size < 2500


def test_quoted_and_colon_separated_credentials_are_redacted_on_spans_and_the_access_line(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A close reason in JSON, a User-Agent quoting its bearer token, a subject with ``token: ...``:
    each was recorded in clear."""
    scope = _scope(host=b"gw.example", user_agent=f'probe/1 Bearer "{SECRET}"'.encode())
    handshake, connection, line = _run(
        spans, scope, "chat.v2", subject=f"alice token: {SECRET}", reason=f'{{"token": "{SECRET} x"}}'
    )
    assert SECRET not in json.dumps([handshake, connection, line])
    assert handshake[n.USER_AGENT] == f'probe/1 Bearer "{REDACTED}"'
    assert handshake[n.ENDUSER_ID] == connection[n.ENDUSER_ID] == line["subject"] == f"alice token:{REDACTED}"
    assert connection[n.CLOSE_REASON] == line["close_reason"] == f'{{"token":"{REDACTED}"}}'


@pytest.mark.parametrize("path", [f"/ws/headers/token={SECRET}", f"/ws/headers/Bearer%20{SECRET}"])
async def test_a_credential_in_the_path_is_redacted_on_the_exported_spans_and_the_access_line(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The path went through redact_text only (query, JWT, header forms): ``token=`` and ``Bearer``
    in it were exported in clear, unlike the same text in a User-Agent."""
    records: list[logging.LogRecord] = []
    handler = _Recorder(records)
    access = logging.getLogger("asgi_ws_gateway.access")
    access.addHandler(handler)
    level, access.level = access.level, logging.INFO
    try:
        with OtlpReceiver() as otlp:
            export_to(monkeypatch, otlp, "grpc")
            with UvicornServer(ProbedGateway(telemetry_config(upstream, access_log="text"))) as server:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(handshake(path))
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                writer.close()
                shake = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "GET /ws/headers/{room}")
                span = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name.startswith("connection "))
                connect = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name.startswith("upstream connect"))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert SECRET not in repr([s.attributes for s in (shake, span, connect)])
    assert shake.attributes[n.URL_PATH] == span.attributes[n.URL_PATH]
    assert shake.attributes[n.URL_PATH] in ("/ws/headers/token=REDACTED", "/ws/headers/Bearer REDACTED")
    lines = [r.getMessage() for r in records]
    assert lines and not any(SECRET in line for line in lines)
