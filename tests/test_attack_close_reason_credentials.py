"""An upstream's close reason quoting the credential the gateway sent it, on every carrier.

An upstream that closes with ``4001 "bad key <the X-Api-Key it got>"`` handed the operator's credential
(the gateway's ``set-header``) to the client, in the close frame, and to the access log, as its close
reason, on the splice, the frame relay and the relay: the refusals lost it (``upstream.refusal_secrets``),
the close reasons did not. Now it is ``REDACTED`` there, the code kept.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.close_secrets import SentCredentials
from support.clients import connect, expect_close
from support.processes import ready_server

KEY = f"CANARY-close-{secrets.token_hex(8)}"
LONG_KEY = f"CANARY-long-{secrets.token_hex(100)}"  # echoed cut: a reason holds 123 bytes
SHORT = "k-1234"  # under 8 bytes: a word a reason holds anyway, left alone
CARRIERS: dict[str, dict[str, Any]] = {
    "splice": {},
    "framed": {"message_policies": {"outbound": [{"limit-message-size": {"max": 65536}}]}},
    "relay": {"passthrough": False},
}


@contextlib.asynccontextmanager
async def _upstream_quoting_its_key() -> AsyncIterator[int]:
    """A backend that sends a message, then closes with 4001, its reason quoting the keys it got (its
    first 123 bytes)."""

    async def handler(ws: ServerConnection) -> None:
        headers = ws.request.headers if ws.request is not None else {}
        await ws.send("hi")
        await ws.close(4001, f"bad key {headers.get('X-Api-Key')} / {headers.get('X-Auth-Token')}"[:123])

    async with serve(handler, "127.0.0.1", 0) as server:
        yield next(iter(server.sockets)).getsockname()[1]


def _config(port: int, key: str) -> dict[str, Any]:
    policies = [
        {"set-header": {"header": "X-Api-Key", "value": key}},
        {"set-header": {"header": "X-Auth-Token", "value": SHORT}},
    ]
    return {
        "apis": [
            {"name": name, "path": f"/{name}", "upstreams": [f"ws://127.0.0.1:{port}/"], "policies": policies, **extra}
            for name, extra in CARRIERS.items()
        ]
    }


@pytest.mark.parametrize(
    ("key", "expected"),
    [(KEY, f"bad key REDACTED / {SHORT}"), (LONG_KEY, "bad key REDACTED")],
    ids=["whole", "cut-at-123-bytes"],
)
async def test_an_upstream_close_reason_quoting_the_key_sent_reaches_no_one(
    tmp_path: Path, key: str, expected: str
) -> None:
    async with _upstream_quoting_its_key() as port:
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(_config(port, key)))
        command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--access-log-format", "json"]
        command += ["--log-level", "debug"]  # (websockets' frame dumps too)
        with ready_server(lambda p: [*command, "--port", str(p)], cwd=tmp_path) as server:
            closes = {}
            for name in CARRIERS:
                async with await connect(f"ws://127.0.0.1:{server.port}/{name}") as ws:
                    closes[name] = await expect_close(ws)
            server.stop()
            log = server.output()
    assert closes == dict.fromkeys(CARRIERS, (4001, expected))
    assert "CANARY-" not in log, [line for line in log.splitlines() if "CANARY-" in line]  # nor a piece of it
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    recorded = {record["path"][1:]: (record["closed_by"], record["close_reason"]) for record in records}
    assert recorded == dict.fromkeys(CARRIERS, ("upstream", expected)), log


def _sent(headers: list[tuple[str, str]], url: str = "ws://u/") -> SentCredentials:
    return SentCredentials(UpstreamRequest(url=url, headers=headers, subprotocols=[], scope={}))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("bad key sk-live-0123456789", "bad key REDACTED"),
        ("bad token abcdefgh-ijkl", "bad token REDACTED"),  # the bearer's credential, its scheme gone
        ("api_key=q%2Fsecret-value and q/secret-value", "api_key=REDACTED and REDACTED"),  # as sent and decoded
        ("key sk-live-0123", "key REDACTED"),  # cut to 123 bytes by the upstream: the end that begins one
        ("key sk-live", "key sk-live"),  # under 8 bytes of it: left
        ("ok", "ok"),
    ],
)
def test_a_close_reason_loses_each_credential_sent(reason: str, expected: str) -> None:
    headers = [("X-Api-Key", "sk-live-0123456789"), ("Authorization", "Bearer abcdefgh-ijkl")]
    sent = _sent(headers, "ws://u/x?api_key=q%2Fsecret-value")
    assert sent.scrubbed(reason) == expected


def test_a_request_without_credentials_leaves_a_reason_as_it_is() -> None:
    reason = "going away: maintenance window"
    assert _sent([("X-Note", "maintenance window")]).scrubbed(reason) is reason
