"""The handshake refusals ``tests/test_signals_metrics_run.py`` does not cause, under one real ``asgi-ws-gateway
run`` exporting to a real OTLP receiver: for each, the status the client got, exactly one access line with its
API, status and reason, ``ws_gateway.handshakes`` (denied, status, ``error.type``) once, and
``ws_gateway.policy.denials`` when a policy refused. A failed claim check, a JWKS that cannot be fetched, a
spent quota, a forwarding loop, a header name with an underscore, a value sent twice, too many query
parameters, a header check, a token sent in two places, a subscription key missing, unknown or suspended,
a policy that raises (500 ``error``, its traceback logged), the API deleted through the management API while
a handshake of it was in flight (503 ``config_changed``), a custom policy that gives an in-process upstream
another backend (500 ``misconfigured``). And the server's own refusals before any API
(``ws_gateway.server.refusals`` by status, its INFO line): a head not complete within the header timeout
(408), a request line too long (414), a head too large (431).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.management import ManagementClient
from asgi_ws_gateway.policies.products import hash_key
from asgi_ws_gateway.server.head_deadline import HEADER_TIMEOUT_ENV
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, token
from support.management import TOKEN
from support.rawhttp import exchange, handshake, status_of
from support.signals import SignalsRun, signals_run
from support.upstream import UpstreamServer

REFUSALS = {  # case: API, status, error.type, the policy that refused (None: the gateway)
    "claims": ("claims", 403, "token_claims", "validate-jwt"),
    "jwks": ("jwks", 503, "jwks_unavailable", "validate-jwt"),
    "quota": ("quota", 429, "quota_exceeded", "quota-by-key"),
    "loop": ("plain", 508, "loop_detected", None),
    "underscore": ("plain", 400, "invalid_header_name", None),
    "twice": ("keyed", 400, "ambiguous_value", "rate-limit-by-key"),  # raised as the policy reads its key
    "parameters": ("keyed", 414, "target_too_large", "rate-limit-by-key"),
    "header": ("tenant", 401, "header_check", "check-header"),
    "ambiguous": ("token", 400, "token_ambiguous", "validate-jwt"),
    "nokey": ("gold", 401, "subscription_key_missing", "subscription"),
    "badkey": ("gold", 401, "subscription_key_invalid", "subscription"),
    "suspended": ("gold", 403, "subscription_suspended", "subscription"),
    "raises": ("raises", 500, "RuntimeError", None),  # a bug: the gateway's 500 (outcome error), no denial
    "changed": ("slow", 503, "config_changed", None),
    "redirected": (
        "inproc",
        500,
        "misconfigured",
        None,
    ),  # a custom policy's new backend for an in-process one  # the API deleted while its handshake was in flight
}
SERVER_REFUSALS = {  # status: what the client sends, the INFO line
    408: (b"GET /plain HTTP/1.1\r\nHost: gw\r\n", "request head not complete after 0.5s: 408"),
    414: (b"GET /" + b"a" * 70_000, "request head larger than 65536 bytes: 414"),
    431: (handshake("/plain", b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))),
          "request head larger than 65536 bytes: 431"),
}  # fmt: skip
PLUGIN = '''
import asyncio
import os

from pydantic import BaseModel
from asgi_ws_gateway.policies import register_policy

@register_policy("explode")
class Explode:
    """A custom handshake policy with a bug."""

    class Settings(BaseModel):
        pass

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        raise RuntimeError("a bug in a handshake policy")


@register_policy("redirect")
class Redirect:
    """Sends the handshake to another backend: not possible for an in-process upstream."""

    class Settings(BaseModel):
        pass

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        context.upstream.set_base_url("ws://127.0.0.1:9")


async def app(scope, receive, send):
    """The in-process upstream, never reached."""
    await receive()
    await send({"type": "websocket.close"})


@register_policy("pause")
class Pause:
    """Holds a handshake (its file "paused" made) until the file "released" is there."""

    class Settings(BaseModel):
        pass

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        open("paused", "w").close()
        while not os.path.exists("released"):
            await asyncio.sleep(0.01)
'''


@dataclass
class Run(SignalsRun):
    seen: dict[str, int] = field(default_factory=dict)
    server: dict[int, int] = field(default_factory=dict)


def _unsigned_rs256(kid: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': kid, 'typ': 'JWT'})}.{part({'sub': 'x'})}.c2ln"


def _config(upstream: int) -> dict[str, Any]:
    def api(name: str, *policies: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "path": f"/{name}", "upstreams": [f"ws://127.0.0.1:{upstream}/echo"],
                "policies": list(policies)}  # fmt: skip

    jwt = {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}
    subscriptions = [
        {"id": "alice", "product": "gold", "key_sha256": hash_key("alice-key")},
        {"id": "bob", "product": "gold", "key_sha256": hash_key("bob-key"), "state": "suspended"},
    ]
    return {
        "plugins": ["refusals_plugin"],
        "products": [{"name": "gold", "apis": ["gold"]}],
        "subscriptions": subscriptions,
        "handshake_limits": {"headers_with_underscores": "reject", "max_gateway_hops": 1},
        "apis": [
            api("plain"),
            api("claims", {"validate-jwt": {**jwt, "claims": [{"claim": "sub", "equals": "bob"}]}}),
            api("jwks", {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": "http://127.0.0.1:9/jwks"}}),
            api("quota", {"quota-by-key": {"key": "everyone", "limit": 1, "period": "day"}}),
            api("keyed", {"rate-limit-by-key": {"key": "{query.k}", "limit": 100, "window": 60}}),
            api("tenant", {"check-header": {"header": "X-Tenant", "values": ["acme"]}}),
            api("token", {"validate-jwt": {**jwt, "token": [{"header": "Authorization"}, {"query": "access_token"}]}}),
            api("gold"),
            api("raises", {"explode": {}}),
            api("slow", {"pause": {}}),
            {
                "name": "inproc",
                "path": "/inproc",
                "upstreams": ["asgi:refusals_plugin:app"],
                "policies": [{"redirect": {}}],
            },
        ],
    }


async def _clients(port: int, seen: dict[str, int], server: dict[int, int], cwd: Path) -> None:
    base = f"ws://127.0.0.1:{port}"

    async def status(case: str, path: str, **headers: str) -> None:
        seen[case] = (await expect_status(f"{base}{path}", additional_headers=headers))[0]

    await status("claims", "/claims", Authorization=f"Bearer {token()}")  # alice, not bob
    await status("jwks", "/jwks", Authorization=f"Bearer {_unsigned_rs256('k1')}")
    async with await connect(f"{base}/quota"):
        pass
    await status("quota", "/quota")
    await status("loop", "/plain", Via="1.1 asgi-ws-gateway, 1.1 asgi-ws-gateway")
    await status("underscore", "/plain", X_Tenant="a")
    await status("twice", "/keyed?k=a&k=b")
    await status("parameters", "/keyed?" + "&".join(f"p{i}=1" for i in range(1001)))
    await status("header", "/tenant", **{"X-Tenant": "evil"})
    await status("ambiguous", f"/token?access_token={token(sub='bob')}", Authorization=f"Bearer {token()}")
    await status("nokey", "/gold")
    await status("badkey", "/gold", **{"X-Subscription-Key": "mallory-key"})
    await status("suspended", "/gold", **{"X-Subscription-Key": "bob-key"})
    await status("raises", "/raises")
    await status("redirected", "/inproc")
    changed = asyncio.create_task(status("changed", "/slow"))
    async with asyncio.timeout(10):
        while not (cwd / "paused").exists():  # noqa: ASYNC110 - the gateway process makes it
            await asyncio.sleep(0.01)
    async with ManagementClient(f"http://127.0.0.1:{port}/_gateway", token=TOKEN) as manage:
        await manage.delete_api("slow")
    (cwd / "released").touch()
    await changed
    async with await connect(f"{base}/gold", additional_headers={"X-Subscription-Key": "alice-key"}):
        seen["admitted"] = 101
    for code, (request, _line) in SERVER_REFUSALS.items():
        server[code] = status_of(await exchange(port, request))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("refusals")
    (tmp / "refusals_plugin.py").write_text(PLUGIN)
    result = Run()
    env = {HEADER_TIMEOUT_ENV: "0.5", "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN}
    with (
        UpstreamServer() as upstream,
        signals_run(tmp, _config(upstream.port), result, arguments=["--management", "/_gateway"], env=env) as server,
    ):
        asyncio.run(_clients(server.port, result.seen, result.server, tmp))
        assert server.stop() == 0
    yield result


@pytest.mark.parametrize("case", list(REFUSALS))
def test_status_access_line_and_metrics_agree(run: Run, case: str) -> None:
    api, status, error_type, policy = REFUSALS[case]
    assert run.seen[case] == status, (run.seen, run.output)
    outcome = "error" if case == "raises" else "denied"
    assert run.value("ws_gateway.handshakes", ws_gateway__api__name=api, ws_gateway__handshake__outcome=outcome,
                     http__response__status_code=status, error__type=error_type) == 1  # fmt: skip
    where = {"ws_gateway__api__name": api, "http__response__status_code": status}
    if policy is not None:
        alike = sum(refusal[:2] == (api, status) and refusal[3] == policy for refusal in REFUSALS.values())
        assert run.value("ws_gateway.policy.denials", **where, ws_gateway__policy__name=policy) == alike
    else:
        assert run.value("ws_gateway.policy.denials", **where) == 0


def test_one_access_line_per_refusal_and_only_the_bug_s_traceback(run: Run) -> None:
    assert run.output.count("Traceback") == 1 and "ERROR:    API raises: handshake failed" in run.output, run.output
    lines = Counter(re.findall(r'" (\d{3}) (\S+) (?:denied|error) \((\w+)', run.output))
    assert lines == Counter((str(status), api, error) for api, status, error, _policy in REFUSALS.values()), run.output


@pytest.mark.parametrize("status", list(SERVER_REFUSALS))
def test_the_server_s_own_refusal_its_line_and_its_count(run: Run, status: int) -> None:
    """Answered before any API: counted by status in ``ws_gateway.server.refusals`` only, with its INFO line."""
    assert run.server[status] == status, (run.server, run.output)
    assert run.output.count(SERVER_REFUSALS[status][1]) == 1, run.output
    assert run.value("ws_gateway.server.refusals", http__response__status_code=status) == 1


def test_the_valid_subscription_key_is_admitted(run: Run) -> None:
    assert run.seen["admitted"] == 101, run.output
