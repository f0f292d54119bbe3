"""The client address: forwarding headers believed only from trusted proxies."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import Networks, client_address, forwarded_chain, parse_ip, rewritten_by_server
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.policies import context
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

TRUSTED = Networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "chain", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # one trusted proxy
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1", "10.0.0.2"], "198.51.100.1"),  # forged leftmost entry
        ("10.0.0.1", ["10.0.0.3", "10.0.0.2"], "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["garbage"], "unknown"),  # never the proxy: it would pass the proxy's allow-lists
        ("10.0.0.1", ["unknown"], "unknown"),  # RFC 7239's unknown
        ("10.0.0.1", ['"_hidden"', "10.0.0.2"], "unknown"),  # an obfuscated identifier behind two proxies
        ("10.0.0.1", ["_hidden", "198.51.100.1"], "198.51.100.1"),  # left of the client: never read
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peer
    ],
)
def test_client_address(peer: str, chain: list[str], expected: str) -> None:
    assert client_address(peer, chain, TRUSTED) == expected


def test_forwarded_header_syntax() -> None:
    values = ['for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"']
    assert forwarded_chain(values, "forwarded") == ["192.0.2.60", '"[2001:db8:cafe::17]:4711"']
    assert str(parse_ip('"[2001:db8:cafe::17]:4711"')) == "2001:db8:cafe::17"
    assert forwarded_chain(["1.1.1.1, 2.2.2.2", "3.3.3.3"], "x-forwarded-for") == ["1.1.1.1", " 2.2.2.2", "3.3.3.3"]


def test_request_view_uses_trusted_proxies_only_when_configured() -> None:
    headers = [("X-Forwarded-For", "198.51.100.1")]
    assert context(headers=headers, client=("10.0.0.1", 1)).request.client.ip == "10.0.0.1"
    resolved = context(headers=headers, client=("10.0.0.1", 1), trusted=["10.0.0.0/8"]).request.client
    assert (resolved.ip, resolved.peer, resolved.port) == ("198.51.100.1", "10.0.0.1", 1)


def _scope(client: tuple[str, int], *headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"client": client, "headers": list(headers)}


@pytest.mark.parametrize(
    "scope",
    [
        _scope(("10.1.2.3", 0), (b"x-forwarded-for", b"10.1.2.3")),
        _scope(("10.1.2.3", 51000), (b"x-forwarded-for", b"192.0.2.1, 10.1.2.3")),
        _scope(("2001:db8::1", 0), (b"forwarded", b'for="[2001:db8::1]:443"')),
        _scope(("2001:db8::1", 0), (b"x-forwarded-for", b"10.0.0.1, 2001:DB8::1")),
    ],
)
def test_a_server_rewrite_is_recognised(scope: dict[str, object]) -> None:
    """The header names the very address scope["client"] holds while no proxy is trusted (or port 0)."""
    assert rewritten_by_server(scope, Networks([]))


@pytest.mark.parametrize(
    ("scope", "trusted"),
    [
        (_scope(("127.0.0.1", 5000), (b"x-forwarded-for", b"10.1.2.3")), []),  # a peer that did not rewrite
        (_scope(("127.0.0.1", 5000)), []),  # no header at all
        (_scope(("10.1.2.3", 5000), (b"x-forwarded-for", b"10.1.2.3")), ["10.0.0.0/8"]),  # a trusted peer
        (_scope(("10.1.2.3", 5000), (b"x-forwarded-for", b"10.1.2.3")), ["127.0.0.1"]),  # real port: not rewritten
        ({"headers": [(b"x-forwarded-for", b"10.1.2.3")]}, []),  # no client (a unix socket)
    ],
)
def test_no_rewrite_is_reported_without_the_signs(scope: dict[str, object], trusted: list[str]) -> None:
    assert not rewritten_by_server(scope, Networks(trusted))


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [("for=127.0.0.5", 101), ("for=198.51.100.7", 403), ("for=unknown", 403), ('for="_hidden"', 403),
     ("for=_gazonk", 403)],
)  # fmt: skip
async def test_a_client_a_trusted_proxy_cannot_name_does_not_pass_the_proxys_allow_list(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, forwarded: str, status: int
) -> None:
    """An allow-list of the proxy's own network admitted every client the proxy reported as ``unknown``
    (or by an obfuscated identifier): the gateway took the proxy for the client."""
    api = api_entry(upstream, policies=[{"ip-filter": {"allow": ["127.0.0.0/8"]}}])
    config = {"apis": [api], "trusted_proxies": ["127.0.0.1"], "forwarded_header": "forwarded"}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))
    try:
        async with await connect(server.url("/ws/echo"), additional_headers={"Forwarded": forwarded}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            got = 101
    except InvalidStatus as refusal:
        got = refusal.response.status_code
    assert got == status


def test_hops_not_naming_the_clients_address_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack pass sent 32 KiB of ``X-Forwarded-For`` hops: the rewrite check parsed each (8 ms a
    handshake, before any policy). A value without the client's address as text is skipped unparsed."""
    hops = b", ".join(b"2001:db8::%x" % n for n in range(2000))
    scope = _scope(("203.0.113.9", 0), *[(b"x-forwarded-for", hops)] * 4, (b"forwarded", b"for=" + hops))

    def refused(*_: object) -> list[str]:
        raise AssertionError("parsed hop by hop")

    monkeypatch.setattr("asgi_ws_gateway.forwarded.forwarded_chain", refused)
    assert not rewritten_by_server(scope, Networks([]))
