"""Canaries planted in every secret a client or an operator hands the gateway, looked for where they must not be.

Four holes the sweep found, each a class:

- An upstream's refusal reaches the client with its body and headers; a backend whose error page echoes
  the request it refused (the request line, the headers) handed the client the operator's credentials
  the gateway had added: a ``set-header`` of ``X-Api-Key``, a ``set-query-parameter`` of ``api_key``, a
  configured upstream URL's ``?token=``. Now each credential the gateway sent is ``REDACTED`` in it, on
  the splice and on the ``websockets`` relay.
- A validation error quotes the value it refuses (``(got ...)``); a value of the wrong shape (a mapping
  where a list belongs) was quoted whole, credentials and all: ``claims: {api_key: [...]}``,
  ``telemetry: [{headers: {authorization: ...}}]``, in ``check``, at start-up and in the management
  API's 422. Now every credential in a quoted value is ``REDACTED``, by its key or its policy's name.
- websockets' header dump (``< user-agent: ...`` at debug) wrote any header not named as a credential
  as sent, while the access log redacts the same User-Agent's ``token=...`` or ``Bearer ...``.
- An OTLP collector quoting its credential back (``401 Invalid team <key>``) under a header name no
  pattern knows, or a bearer token without its scheme: the exporters' failure line wrote it. Now every
  ``OTEL_EXPORTER_OTLP_*HEADERS`` value is a known secret the log redaction writes as ``REDACTED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from asgi_ws_gateway.errors import UpstreamRejected
from asgi_ws_gateway.redact import redact_text
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.refusal_secrets import sent_credentials, without_credentials
from support.clients import connect
from support.management import TOKEN
from support.processes import main_in_process, ready_server


def _canary(kind: str) -> str:
    return f"CANARY-{kind}-{secrets.token_hex(6)}"


SET_HEADER, SET_QUERY, URL_TOKEN = _canary("set-header"), _canary("set-query"), _canary("url-token")
USER_AGENT, DEBUG_HEADER = _canary("user-agent"), _canary("x-debug")
OPERATOR = {"set-header value": SET_HEADER, "set-query-parameter value": SET_QUERY, "upstream URL ?token=": URL_TOKEN}


@contextlib.asynccontextmanager
async def _echoing_upstream(status: int) -> AsyncIterator[int]:
    """A backend that refuses every handshake with ``status``, its body the request head as it came."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with_head = await reader.readuntil(b"\r\n\r\n")
        body = b"refused: " + with_head
        writer.write(b"HTTP/1.1 %d Refused\r\nX-Request: %s\r\nContent-Length: %d\r\n\r\n" % (
            status, with_head.split(b"\r\n")[0], len(body)) + body)  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def _config(port: int) -> dict[str, Any]:
    policies = [
        {"set-header": {"header": "X-Api-Key", "value": SET_HEADER}},
        {"set-query-parameter": {"parameter": "api_key", "value": SET_QUERY}},
    ]
    upstream = f"ws://127.0.0.1:{port}/x?token={URL_TOKEN}"
    return {
        "apis": [
            {"name": "splice", "path": "/splice", "upstreams": [upstream], "policies": policies},
            {"name": "relay", "path": "/relay", "upstreams": [upstream], "policies": policies, "passthrough": False},
        ]
    }


async def _refusal(url: str) -> tuple[int, str]:
    """The status and the whole answer (headers and body) the client got."""
    headers = {"User-Agent": f"probe/1 token={USER_AGENT}", "X-Debug": f"Bearer {DEBUG_HEADER}"}
    with pytest.raises(Exception) as refused:
        async with await connect(url, additional_headers=headers):
            pass
    response = refused.value.response  # type: ignore[attr-defined]
    shown = "".join(f"{name}: {value}\n" for name, value in response.headers.raw_items())
    return response.status_code, shown + bytes(response.body or b"").decode(errors="replace")


WRONG_SHAPE_CANARY = _canary("management-shape")


async def _refused_change(management: str) -> str:
    """The management API's 422 for an API whose ``claims`` is a mapping holding a credential."""
    policy = {
        "validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 40, "claims": {"api_key": [WRONG_SHAPE_CANARY]}}
    }
    api = {"name": "b", "path": "/b", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy]}
    async with httpx2.AsyncClient(base_url=management, timeout=10) as http:
        response = await http.post("/apis", json=api, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422, response.text
    return response.text


@pytest.mark.parametrize("status", [401, 500])
async def test_an_echoing_refusal_carries_no_credential_the_gateway_sent(tmp_path: Path, status: int) -> None:
    """The refusal reaches the client (its status, its body) without the operator's credentials; and the
    debug log's header dumps without the client's free-text ones."""
    async with _echoing_upstream(status) as port:
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(_config(port)))
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug", "--management", "/_gateway"]
        env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path, env=env) as server:
            answers = {api: await _refusal(f"ws://127.0.0.1:{server.port}/{api}?room=1") for api in ("splice", "relay")}
            answers["management"] = (422, await _refused_change(f"http://127.0.0.1:{server.port}/_gateway"))
            server.stop()
            log = server.output()
        assert "(got " in answers["management"][1] and WRONG_SHAPE_CANARY not in answers["management"][1]
        for api, (got, answer) in answers.items():
            assert api == "management" or (got == status and "refused: GET /x?" in answer), (api, answer)  # relayed
            for what, canary in OPERATOR.items():
                assert canary not in answer, f"the {what} reached the client through the {api}:\n{answer}"
        assert "< user-agent: probe/1 token=" in log  # the dump ran
        for canary in (USER_AGENT, DEBUG_HEADER, *OPERATOR.values()):
            assert canary not in log, [line for line in log.splitlines() if canary in line]


@pytest.mark.parametrize(
    "line",
    [
        "< user-agent: probe/1 token={}",
        "> x-debug: Bearer {}",
        "< x-note: see api_key={}&more",
        '< x-n: {{"secret": "{}"}}',
    ],
)
def test_a_dumped_header_s_free_text_credential_is_redacted(line: str) -> None:
    canary = _canary("dump")
    assert canary not in redact_text(line.format(canary))


def _policy_api(policy: dict[str, Any]) -> dict[str, Any]:
    return {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy]}]}


WRONG_SHAPES: dict[str, Any] = {
    "validate-jwt claims, a mapping of a credential claim": lambda c: _policy_api(
        {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 40, "claims": {"api_key": [c]}}}
    ),
    "validate-jwt claims, one check's operand a mapping": lambda c: _policy_api(
        {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 40, "claims": [[{"claim": "pwd", "in": [c]}]]}}
    ),
    "subscriptions, a mapping holding a key hash": lambda c: {"subscriptions": {"key_sha256": [c]}},
    "management, a list holding a token": lambda c: {"management": [{"token": [c]}]},
    "store, a list holding a password": lambda c: {"store": [{"type": "redis", "password": {"p": c}}]},
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_check_quotes_a_wrong_shape_without_the_credentials_in_it(tmp_path: Path, shape: str) -> None:
    canary = _canary("shape")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(WRONG_SHAPES[shape](canary)))
    for args in (["check", str(path)], ["check", "--json", str(path)]):
        code, out, err = main_in_process(*args)
        assert code == 2 and "(got " in out + err, out + err
        assert canary not in out + err, out + err


class _QuotingCollector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector refusing every export with 401, its reason and body quoting the credentials."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        team = self.headers.get("x-honeycomb-team") or ""
        credential = (self.headers.get("authorization") or "").partition(" ")[2]  # no scheme: no pattern sees it
        body = f"unknown team {team} ({credential})".encode()
        self.send_response(401, f"Invalid team {team} ({credential})")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_collector_quoting_its_credential_under_no_credential_name_is_redacted(tmp_path: Path) -> None:
    """``OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-team=KEY``: a name no pattern knows; the collector's 401
    quoted the key back and the exporters' failure line wrote it (at every level)."""
    team, bearer = _canary("otlp-team"), _canary("otlp-bearer")
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _QuotingCollector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        (tmp_path / "gateway.yaml").write_text(
            yaml.safe_dump({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"]}]})
        )
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-honeycomb-team={team}",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": f"x-honeycomb-team={team},authorization=Bearer%20{bearer}",
            "OTEL_METRIC_EXPORT_INTERVAL": "100",
        }
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml"]
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path, env=env) as server:
            server.wait_for_line("Failed to export metrics batch code: 401")
            server.stop()
            log = server.output()
    finally:
        collector.shutdown()
        collector.server_close()
    assert "Invalid team REDACTED (REDACTED)" in log, log
    assert team not in log and bearer not in log, log


def test_a_refusal_loses_each_credential_sent_as_written_and_decoded() -> None:
    """Unit: a header's credential with and without its scheme, a query credential encoded and decoded;
    a value too short to look for, and a parameter that names no credential, stay."""
    request = UpstreamRequest(
        url="ws://b/x?room=lobby-one-two&api_key=k%2Fey%20value-1&sig=short",
        headers=[("authorization", "Bearer tok-value-123"), ("x-tenant", "tenant-value-9")],
        subprotocols=[],
        scope={},
    )
    kept = b"short | lobby-one-two | tenant-value-9"
    body = b"k%2Fey%20value-1 | k/ey value-1 | Bearer tok-value-123 | tok-value-123 | " + kept
    refusal = UpstreamRejected(401, [(b"x-echo", b"tok-value-123")], body)
    scrubbed = without_credentials(refusal, sent_credentials([request]))
    assert scrubbed.body == b"REDACTED | REDACTED | REDACTED | REDACTED | " + kept
    assert scrubbed.headers == [(b"x-echo", b"REDACTED")] and scrubbed.status == 401
    clean = UpstreamRejected(403, [], b"no")
    assert without_credentials(clean, sent_credentials([request])) is clean


def test_a_refusal_loses_a_credential_it_quotes_cut_at_either_end() -> None:
    """Unit: an error page that quotes a key's start, its end or its middle shows none of it; 7 bytes
    of it, a word a page holds anyway, stay."""
    key = "sk_live_0123456789abcdefghij"
    request = UpstreamRequest(url="ws://b/x", headers=[("x-api-key", key)], subprotocols=[], scope={})
    body = f"<p>key {key[:12]}&hellip;</p><p>&hellip;{key[-10:]}</p><p>{key[5:20]}</p><p>{key[:7]}</p>"
    scrubbed = without_credentials(UpstreamRejected(401, [], body.encode()), sent_credentials([request]))
    assert (
        scrubbed.body == f"<p>key REDACTED&hellip;</p><p>&hellip;REDACTED</p><p>REDACTED</p><p>{key[:7]}</p>".encode()
    )
