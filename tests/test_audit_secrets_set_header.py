"""A ``set-header`` that sends a client's credential upstream under a name holding no credential word.

``set-header: {header: X-Tenant, value: "{cookie.session}"}`` (or ``"{header.x-api-key}"``, or a
``validate-jwt`` token header's value) writes the credential into a header the redaction did not
know: websockets' debug dump of the upstream handshake (``> x-tenant: ...``) showed it in clear,
while the same value in the client's own headers was redacted. Such a header's value is now
redacted wherever a credential header's is.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from asgi_ws_gateway import WebSocketGateway, redact
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.redact import credential_headers
from support.clients import connect
from support.log_configs import DEBUG_TO_STDERR
from support.processes import ready_server
from support.upstream import UpstreamServer

SESSION, API_KEY, IDENTITY = "sess-SEKRIT-1f3a", "apikey-SEKRIT-2b4c", "ident-SEKRIT-3c5d"


def _policies() -> list[dict[str, object]]:
    return [
        {"set-header": {"header": "X-Tenant", "value": "{cookie.sid}"}},
        {"set-header": {"header": "X-Caller", "value": "key {header.x-api-key|none}"}},
        {"set-header": {"header": "X-Who", "value": "{ header.x-identity }"}},
        {"set-header": {"header": "X-Room", "value": "{path.room} {jwt.sub} {{header.x-api-key}}"}},
    ]


def test_headers_written_from_a_credential_count_as_credential_headers() -> None:
    document = {
        "apis": [
            {"name": "a", "policies": [{"validate-jwt": {"token": [{"header": "X-Identity"}]}}, *_policies()]},
        ]
    }
    assert credential_headers(document) == {"X-Identity", "X-Tenant", "X-Caller", "X-Who"}


async def test_the_upstream_handshakes_debug_dump_hides_what_set_header_copied(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    api = {"name": "a", "path": "/a/{room}", "upstreams": [upstream_server.url("/echo")], "passthrough": False,
           "policies": _policies()[:2]}  # fmt: skip
    config = {"apis": [api]}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "log.json").write_text(json.dumps(DEBUG_TO_STDERR))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug", "--log-config", "log.json"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        headers = {"Cookie": f"sid={SESSION}", "X-Api-Key": API_KEY}
        async with await connect(f"ws://127.0.0.1:{server.port}/a/lobby", additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert server.stop() == 0
        output = server.output()
    sent = upstream_server.handshakes[-1].headers
    assert sent["x-tenant"] == [SESSION] and sent["x-caller"] == [f"key {API_KEY}"]  # they do reach the upstream
    assert "websockets.client DEBUG > x-tenant: REDACTED" in output
    assert "websockets.client DEBUG > x-caller: REDACTED" in output
    for secret in (SESSION, API_KEY):
        assert secret not in output, f"{secret} reached the output:\n{output}"


async def test_a_change_applied_later_registers_its_credential_headers_too() -> None:
    """A management change (``apply_config``) bringing a token header or a set-header of a credential."""
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:1/x"]}
    gateway = WebSocketGateway(_no_app, config={"apis": [api]})
    assert not redact.is_credential_header("x-audit-changed-later")
    policies = [{"set-header": {"header": "X-Audit-Changed-Later", "value": "{cookie.sid}"}}]
    await gateway.apply_config({"apis": [{**api, "policies": policies}]})
    assert redact.is_credential_header("x-audit-changed-later")


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not reached")
