"""Where the gateway's upstream leg may go: only where the configuration says, on every connector.

* A proxy named in the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ...) is never
  used for backend traffic: ``websockets`` ≥ 15 honours them by default, and a gateway's backend
  connections going through whatever the process environment names (a proxy that logs, or a typo)
  would be an implicit detour; the splice opens its own sockets.
* A ``3xx`` from an upstream is never followed (a 502 for the client): the upstream names no host.
* A value that reaches a ``set-backend-service`` template cannot add a port, user-info or another
  host to it: each is percent-encoded and the URL refused (400) before any connect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.policies import backend_claim_refusal
from support.servers import CountingListener, UvicornFactory
from support.upstream import UpstreamServer

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY", "SOCKS_PROXY")


@pytest.fixture(name="environment_proxy")
def _environment_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingListener]:
    proxy = CountingListener()
    for name in _PROXY_VARIABLES:
        for spelled in (name, name.lower()):
            monkeypatch.setenv(spelled, f"http://127.0.0.1:{proxy.port}")
    for spelled in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(spelled, raising=False)
    yield proxy
    proxy.close()


def _gateway(uvicorn_server: UvicornFactory, connector: str, url: str, **fields: Any) -> str:
    entry = {**api_entry(url, name="h", path="/h", connect_timeout=5, **CONNECTORS[connector]), **fields}
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [entry]}), ws=PASSTHROUGH).url("/h")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_proxy_in_the_environment_is_not_used_for_backends(
    uvicorn_server: UvicornFactory, environment_proxy: CountingListener, connector: str
) -> None:
    with UpstreamServer() as upstream:
        async with await connect(_gateway(uvicorn_server, connector, upstream.url("/echo"))) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        assert len(upstream.handshakes) == 1
    assert environment_proxy.accepted == 0


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_upstream_redirect_is_not_followed(uvicorn_server: UvicornFactory, connector: str) -> None:
    with UpstreamServer() as upstream:
        status, _, _ = await expect_status(_gateway(uvicorn_server, connector, upstream.url("/redirect")))
        assert status == 502
        assert [h.path for h in upstream.handshakes] == ["/redirect"]


_HOSTILE_CLAIMS = [
    "evil.example:6379", "127.0.0.1:6379", "x@evil.example", "x%40evil.example", "x\\@evil.example", "u:p@127.0.0.1",
    "evil.example/", "evil.example?", "evil.example#", "[::1]", "::1", "a b", "evil.example\r\n", "evil.example\x00",
]  # fmt: skip


@pytest.mark.parametrize("base_url", ["wss://{jwt.host}:9443", "wss://chat-{jwt.host}.internal:9443"])
@pytest.mark.parametrize("claim", _HOSTILE_CLAIMS)
async def test_a_claim_in_a_backend_template_cannot_add_a_port_user_info_or_host(claim: str, base_url: str) -> None:
    """Even where the whole host is a claim (the issuer picks it), a claim's value is escaped: it can
    make the host invalid (400 before any connect), never add a port, user-info or another host."""
    refused = await backend_claim_refusal(base_url, {"host": claim})
    assert refused.status == 400


_NUMBERS = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "127.0.0.01", "127.0.0.1.", "10.0.0.0x1"]
"""Hosts the system resolver reads as 127.0.0.1 (inet_aton), as WHATWG URL parsers do: names to everything
that compares hosts as written (the management API's hosts, TLS's own host, logs, metrics)."""


@pytest.mark.parametrize("host", _NUMBERS)
def test_an_upstream_host_that_ends_in_a_number_must_be_an_ipv4_address(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"apis": [{"name": "c", "path": "/c", "upstreams": [f"ws://{host}:9000/x"]}]})
    (problem,) = caught.value.problems
    assert problem.startswith("apis[0].upstreams[0].url: has a host that ends in a number but is not an IPv4")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "db1.internal", "123.example", "host-0x1"])
def test_an_ipv4_address_or_a_name_is_an_upstream_host(host: str) -> None:
    load_config({"apis": [{"name": "c", "path": "/c", "upstreams": [f"ws://{host}:9000/x"]}]})


@pytest.mark.parametrize("claim", _NUMBERS)
async def test_a_claim_that_spells_an_address_as_a_number_is_refused(claim: str) -> None:
    refused = await backend_claim_refusal("wss://{jwt.host}:9443", {"host": claim})
    assert refused.status == 400
    assert refused.detail == "the upstream URL's host would be a number that is not an IPv4 address"
