"""A JWKS fetch never connects to an address in the file's ``upstream_networks.deny``.

The upstream connectors never reached such an address (link-local and the cloud metadata services by
default), but ``validate-jwt``'s JWKS fetch reached every one: a management change setting
``jwks_url: http://169.254.169.254/...`` made each handshake of that API a GET to the metadata
service, and so did a JWKS host name whose DNS answers such an address. Here the "denied network" is
127.0.0.2 (listed in the file's deny), where a real JWKS server listens: it must see no request,
whatever the URL's spelling of the address or the name that leads there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import ConfigError, WebSocketGateway, load_config
from asgi_ws_gateway.config.upstream_networks import METADATA_NETWORKS
from asgi_ws_gateway.policies.jwks_fetch import JwksAddressDenied, fetch_url
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.dns import fake_dns
from support.jwts import JwksServer, signing_key, token
from support.management import managed_gateway
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

DENIED = "127.0.0.2"
DENY = [*METADATA_NETWORKS, f"{DENIED}/32"]


def _policy(jwks_url: str) -> dict[str, Any]:
    return {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url, "issuer": "https://issuer.test",
                             "audience": "chat", "jwks_timeout": 2}}  # fmt: skip


def _bearer(raw: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {raw}"}}


@pytest.mark.parametrize("spelling", ["address", "mapped address", "name", "name of a mapped address"])
async def test_a_jwks_url_into_a_denied_network_is_never_fetched(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture, spelling: str
) -> None:
    """Every spelling of the denied address: no request reaches its JWKS server, the handshake is a 503,
    and the WARNING says why."""
    key = signing_key("ES256")
    with JwksServer(key, host=DENIED) as jwks, fake_dns() as dns:
        port = int(jwks.url.split(":")[2].split("/")[0])
        dns["jwks.internal.test"] = [DENIED]
        dns["jwks-mapped.internal.test"] = [f"::ffff:{DENIED}"]
        host = {"address": DENIED, "mapped address": f"[::ffff:{DENIED}]", "name": "jwks.internal.test",
                "name of a mapped address": "jwks-mapped.internal.test"}[spelling]  # fmt: skip
        config = {"apis": [api_entry(upstream, policies=[_policy(f"http://{host}:{port}/.well-known/jwks.json")])],
                  "upstream_networks": {"deny": DENY}}  # fmt: skip
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
            status, _, _ = await expect_status(server.url("/ws/echo"), **_bearer(token(key)))
        assert (status, jwks.requests) == (503, 0)
        assert any("upstream_networks.deny" in r.getMessage() and "JWKS" in r.getMessage() for r in caplog.records)


async def test_a_jwks_url_outside_the_denied_networks_is_fetched(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The same deny list, the JWKS on 127.0.0.1 (by address and by a name): keys fetched, token admitted."""
    key = signing_key("ES256")
    with JwksServer(key) as jwks, fake_dns() as dns:
        dns["jwks.allowed.test"] = ["127.0.0.1"]
        url = jwks.url.replace("127.0.0.1", "jwks.allowed.test")
        config = {"apis": [api_entry(upstream, policies=[_policy(url)])], "upstream_networks": {"deny": DENY}}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        async with await connect(server.url("/ws/echo"), **_bearer(token(key))) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert jwks.requests == 1


@pytest.mark.parametrize(
    ("rule", "fetched"),
    [({"deny": ["127.0.0.0/8"]}, {"127.0.0.1": False, DENIED: False}),
     ({"allow": ["127.0.0.1/32"]}, {"127.0.0.1": True, DENIED: False}),
     ({"allow": ["127.0.0.0/8"], "deny": [f"{DENIED}/32"]}, {"127.0.0.1": True, DENIED: False})],
    ids=["deny loopback", "allow one address", "allow a network but one address"],
)  # fmt: skip
async def test_jwks_networks_rule_the_fetch_and_not_the_upstreams(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, rule: dict[str, list[str]], fetched: dict[str, bool]
) -> None:
    """The file's jwks_networks: a JWKS server is fetched only where it admits; the upstream on 127.0.0.1
    is connected to whatever it says (upstream_networks rules the upstreams)."""
    key = signing_key("ES256")
    with JwksServer(key) as loopback, JwksServer(key, host=DENIED) as other:
        servers = {"127.0.0.1": loopback, DENIED: other}
        apis = [api_entry(upstream, name=f"jwt{i}", path=f"/ws/jwt{i}", policies=[_policy(jwks.url)])
                for i, jwks in enumerate(servers.values())]  # fmt: skip
        config = {"apis": [api_entry(upstream, name="plain", path="/ws/plain"), *apis], "jwks_networks": rule}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        async with await connect(server.url("/ws/plain")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        statuses = {}
        for i, address in enumerate(servers):
            try:
                async with await connect(server.url(f"/ws/jwt{i}"), **_bearer(token(key))):
                    statuses[address] = 101
            except InvalidStatus as exc:
                statuses[address] = exc.response.status_code
        assert statuses == {address: 101 if ok else 503 for address, ok in fetched.items()}
        assert {address: jwks.requests > 0 for address, jwks in servers.items()} == fetched


def test_a_jwks_networks_entry_that_is_no_network_is_refused_by_field_path() -> None:
    with pytest.raises(ConfigError, match=r"jwks_networks\.deny\[0\]: '300\.0\.0\.1' is not an IP address or network"):
        load_config({"apis": [], "jwks_networks": {"deny": ["300.0.0.1"]}})


async def test_a_management_change_cannot_set_jwks_networks(upstream: UpstreamServer, tmp_path: Path) -> None:
    """The rule is the file's: an API cannot carry one, and no route changes the top level."""
    with managed_gateway({"apis": [api_entry(upstream, name="file", path="/ws/file")]}, tmp_path / "s.json") as managed:
        async with managed.http() as http:
            created = {**api_entry(upstream, name="mine", path="/ws/mine"), "jwks_networks": {"allow": ["0.0.0.0/0"]}}
            assert (await http.post("apis", json=created)).status_code == 422


async def test_a_management_change_cannot_point_jwks_url_into_a_denied_network(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """An admin-token holder's API whose jwks_url is in the file's deny: its handshakes fetch nothing."""
    key = signing_key("ES256")
    config = {"apis": [api_entry(upstream, name="file", path="/ws/file")], "upstream_networks": {"deny": DENY}}
    with JwksServer(key, host=DENIED) as jwks, managed_gateway(config, tmp_path / "state.json") as managed:
        created = api_entry(upstream, name="mine", path="/ws/mine", policies=[_policy(jwks.url)])
        async with managed.http() as http:
            assert (await http.post("apis", json=created)).status_code == 201
            status, _, _ = await expect_status(managed.url("/ws/mine"), **_bearer(token(key)))
        assert (status, jwks.requests) == (503, 0)


@pytest.mark.parametrize("answer", ["500 text", "200 text", "200 keys"])
async def test_what_an_internal_service_answers_a_jwks_fetch_reaches_no_management_answer(
    upstream: UpstreamServer, tmp_path: Path, answer: str
) -> None:
    """A holder's jwks_url at an internal HTTP service the file does not deny: what it answers (an error
    page, a document, key entries the gateway cannot read) is in no management answer, the refusals included."""
    secret = "internal-" + "x7Q" * 6
    body = {
        "500 text": secret,
        "200 text": f"<html>{secret}</html>",
        "200 keys": json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": secret, "x": secret, "y": secret}]}),
    }
    status_line = "500 Internal Server Error" if answer.startswith("500") else "200 OK"

    async def internal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        data = body[answer].encode()
        writer.write(f"HTTP/1.1 {status_line}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
        writer.write(data)
        await writer.drain()
        writer.close()

    service = await asyncio.start_server(internal, "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    key = signing_key("ES256")
    config = {"apis": [api_entry(upstream, name="file", path="/ws/file")]}
    try:
        with managed_gateway(config, tmp_path / "state.json") as managed:
            created = api_entry(upstream, name="mine", path="/ws/mine",
                                policies=[_policy(f"http://127.0.0.1:{port}/internal")])  # fmt: skip
            async with managed.http() as http:
                assert (await http.post("apis", json=created)).status_code == 201
                status, _, refused = await expect_status(managed.url("/ws/mine"), **_bearer(token(key)))
                answers = [(await http.get(path)).text for path in ("refusals", "apis/mine", "config", "apis")]
    finally:
        service.close()
    assert status in (401, 503)
    assert all(secret not in text for text in [*answers, refused.decode()])


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]",
             "2852039166", "0xa9.0xfe.0xa9.0xfe", "[fe80::1%25lo]"],
)  # fmt: skip
async def test_every_spelling_of_the_metadata_address_is_refused(host: str) -> None:
    """The default deny: the metadata address however the URL writes it (a decimal or hexadecimal IPv4
    the resolver reads, IPv4-mapped, NAT64, link-local with a zone), refused before any connect."""
    with pytest.raises(JwksAddressDenied):
        await fetch_url(f"http://{host}/latest/meta-data/", 5.0, deny=METADATA_NETWORKS)


async def test_the_environments_proxy_still_carries_the_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY names a proxy: a fetch by name goes through it (the proxy resolves and connects), one
    to a denied address literal is refused before the proxy hears of it, and a NO_PROXY host is
    connected to directly, its addresses checked."""
    asked: list[bytes] = []
    document = json.dumps({"keys": []}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(document)

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        writer.write(head + document)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "jwks.internal.test")
    try:
        with fake_dns() as dns:
            dns["jwks.internal.test"] = [DENIED]
            assert await fetch_url("http://jwks.example.test/keys", 5.0, deny=DENY) == document
            with pytest.raises(JwksAddressDenied):
                await fetch_url("http://169.254.169.254/latest/meta-data/", 5.0, deny=DENY)
            with pytest.raises(JwksAddressDenied):  # not proxied: looked up here, 127.0.0.2 denied
                await fetch_url("http://jwks.internal.test:9/keys", 5.0, deny=DENY)
    finally:
        server.close()
    assert asked == [b"GET http://jwks.example.test/keys HTTP/1.1"]
