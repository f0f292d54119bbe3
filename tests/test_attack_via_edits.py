"""No policy, in the file or in code, may change the ``Via`` header by which the gateway counts its hops;
and a ``set-header`` constant is text an HTTP header can carry.

A configured ``set-header``/``remove-header`` of ``Via`` is refused by field path
(``tests/test_attack_admin_forwarding_loop.py``). These are the other ways to the same header: a plugin
policy's ``context.upstream.remove_header("via")`` on an API proxied to the gateway itself (one client
handshake nested until the worker's file descriptors ran out), and a subscription key read from ``Via``
(the key's header is taken out of the upstream request, the gateway's entries with it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import ConfigError, WebSocketGateway, load_config
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.upstream_edits import UpstreamEdits
from asgi_ws_gateway.policies import PolicyEnv, register_policy
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory, free_port

UPSTREAM = "ws://127.0.0.1:9/"


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


@pytest.mark.parametrize("name", ["Via", "via", "VIA", "vIa"])
@pytest.mark.parametrize("edit", ["set", "append", "skip", "delete", "remove"])
def test_a_policy_in_code_cannot_edit_via(name: str, edit: str) -> None:
    edits = UpstreamEdits()
    with pytest.raises(ValueError, match="Via"):
        if edit == "remove":
            edits.remove_header(name)
        elif edit == "set":
            edits.set_header(name, "1.1 elsewhere")
        else:
            edits.set_header(name, "x", edit)  # type: ignore[arg-type]
    assert not edits  # nothing recorded


def test_other_headers_stay_editable_in_code() -> None:
    edits = UpstreamEdits()
    edits.set_header("X-Via", "x")
    edits.remove_header("Vias")
    edits.remove_header("via-x")
    assert edits


@pytest.mark.parametrize("headers", [["Via"], ["X-Subscription-Key", "VIA"]])
def test_a_subscription_key_cannot_be_read_from_via(headers: list[str]) -> None:
    config = {"subscription_key": {"headers": headers}, "apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM]}]}
    (problem,) = _problems(config)
    assert problem.startswith("subscription_key.headers: "), problem
    assert "Via" in problem


@pytest.mark.parametrize(
    "value",
    ["acme\r\nX-Admin: 1", "a\nb", "a\x00b", "caf\u20ac", "x\x7f", "x\x85y", "{jwt.sub|a\r\nX: 1}", "\u2028"],
)
def test_a_constant_set_header_value_no_request_can_carry_is_a_problem(value: str) -> None:
    policies = [{"set-header": {"header": "X-A", "value": value}}]
    (problem,) = _problems({"apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM], "policies": policies}]})
    assert problem.startswith("apis[0].policies[0].set-header.value:"), problem
    assert "cannot be sent in an HTTP header" in problem


@pytest.mark.parametrize(
    "value", ["Bearer {jwt.sub}", "tab\there", "caf\u00e9", "{{literal}}", "{header.x-a|d\u00e9faut}", ""]
)
def test_set_header_values_a_header_carries_stay_valid(value: str) -> None:
    policies = [{"set-header": {"header": "X-A", "value": value}}]
    load_config({"apis": [{"name": "a", "path": "/a", "upstreams": [UPSTREAM], "policies": policies}]})


class _NoSettings(BaseModel):
    pass


class _HideHops:
    """A plugin policy that takes the ``Via`` header out of the upstream request."""

    Settings = _NoSettings

    def __init__(self, settings: _NoSettings, env: PolicyEnv) -> None:
        self.name = "hide-hops-test"

    async def apply(self, context: HandshakeContext) -> None:
        context.upstream.remove_header("via")


@pytest.fixture
def _hide_hops_registered() -> Iterator[None]:
    register_policy("hide-hops-test")(_HideHops)
    yield
    del REGISTRY["hide-hops-test"]


class _CountingGateway:
    def __init__(self, config: dict[str, Any]) -> None:
        self.gateway = WebSocketGateway(not_found, config=config)
        self.handshakes: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.handshakes[scope["path"]] += 1
        await self.gateway(scope, receive, send)


@pytest.mark.usefixtures("_hide_hops_registered")
async def test_a_plugin_removing_via_on_an_api_proxied_to_itself_does_not_nest(uvicorn_server: UvicornFactory) -> None:
    port = free_port()
    api = api_entry(f"ws://127.0.0.1:{port}/loop", name="loop", path="/loop", policies=[{"hide-hops-test": {}}])
    app = _CountingGateway({"apis": [api]})
    uvicorn_server(app, port=port)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{port}/loop")
    assert refused.value.response.status_code == 500  # the policy's error: a misconfiguration, not a client's
    assert app.handshakes["/loop"] == 1  # it never left the gateway (before: thousands of nested handshakes)
