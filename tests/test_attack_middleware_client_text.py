"""A client address that is no address: what uvicorn's ``--proxy-headers`` puts in ``scope["client"]``.

Under a bare ``uvicorn app:app`` (proxy headers on, trusting 127.0.0.1), a client on the same host
sending ``X-Forwarded-For: x1`` became the client ``x1``: the gateway took that text for the client's
address, so each text a client chose was a new rate-limit key (``{client.network}`` and ``{client.ip}``)
and a new management-lockout key (``WebSocketGateway.client_ip``), and the rewrite was not warned
about. Such a client is now ``unknown`` (one key for all of them; no address list matches it), an
address in any spelling is written one way, and the rewrite is warned about.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import UNKNOWN_CLIENT, parse_ip, peer_client
from asgi_ws_gateway.management import FileStore, GatewayManagement
from asgi_ws_gateway.standalone import not_found
from support.clients import echo_status
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

MODES = ["websockets-sansio", "wsproto", PASSTHROUGH]
TEXTS = ["x1", "x2", "x3", "x4"]
"""What a client on 127.0.0.1 sends in ``X-Forwarded-For``: uvicorn makes each the client."""
REWRITING: dict[str, Any] = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
"""uvicorn's defaults (whatever ``FORWARDED_ALLOW_IPS`` says here): a peer on 127.0.0.1 rewrites the client."""


def _gateway(upstream: UpstreamServer, policies: list[dict[str, Any]], **top: Any) -> WebSocketGateway:
    api = api_entry(upstream, passthrough=True, policies=policies)
    return WebSocketGateway(not_found, config={"apis": [api], **top})


@pytest.mark.parametrize("key", ["{client.network}", "{client.ip}"])
@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]], ids=["no-trusted-proxies", "trusted-loopback"])
@pytest.mark.parametrize("ws", MODES)
async def test_a_rate_limit_is_not_escaped_by_naming_text(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, key: str, trusted: list[str]
) -> None:
    """Four texts, a limit of two: the third is refused (every text was a counter of its own: 101 x 4)."""
    limit = {"rate-limit-by-key": {"key": key, "limit": 2, "window": 60}}
    server = uvicorn_server(_gateway(upstream, [limit], trusted_proxies=trusted), ws=ws, **REWRITING)
    assert [await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": text}) for text in TEXTS] == [
        101,
        101,
        429,
        429,
    ]


@pytest.mark.parametrize("ws", MODES)
async def test_spellings_of_one_address_are_one_client(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl
) -> None:
    """uvicorn keeps a quoted hop's quotes: each spelling of 203.0.113.7 was a ``{client.ip}`` key."""
    limit = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 2, "window": 60}}
    server = uvicorn_server(_gateway(upstream, [limit]), ws=ws, **REWRITING)
    spellings = ['"203.0.113.7"', '"203.0.113.7:1"', "[::ffff:203.0.113.7]:2", "203.0.113.7"]
    assert [await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": text}) for text in spellings] == [
        101,
        101,
        429,
        429,
    ]


@pytest.mark.parametrize("ws", MODES)
async def test_an_allow_list_admits_no_text(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl
) -> None:
    """Held before too: text that is no address matches no list (an allow list refuses it)."""
    allow = {"ip-filter": {"allow": ["127.0.0.0/8"]}}
    server = uvicorn_server(_gateway(upstream, [allow]), ws=ws, **REWRITING)
    assert await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": "x1"}) == 403
    assert await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": "localhost"}) == 403


async def test_the_rewrite_to_text_is_warned_about(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_ws_gateway.middleware")
    server = uvicorn_server(_gateway(upstream, []), **REWRITING)
    assert await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": "x1"}) == 101
    assert any("rewrote the client address" in record.getMessage() for record in caplog.records)


async def test_the_management_lockout_is_not_escaped_by_naming_text(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    """30 wrong tokens, each from another text, then the right one: 429 (it was 200, never locked)."""
    gateway = _gateway(upstream, [])
    management = GatewayManagement(gateway, store=FileStore(tmp_path / "state.json"), admin_token="a" * 32)
    server = uvicorn_server(management, lifespan="on", **REWRITING)
    async with httpx2.AsyncClient(base_url=server.url("/_gateway/", scheme="http"), trust_env=False) as http:
        for guess in range(30):
            headers = {"X-Forwarded-For": f"guesser-{guess}", "Authorization": f"Bearer guess-{guess}"}
            assert (await http.get("apis", headers=headers)).status_code == 401
        right = {"X-Forwarded-For": "guesser-30", "Authorization": "Bearer " + "a" * 32}
        assert (await http.get("apis", headers=right)).status_code == 429


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (("203.0.113.7", 5), "203.0.113.7"),
        (("::ffff:203.0.113.7", 5), "203.0.113.7"),
        (('"203.0.113.7:80"', 0), "203.0.113.7"),
        (("x1", 0), UNKNOWN_CLIENT),
        (("fe80::1%eth0", 5), "fe80::1%eth0"),  # the kernel's own peer keeps its zone
        (("", 0), ""),
        (None, ""),  # a Unix socket
        ((b"203.0.113.7", 5), UNKNOWN_CLIENT),  # not text: no address ASGI allows
    ],
)
@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8"]], ids=["no-trusted-proxies", "trusted-elsewhere"])
def test_client_ip_reads_the_scope_as_a_handshake(client: Any, expected: str, trusted: list[str]) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": [api_entry()], "trusted_proxies": trusted})
    scope = {"type": "http", "path": "/", "client": client, "headers": [(b"x-forwarded-for", b"198.51.100.1")]}
    assert gateway.client_ip(scope) == expected


def test_peer_client_keeps_only_addresses() -> None:
    for _ in range(5000):
        peer_client(f"text-{_}")
    assert peer_client("text-1") == UNKNOWN_CLIENT
    assert peer_client("198.51.100.9") == "198.51.100.9"  # still read after 5,000 texts


_ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda address: f'"{address}:{address.packed[0]}"'),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]:80"),
    st.text(alphabet='0123456789abcdef:.[]"%', max_size=24),
    st.text(max_size=12),
)


@given(text=_ADDRESS_TEXT)
def test_peer_client_is_the_parse_it_remembers(text: str) -> None:
    """The remembered reading of a peer is the parse's, on the first call and on every later one."""
    parsed = parse_ip(text)
    expected = "" if not text else (str(parsed) if parsed is not None else UNKNOWN_CLIENT)
    assert peer_client(text) == expected
    assert peer_client(text) == expected
