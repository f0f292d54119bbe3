"""Header names with underscores never stand in for the headers the gateway checks, removes or sets.

CGI turns ``X-User`` into ``HTTP_X_USER``, and so does ``X_User``; WSGI, PHP, Rack and Django's
``META`` follow it. A client that sent ``X_Real_IP``, ``X_Forwarded_For`` or ``X_User`` got them past
the gateway's forwarding rules and policies to an upstream that may read them as the real ones. By
default they are dropped before anything reads the request (``headers_with_underscores: drop``).
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import load_config
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.policies.build import load_policies
from support.clients import connect
from support.configs import build_config
from support.gateway import PASSTHROUGH, ProbedGateway
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

SMUGGLED = [
    ("X_Real_IP", "6.6.6.6"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("x_forwarded_host", "evil.example"),
    ("X_User", "admin"),
    ("X_Tenant", "evil"),
]
POLICIES = [
    {"check-header": {"header": "X-Tenant", "values": ["acme"], "failed_status": 403}},
    {"set-header": {"header": "X-User", "value": "gateway-user"}},
]


def _config(upstream: UpstreamServer, **limits: Any) -> dict[str, Any]:
    api = {"policies": POLICIES}
    if limits:
        return build_config(upstream.url("/echo"), api=api, handshake_limits=limits)
    return build_config(upstream.url("/echo"), api=api)


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", PASSTHROUGH])
async def test_by_default_neither_policies_nor_the_upstream_see_them(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl
) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream)), ws=ws)
    headers = [("X-Tenant", "acme"), ("X-Other", "kept"), *SMUGGLED]
    async with await connect(server.url("/ws/echo"), additional_headers=headers) as ws_client:
        await ws_client.send("hi")
        assert await ws_client.recv() == "hi"
    seen = upstream.handshakes[-1].headers
    assert not [name for name in seen if "_" in name]
    assert seen["x-tenant"] == ["acme"] and seen["x-other"] == ["kept"]
    assert seen["x-user"] == ["gateway-user"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # the TCP peer alone: no trusted proxy
    assert "x-real-ip" not in seen


async def test_an_underscored_copy_of_a_checked_header_cannot_pass_for_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """check-header reads X-Tenant only: X_Tenant: acme does not satisfy it."""
    server = uvicorn_server(ProbedGateway(_config(upstream)))
    with pytest.raises(Exception, match="403"):
        await connect(server.url("/ws/echo"), additional_headers=[("X_Tenant", "acme")])


async def test_reject_refuses_them_with_400(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream, headers_with_underscores="reject")))
    before = len(upstream.handshakes)
    with pytest.raises(Exception, match="400"):
        await connect(server.url("/ws/echo"), additional_headers=[("X-Tenant", "acme"), ("X_User", "admin")])
    assert len(upstream.handshakes) == before  # no backend contacted
    async with await connect(server.url("/ws/echo"), additional_headers=[("X-Tenant", "acme")]) as ws_client:
        await ws_client.send("still serving")
        assert await ws_client.recv() == "still serving"


async def test_forward_keeps_the_previous_behaviour(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream, headers_with_underscores="forward")))
    async with await connect(
        server.url("/ws/echo"), additional_headers=[("X-Tenant", "acme"), ("X_User", "admin")]
    ) as ws_client:
        await ws_client.send("hi")
        await ws_client.recv()
    assert upstream.handshakes[-1].headers["x_user"] == ["admin"]


@pytest.mark.parametrize("value", ["DROP", "allow", "", None, 1])
def test_other_values_are_refused_by_field_path(value: object) -> None:
    with pytest.raises(ConfigError, match=r"handshake_limits\.headers_with_underscores"):
        load_config(build_config(handshake_limits={"headers_with_underscores": value}))


def test_a_policy_reading_a_header_with_an_underscore_is_warned_about_by_field_path() -> None:
    """Dropped from every request, such a header never reaches the policy that names it."""
    policies = [
        {"check-header": {"header": "X_Tenant", "values": ["acme"]}},
        {"validate-jwt": {"secret": "s" * 32, "algorithms": ["HS256"], "token": [{"header": "X_Token"}]}},
        {"rate-limit-by-key": {"key": "{header.x_api_key}/{ header.X_Client }", "limit": 5, "window": 60}},
        {"set-header": {"header": "X_Out", "value": "{header.x_in}"}},  # writes X_Out: fine; reads x_in
        {"remove-header": {"header": "X_Gone"}},
        {"check-header": {"header": "X-Fine", "values": ["a_b"]}},
    ]
    document = build_config(api={"policies": policies}, subscription_key={"headers": ["X-Key", "X_Key"]})
    # (The rate limit's key is also warned about as a value the client chooses: not this test's.)
    warnings = [w.split(": the request header")[0] for w in load_policies(document).warnings if "underscore" in w]
    assert warnings == [
        "subscription_key.headers[1]",
        "apis[0].policies[0].check-header.header",
        "apis[0].policies[1].validate-jwt.token[0].header",
        "apis[0].policies[2].rate-limit-by-key.key",
        "apis[0].policies[2].rate-limit-by-key.key",
        "apis[0].policies[3].set-header.value",
    ]
    document["handshake_limits"] = {"headers_with_underscores": "forward"}
    assert [w for w in load_policies(document).warnings if "which the client chooses" not in w] == []
