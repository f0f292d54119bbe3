"""An ``Origin`` longer than any origin can be, against ``check-origin``'s patterns.

A wildcard pattern (``https://*.tenant7.example.com``) reads the whole value before it fails: a client's
8 KB ``Origin`` (``https://a.a.a....``) against 1,024 of them held the event loop 106 ms per handshake
(50: 6 ms), every other connection of the worker waiting (an attack pass, 2026-12-06), where a real
origin costs 0.6 ms. An origin is a scheme, a host of at most 253 characters and a port
(``MAX_ORIGIN_LENGTH``, 268): a longer value matches no pattern and is refused, 403, before any
pattern reads it. It was admitted when a wildcard's subdomains ran past what DNS allows.
"""

from __future__ import annotations

import re

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.network import MAX_ORIGIN_LENGTH, CheckOrigin
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.policies import build, context, denied
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

ALLOWED = [f"https://*.tenant{i}.example.com" for i in range(64)]


def _origin(length: int, domain: str = "tenant63.example.com") -> str:
    """``https://a.a....a.<domain>`` (a first label ``aa`` when the count is odd) of exactly ``length``
    characters: a subdomain the wildcard ``https://*.<domain>`` matches, however long."""
    labels = length - len("https://") - len(domain)
    return "https://" + ("aa." if labels % 2 else "") + "a." * ((labels - 3 * (labels % 2)) // 2) + domain


def test_the_longest_origin_is_a_scheme_a_253_character_host_a_dot_and_a_port() -> None:
    host = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    longest = f"https://{host}.:65535"
    assert len(host) == 253 and len(longest) == MAX_ORIGIN_LENGTH
    assert [len(_origin(n)) for n in (MAX_ORIGIN_LENGTH, MAX_ORIGIN_LENGTH + 1, 8000)] == [268, 269, 8000]


async def test_an_origin_past_the_longest_is_refused_before_any_pattern_reads_it() -> None:
    check = build({"check-origin": {"allowed": ALLOWED}})
    assert isinstance(check, CheckOrigin)
    read: list[str] = []
    check.patterns = [_Counting(pattern, read) for pattern in check.patterns]  # type: ignore[misc]
    denial = await denied(check.apply(context(headers=[("origin", _origin(8000))])))
    assert denial.status == 403 and denial.reason == "origin_forbidden"
    assert read == []
    await check.apply(context(headers=[("origin", "https://app.tenant63.example.com")]))
    assert len(read) == len(ALLOWED)  # a real origin is still read against each until one matches


class _Counting:
    """A compiled origin pattern that records the texts it reads."""

    def __init__(self, pattern: re.Pattern[str], read: list[str]) -> None:
        self.pattern, self.read = pattern, read

    def fullmatch(self, text: str) -> re.Match[str] | None:
        self.read.append(text)
        return self.pattern.fullmatch(text)


@pytest.mark.parametrize("length", [MAX_ORIGIN_LENGTH + 1, 8000])
async def test_an_origin_past_the_longest_is_a_403_end_to_end(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, length: int
) -> None:
    """Before: a wildcard's subdomains past what DNS allows were admitted (101)."""
    api = api_entry(upstream, policies=[{"check-origin": {"allowed": ALLOWED}}])
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    status, _, _ = await expect_status(server.url("/ws/echo"), origin=_origin(length))
    assert status == 403
    assert not upstream.handshakes


async def test_the_longest_origin_is_still_admitted(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    api = api_entry(upstream, policies=[{"check-origin": {"allowed": ALLOWED}}])
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    async with await connect(server.url("/ws/echo"), origin=_origin(MAX_ORIGIN_LENGTH)) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
