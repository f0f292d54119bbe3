"""A credential in a path segment that only the configuration names as one.

An API at ``/feed/{listenKey}`` (Binance's user-data streams put the account's key there) or
``/ws/{api_key}``, or an upstream URL whose path a template fills with a credential
(``/echo/{token}``, ``/v1/{header.x-api-key}``): the value is opaque, no shape the redaction knows (a
JWT, ``token=...``, ``Bearer ...``), and it was written in clear in the gateway's access line, the
handshake span's ``url.path``, the upstream connect span's ``url.full``, uvicorn's ``"WebSocket
/feed/..."`` lines and websockets' dump of the upstream request (an attack pass, 2026-12-06: 3 of 3
placements under ``uvicorn app:app`` and ``run``). The gateway's own rule names the parameter a
credential's (``redact.is_credential_name``), as it does ``{path.token}`` in a condition; such a
segment is now redacted wherever a path is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from asgi_ws_gateway import WebSocketGateway, redact
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.redact import REDACTED
from asgi_ws_gateway.redact import text as redact_text
from asgi_ws_gateway.redact.credential_paths import CredentialPaths, credential_path_templates
from support.clients import connect
from support.gateway import PASSTHROUGH
from support.log_configs import DEBUG_TO_STDERR
from support.otlp import OtlpReceiver, ReceivedSpan
from support.processes import ready_server
from support.rawhttp import upgrade_status
from support.servers import WS_IMPLS, UvicornServer, WSImpl
from support.telemetry import export_to
from support.upstream import UpstreamServer

LISTEN_KEY, API_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1", "ak-SEKRIT-77c1e0"


def _apis(upstream: UpstreamServer) -> list[dict[str, object]]:
    return [
        {"name": "feed", "path": "/feed/{listenKey}", "upstreams": [upstream.url("/echo/{listenKey}")]},
        {
            "name": "keyed",
            "path": "/k/{room}",
            "upstreams": [upstream.url("/echo")],
            "policies": [{"rewrite-uri": {"template": "/echo/{path.room}/{header.x-api-key}"}}],
        },
    ]


def _paths(*templates: str) -> CredentialPaths:
    return CredentialPaths(credential_path_templates({"apis": [{"path": t} for t in templates]}))


def test_a_parameter_named_as_a_credential_is_redacted_wherever_its_path_is_written() -> None:
    paths = _paths("/feed/{listenKey}", "/t/{token}/x", "/r/{room}")
    assert paths.redact("/feed/k1") == f"/feed/{REDACTED}"
    assert paths.redact('1.2.3.4:5 - "WebSocket /feed/k1" 101') == f'1.2.3.4:5 - "WebSocket /feed/{REDACTED}" 101'
    assert paths.redact("> GET /feed/k1 HTTP/1.1") == f"> GET /feed/{REDACTED} HTTP/1.1"
    assert paths.redact("wss://h:1/feed/k%31?x=1") == f"wss://h:1/feed/{REDACTED}?x=1"
    assert paths.redact("/root/feed/k1") == f"/root/feed/{REDACTED}"  # under a root_path
    assert paths.redact("/t/k1/x") == f"/t/{REDACTED}/x"
    assert paths.redact("/f%65ed/k1") == f"/f%65ed/{REDACTED}"  # a literal percent-encoded


def test_only_paths_a_template_matches_whole_are_redacted() -> None:
    paths = _paths("/feed/{listenKey}", "/r/{room}", "/{token}")
    assert paths.redact("/r/lobby") == "/r/lobby"  # no credential name
    assert paths.redact("/r/lobby/more") == "/r/lobby/more"
    assert paths.redact("/feed/") == "/feed/"
    assert paths.redact("/x/y") == "/x/y"  # a template starting with a parameter: from a path's start only
    assert paths.redact("/k1") == f"/{REDACTED}"


def test_a_credential_split_by_its_decoded_slash_or_beside_empty_values_is_redacted_whole() -> None:
    """Logs write paths decoded (``/feed/ab%2Fcd``: a 400, logged ``/feed/ab/cd``), and a rewrite fills
    a missing header's segment with nothing (``/echo/k1//``)."""
    paths = _paths("/feed/{listenKey}", "/echo/{token}/{room}/{room2}")
    assert paths.redact("/feed/ab/cd/") == f"/feed/{REDACTED}/{REDACTED}/"
    assert paths.redact("/echo/k1//") == f"/echo/{REDACTED}//"


def test_a_credential_segment_is_redacted_in_any_letter_case_of_the_literals() -> None:
    """``/FEED/k1`` is refused as the ``/feed/{listenKey}`` API's (a path routers tidy to it) and
    logged: its key was written in clear (an attack pass, 2026-12-06)."""
    paths = _paths("/feed/{listenKey}", "/t/{token}/X")
    assert paths.redact("/FEED/k1") == f"/FEED/{REDACTED}"
    assert paths.redact('"WebSocket /Feed/k1/" 400') == f'"WebSocket /Feed/{REDACTED}/" 400'
    assert paths.redact("//FEED//k1") == f"//FEED//{REDACTED}"
    assert paths.redact("/f%45ED/k1") == f"/f%45ED/{REDACTED}"
    assert paths.redact("/T/k1/x") == f"/T/{REDACTED}/x"
    assert paths.redact("/fed/k1") == "/fed/k1"


def test_a_quote_or_angle_bracket_inside_a_credential_segment_does_not_end_the_path() -> None:
    """A client's segment may hold ``"``, ``'``, ``<`` or ``>`` (``%22`` decoded, or sent as is): the
    path ran to it, and the rest of the key stayed in clear in the access line and uvicorn's dumps."""
    paths = _paths("/feed/{listenKey}")
    assert paths.redact('/feed/"k1') == f"/feed/{REDACTED}"
    assert paths.redact('{"path":"/feed/\\"k1","status":101}') == f'{{"path":"/feed/{REDACTED}","status":101}}'
    assert paths.redact("< GET /feed/<k1> HTTP/1.1") == f"< GET /feed/{REDACTED}> HTTP/1.1"
    assert paths.redact("/feed/k'1") == f"/feed/{REDACTED}"
    # A quote that a blank, punctuation or the end follows still ends a path
    assert paths.redact('"WebSocket /feed/k1" 101') == f'"WebSocket /feed/{REDACTED}" 101'
    assert paths.redact("{'path': '/feed/k1'}") == f"{{'path': '/feed/{REDACTED}'}}"
    assert paths.redact("('/feed/k1',)") == f"('/feed/{REDACTED}',)"


def test_an_upstream_segment_a_template_fills_with_a_credential_is_one() -> None:
    document = {"apis": [{"path": "/a/{room}", "upstreams": ["ws://h:1/v1/{header.x-api-key}/key-{path.sig}/{room}"]}]}
    paths = CredentialPaths(credential_path_templates(document))
    assert paths.redact("ws://h:1/v1/ak/key-s1/lobby") == f"ws://h:1/v1/{REDACTED}/{REDACTED}/lobby"
    token_header = {"apis": [{"path": "/a", "upstreams": ["ws://h/u/{header.x-identity}"]}]}
    assert not credential_path_templates(token_header)
    assert credential_path_templates(token_header, headers=["X-Identity"])  # a validate-jwt token header


def test_a_long_path_of_literal_segments_is_read_once_per_segment() -> None:
    """A path of 4,000 segments that each start a template: bounded work, no recursion."""
    paths = _paths("/ws/{token}", "/" + "/".join(["ws"] * 2000) + "/{token}")
    path = "/ws" * 4000 + "/k1"
    assert paths.redact(path).startswith("/ws/") and paths.redact(path).endswith(f"/{REDACTED}")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {self.format(record)}")


@pytest.mark.parametrize("ws", [*WS_IMPLS, PASSTHROUGH])
async def test_no_log_line_nor_span_of_a_handshake_shows_the_credential_segment(
    upstream_server: UpstreamServer, monkeypatch: pytest.MonkeyPatch, ws: WSImpl
) -> None:
    """uvicorn app:app at debug (its lines, websockets' dumps, the access line) and exported spans."""
    lines = _Lines()
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(lines)
    try:
        with OtlpReceiver() as otlp:
            export_to(monkeypatch, otlp, "grpc")
            gateway = WebSocketGateway(_no_app, config={"apis": _apis(upstream_server)})
            with UvicornServer(gateway, ws=ws, log_level="debug") as server:
                async with await connect(server.url(f"/feed/{LISTEN_KEY}")) as ws_client:
                    await ws_client.send("hi")
                    assert await ws_client.recv() == "hi"
                headers = {"X-Api-Key": API_KEY}
                async with await connect(server.url("/k/lobby"), additional_headers=headers) as ws_client:
                    await ws_client.send("hi")
                    assert await ws_client.recv() == "hi"
                for full in (f"/echo/{REDACTED}", f"/echo/lobby/{REDACTED}"):
                    await asyncio.to_thread(otlp.wait_for_span, _upstream_connect_to(full))
                shake = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "GET /feed/{listenKey}")
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    sent = [h.path for h in upstream_server.handshakes[-2:]]
    assert sent == [f"/echo/{LISTEN_KEY}", f"/echo/lobby/{API_KEY}"]  # the upstream is sent them
    assert any(f"/feed/{REDACTED}" in line for line in lines.lines)
    output = "\n".join(lines.lines) + repr([s.attributes for s in otlp.spans()]) + repr(otlp.logs())
    for secret in (LISTEN_KEY, API_KEY):
        assert secret not in output
    assert shake.attributes["url.path"] == f"/feed/{REDACTED}"


def _upstream_connect_to(path: str) -> Callable[[ReceivedSpan], bool]:
    """An upstream connect span whose ``url.full`` ends with ``path``."""
    return lambda span: span.name.startswith("upstream connect") and str(span.attributes.get("url.full")).endswith(path)


async def test_run_at_debug_writes_no_credential_segment(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": _apis(upstream_server)}))
    (tmp_path / "log.json").write_text(json.dumps(DEBUG_TO_STDERR))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug", "--log-config", "log.json"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        async with await connect(f"ws://127.0.0.1:{server.port}/feed/{LISTEN_KEY}") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        headers = {"X-Api-Key": API_KEY}
        async with await connect(f"ws://127.0.0.1:{server.port}/k/lobby", additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert server.stop() == 0
        output = server.output()
    assert f'"WebSocket /feed/{REDACTED}" 101 feed' in output  # the access line
    for secret in (LISTEN_KEY, API_KEY):
        assert secret not in output, f"{secret} reached the output:\n{output}"


@pytest.mark.parametrize("access_log", ["text", "json"])
async def test_run_at_debug_writes_no_credential_of_a_path_in_another_case_or_with_a_quote(
    tmp_path: Path, upstream_server: UpstreamServer, access_log: str
) -> None:
    """``/FEED/<key>`` (refused as the API's: 400) and ``/feed/"<key>`` (served: 101) under ``run``."""
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": _apis(upstream_server)}))
    (tmp_path / "log.json").write_text(json.dumps(DEBUG_TO_STDERR))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug", "--log-config", "log.json",
               "--access-log-format", access_log]  # fmt: skip
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        assert await upgrade_status(server.port, f"/FEED/{LISTEN_KEY}") == 400
        assert await upgrade_status(server.port, f'/feed/"{API_KEY}') == 101
        assert await upgrade_status(server.port, f"/feed/<{LISTEN_KEY[::-1]}>") == 101
        assert server.stop() == 0
        output = server.output()
    assert output.count("asgi_ws_gateway.access") == 3
    for secret in (LISTEN_KEY, API_KEY, LISTEN_KEY[::-1]):
        assert secret not in output, f"{secret} reached the output:\n{output}"


async def test_a_change_applied_later_registers_its_credential_paths_too() -> None:
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:1/x"]}
    gateway = WebSocketGateway(_no_app, config={"apis": [api]})
    assert redact.redact_path("/later/k1") == "/later/k1"
    await gateway.apply_config({"apis": [api, {**api, "name": "b", "path": "/later/{session_id}"}]})
    assert redact.redact_path("/later/k1") == f"/later/{REDACTED}"


def test_the_templates_of_past_configurations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Management changes that each bring a new credential path grew the process's templates for ever;
    past the bound, the latest configuration's are kept."""
    monkeypatch.setattr(redact_text, "MAX_CREDENTIAL_TEMPLATES", 8)
    for n in range(20):
        redact.add_credential_paths(credential_path_templates({"apis": [{"path": f"/t{n}/{{token}}"}]}))
    assert 1 <= len(redact_text._credential_templates) <= 8
    assert redact.redact_path("/t19/k1") == f"/t19/{REDACTED}"


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not reached")
