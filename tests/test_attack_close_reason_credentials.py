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
async def _upstream_quoting_its_key(start: int = 0) -> AsyncIterator[int]:
    """A backend that sends a message, then closes with 4001, its reason quoting the keys it got (its
    first 123 bytes); from character ``start`` of the key on, without a word before it, when given."""

    async def handler(ws: ServerConnection) -> None:
        headers = ws.request.headers if ws.request is not None else {}
        key = headers.get("X-Api-Key", "")
        quoted = f"{key[start:]} / " if start else f"bad key {key} / "
        await ws.send("hi")
        await ws.close(4001, f"{quoted}{headers.get('X-Auth-Token')}"[:123])

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
    ("key", "start", "expected"),
    [(KEY, 0, f"bad key REDACTED / {SHORT}"), (LONG_KEY, 0, "bad key REDACTED"), (LONG_KEY, 40, "REDACTED")],
    ids=["whole", "cut-at-123-bytes", "from-its-middle-cut-at-123-bytes"],
)
async def test_an_upstream_close_reason_quoting_the_key_sent_reaches_no_one(
    tmp_path: Path, key: str, start: int, expected: str
) -> None:
    async with _upstream_quoting_its_key(start) as port:
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
    assert not _pieces_of(key, log), _pieces_of(key, log)
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


def test_a_connection_holds_no_index_until_a_reason_needs_one() -> None:
    """Every proxied connection carries its credentials for a close reason: an empty index built for each
    (sets and dicts) was ~0.9 KiB of every idle connection (20.55 -> 19.67 KiB at 5,000, `python -m bench`)."""
    first, second = _sent([("X-Api-Key", "sk-live-0123456789")]), _sent([("X-Api-Key", "sk-live-9876543210")])
    assert first._found is second._found  # shared until a reason of 8 bytes or more comes
    assert first.scrubbed("bad key sk-live-0123456789") == "bad key REDACTED"
    assert first._found is not second._found


def _pieces_of(secret: str, text: str) -> list[str]:
    """The runs of 8 characters of ``secret`` that ``text`` holds."""
    return [secret[at : at + 8] for at in range(len(secret) - 7) if secret[at : at + 8] in text]


@pytest.mark.parametrize("start", [0, 1, 7, 8, 50, 100, 150, 200])
@pytest.mark.parametrize("before", ["", "bad key ", "\u00e9\u00e9 key="])
def test_no_run_of_eight_bytes_of_a_long_key_survives_wherever_the_reason_cuts_it(start: int, before: str) -> None:
    """A reason of 123 bytes that begins before the key, in its middle, or ends inside it."""
    sent = _sent([("X-Api-Key", LONG_KEY)])
    reason = (before + LONG_KEY[start:] + " rejected").encode()[:123].decode(errors="ignore")
    scrubbed = sent.scrubbed(reason)
    assert not _pieces_of(LONG_KEY, scrubbed), scrubbed
    assert scrubbed.startswith(before) and len(scrubbed.encode()) <= len(reason.encode())


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("key sk-live-0123456789-abcdef cut", "key REDACTED cut"),  # whole
        ("quota of live-0123456789-abcdef", "quota of REDACTED"),  # its start cut off
        ("key sk-live-0123456789\u2026 (cut)", "key REDACTED\u2026 (cut)"),  # its end cut off
        ("middle: -0123456789- here", "middle: REDACTED here"),  # neither end
        ("bad key sk-live-0123456789-abcdef%2F%2B", "bad key REDACTED"),  # percent-encoded, as a URL quotes it
        ("7 bytes: sk-live; 0123456 stays", "7 bytes: sk-live; 0123456 stays"),  # under 8 bytes each: left
    ],
)
def test_a_close_reason_loses_every_piece_of_a_credential(reason: str, expected: str) -> None:
    assert _sent([("X-Api-Key", "sk-live-0123456789-abcdef/+")]).scrubbed(reason) == expected


def test_a_latin1_credential_is_found_as_the_upstream_writes_it_in_utf8() -> None:
    """A ``set-header`` value with Latin-1 letters goes upstream as one byte each; the upstream's reason
    is UTF-8, two bytes each: looked for both ways, and no half of a character is left."""
    key = "cl\u00e9-secr\u00e8te-\u00e0-ne-pas-montrer"
    sent = _sent([("X-Api-Key", key)])
    assert sent.scrubbed(f"bad key {key}") == "bad key REDACTED"
    scrubbed = sent.scrubbed(f"bad key \u00e9{key[3:]}")  # a run that begins inside a character of it
    assert scrubbed == "bad key REDACTED", scrubbed
    assert "\ufffd" not in sent.scrubbed(f"bad key {key[:9]}")
