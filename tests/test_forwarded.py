"""The client address: forwarding headers believed only from trusted proxies."""

from __future__ import annotations

import pytest

from asgi_ws_gateway.forwarded import Networks, client_address, forwarded_chain, parse_ip, rewritten_by_server
from support.policies import context

TRUSTED = Networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "chain", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # untrusted peer: its header is ignored
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # one trusted proxy
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1", "10.0.0.2"], "198.51.100.1"),  # forged leftmost entry
        ("10.0.0.1", ["10.0.0.3", "10.0.0.2"], "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["garbage"], "10.0.0.1"),
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
