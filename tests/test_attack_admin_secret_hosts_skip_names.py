"""``skip_policies`` as the secret-host rule read it, and as the gateway runs it.

The gateway skips an inherited policy by the name it runs under (its ``name``, else its type); the
rule took a policy's type as skipped too. A named global ``set-header`` of the operator's credential
was therefore "skipped" by ``skip_policies: [set-header]`` for the rule, still sent by the gateway, and
an API created for the holder's own server received it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway.management.upstream_hosts import policy_name
from asgi_ws_gateway.policies.build import GatewayPolicies, load_config
from asgi_ws_gateway.state.memory import MemoryState
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
NAMED = {"set-header": {"name": "internal-auth", "header": "X-Internal-Auth", "value": SECRET}}
TENANT = {"set-header": {"header": "X-Tenant", "value": "acme"}}


@pytest.fixture
def attacker() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


async def test_a_named_secret_is_not_skipped_by_its_type(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    config = {"apis": [api("chat", "/chat", upstream)], "policies": [NAMED, TENANT]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            by_type = await http.post("apis", json=api("mine", "/mine", attacker, skip_policies=["set-header"]))
            assert by_type.status_code == 422, by_type.text
            (problem,) = by_type.json()["problems"]
            assert "the global set-header X-Internal-Auth" in problem and SECRET not in problem
            by_name = await http.post("apis", json=api("mine", "/mine", attacker, skip_policies=["internal-auth"]))
            assert by_name.status_code == 201, by_name.text
        async with await connect(running.url("/mine")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    (handshake,) = attacker.handshakes
    assert "x-internal-auth" not in handshake.headers
    assert handshake.headers["x-tenant"] == ["acme"]


@pytest.mark.parametrize(
    "entry",
    [
        NAMED,
        TENANT,
        {"set-header": {"name": "", "header": "X-Auth", "value": "v"}},
        {"set-query-parameter": {"name": "set-header", "parameter": "api_key", "value": "v"}},
        {"remove-header": {"header": "X-Drop"}},
    ],
)
def test_a_policy_is_skipped_by_the_name_the_gateway_runs_it_under(entry: dict[str, Any]) -> None:
    document = {"apis": [{"name": "chat", "path": "/chat", "upstreams": ["ws://127.0.0.1:9/"]}], "policies": [entry]}
    built = GatewayPolicies(load_config(document), store=MemoryState())
    assert [p.name for p in built.pipelines["chat"].global_policies] == [policy_name(entry)]
