"""Policies read the forwarding headers the upstream is sent, never a client's the gateway does not believe.

The gateway drops a client's ``X-Real-IP``, ``Forwarded`` and the other headers a proxy sets unless the
peer is a trusted proxy, and always sends its own ``X-Forwarded-Proto``/``-Host``/``-For``. Policies
read the client's all the same: ``check-header: {header: X-Forwarded-Proto, values: [https]}`` (a
TLS-only rule) passed a plain ``ws://`` client that sent ``X-Forwarded-Proto: https`` while the
upstream was sent ``http``, and a ``choose`` on ``{header.x-real-ip}`` took a client past an
``ip-filter`` (an attack pass against a real ``run``: 2 of 2, and every name below passed a
``check-header`` requiring it). Now the request policies read is the one the upstream gets. Real
uvicorn, an upstream that records the headers it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

# A forged value for each header the gateway replaces or, from a peer it does not trust, drops.
FORGED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "admin.internal",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-For": "10.0.0.1",
    "X-Real-IP": "10.0.0.1",
    "True-Client-IP": "10.0.0.1",
    "CF-Connecting-IP": "10.0.0.1",
    "X-Client-IP": "10.0.0.1",
    "Forwarded": "for=10.0.0.1;proto=https",
    "X-Original-URL": "/admin",
}


@pytest.mark.parametrize("name", list(FORGED))
async def test_a_check_of_a_forwarding_header_reads_the_gateways_value_not_the_clients(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, name: str
) -> None:
    """Before, each passed a check that required the forged value: 11 of 11."""
    server = _gateway(uvicorn_server, upstream, [{"check-header": {"header": name, "values": [FORGED[name]]}}])
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/ws/echo"), additional_headers={name: FORGED[name]})
    assert refused.value.response.status_code == 401
    assert len(upstream.handshakes) == seen


async def test_a_choose_on_a_forged_client_address_header_does_not_skip_an_ip_filter(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    choose = {"choose": {"when": [{"if": {"ref": "header.x-real-ip", "matches": r"^10\."}, "policies": []}],
                         "otherwise": [{"ip-filter": {"allow": ["10.0.0.0/8"]}}]}}  # fmt: skip
    server = _gateway(uvicorn_server, upstream, [choose])
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/ws/echo"), additional_headers={"X-Real-IP": "10.0.0.1"})
    assert refused.value.response.status_code == 403


async def test_a_template_renders_the_forwarding_headers_the_upstream_is_sent(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    names = ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-for", "x-real-ip"]
    policies = [{"set-header": {"header": f"x-seen-{n}", "value": f"{{header.{n}|absent}}"}} for n in names]
    server = _gateway(uvicorn_server, upstream, policies)
    await _admitted(server.url("/ws/echo"), FORGED)
    handshake = upstream.handshakes[-1]
    for name in names[:3]:
        assert handshake.header(f"x-seen-{name}") == handshake.header(name), name
    assert handshake.header("x-forwarded-proto") == "http"
    assert handshake.header("x-seen-x-real-ip") == "absent"
    assert handshake.header("x-real-ip") is None


async def test_a_trusted_proxys_forwarding_headers_are_read_as_the_upstream_gets_them(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """From a peer in ``trusted_proxies`` its ``X-Forwarded-For`` is believed and policies read the
    gateway's; its ``X-Real-IP`` goes neither upstream nor to the policies (the gateway believes only
    ``forwarded_header``)."""
    policies = [
        {"set-header": {"header": "x-seen-real-ip", "value": "{header.x-real-ip}"}},
        {"set-header": {"header": "x-seen-for", "value": "{header.x-forwarded-for}"}},
    ]
    server = _gateway(uvicorn_server, upstream, policies, trusted_proxies=["127.0.0.1"])
    await _admitted(server.url("/ws/echo"), {"X-Real-IP": "10.0.0.1", "X-Forwarded-For": "10.0.0.1"})
    handshake = upstream.handshakes[-1]
    assert handshake.header("x-real-ip") is None
    assert handshake.header("x-seen-real-ip") in (None, "")
    assert handshake.header("x-seen-for") == handshake.header("x-forwarded-for") == "10.0.0.1, 127.0.0.1"


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any], **top: Any) -> Any:
    config = {"apis": [api_entry(upstream, policies=policies)], **top}
    # As under ``run``: uvicorn's own --proxy-headers would rewrite the client and scheme first.
    return uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False)


async def _admitted(url: str, headers: dict[str, str]) -> None:
    async with await connect(url, additional_headers=headers) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
