"""Building handshake contexts and policies without a server, for the policy unit tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from asgi_ws_gateway.config.apis import ApiConfig, UpstreamConfig
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.pipeline import Policy
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.policies.build_entries import PolicyBuilder
from asgi_ws_gateway.state.base import Store
from asgi_ws_gateway.state.memory import MemoryState

API = ApiConfig(name="chat", path="/ws/{room}", upstreams=[UpstreamConfig(url="ws://up:9000/rooms/{room}?v=1")])
"""An API whose upstream URL has a path parameter and a query, for request-building tests."""


def scope(
    path: str = "/ws/chat",
    *,
    headers: Sequence[tuple[str, str]] = (),
    query: str = "",
    client: tuple[str, int] = ("127.0.0.1", 50000),
    subprotocols: Sequence[str] = (),
) -> dict[str, Any]:
    """A websocket ASGI scope as uvicorn would give it."""
    return {
        "type": "websocket",
        "path": path,
        "query_string": query.encode(),
        "headers": [(b"host", b"gw.test")] + [(n.lower().encode(), v.encode()) for n, v in headers],
        "client": client,
        "scheme": "ws",
        "subprotocols": list(subprotocols),
    }


def context(
    path: str = "/ws/chat",
    *,
    params: dict[str, str] | None = None,
    trusted: Sequence[str] = (),
    **kw: Any,
) -> HandshakeContext:
    return HandshakeContext("chat", RequestView(scope(path, **kw), params or {}, Networks(trusted)))


def build(entry: dict[str, Any], store: Store | None = None, clock: Callable[[], float] | None = None) -> Policy:
    """One policy from its configuration entry; fails the test on a configuration problem."""
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    builder = PolicyBuilder(store if store is not None else MemoryState(), **kwargs)
    policies = builder.build([entry], ("policies",), "test")
    assert builder.problems == []
    return policies[0]


def problems(entry: dict[str, Any]) -> list[str]:
    """The configuration problems of one API-level policy entry."""
    builder = PolicyBuilder(MemoryState())
    builder.build([entry], ("apis", 0, "policies"), "test")
    return builder.problems


async def denied(apply: Awaitable[object]) -> HandshakeDenied:
    """The denial ``apply`` raises (fails the test if it allows)."""
    with pytest.raises(HandshakeDenied) as info:
        await apply
    return info.value


async def backend_claim_refusal(
    base_url: str, claims: dict[str, Any], upstream: str = "wss://up:9/x"
) -> HandshakeDenied:
    """The refusal of ``set-backend-service`` rendering ``base_url`` with the token's ``claims``: the policy's
    own (a value that would split a label the template began), or the upstream request's once built
    (fails the test if the request is built)."""
    policy = build({"set-backend-service": {"base_url": base_url}})
    handshake = context()
    handshake.claims = claims
    try:
        await policy.apply(handshake)
    except HandshakeDenied as by_policy:
        return by_policy
    api = load_config({"apis": [{"name": "c", "path": "/ws/chat", "upstreams": [upstream]}]}).apis[0]
    with pytest.raises(HandshakeDenied) as refused:
        handshake.build_request(api, api.upstreams[0])
    return refused.value
