"""An upstream's answer cannot set headers a browser applies to the gateway's whole origin.

Every API the gateway serves shares its origin, and every connector passed the upstream's response
headers on to the client but for the hop-by-hop ones, ``Date`` and ``Server``: one backend's 101 (or
refusal) with ``Strict-Transport-Security: ...; includeSubDomains; preload``, ``Clear-Site-Data:
"*"``, ``Alt-Svc``, ``NEL``/``Report-To``, ``Refresh`` or ``Location`` reached the browser, acting on
every other API and page of that origin. Now ``upstream.headers.ORIGIN_WIDE`` never passes; other
headers (``Set-Cookie``, ``X-App``) still do. Raw upstreams answer for the splice and the relay; an
in-process app answers through its accept and its refusal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asgi_ws_gateway.upstream.headers import ORIGIN_WIDE
from support.apps import answering_with
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import HeaderedUpstream, answer_head, header_of, status_of
from support.servers import UvicornServer

HOSTILE = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains; preload",
    "Public-Key-Pins": 'pin-sha256="AAAA"; max-age=1',
    "Public-Key-Pins-Report-Only": 'pin-sha256="AAAA"; max-age=1',
    "Expect-CT": "max-age=86400, enforce",
    "Clear-Site-Data": '"*"',
    "Alt-Svc": 'h2="evil.example:443"; ma=86400',
    "NEL": '{"report_to": "evil", "max_age": 86400}',
    "Report-To": '{"group": "evil", "max_age": 86400, "endpoints": [{"url": "https://evil.example/r"}]}',
    "Reporting-Endpoints": 'evil="https://evil.example/r"',
    "Refresh": "0; url=https://evil.example/",
    "Location": "https://evil.example/",
    "Content-Location": "https://evil.example/",
}
KEPT = {"Set-Cookie": "affinity=b2; Path=/ws; HttpOnly", "X-App": "chat"}
WIDER_COOKIES = {"response_cookie_paths": ["/ws"]}
"""What lets KEPT's cookie pass as written: a Path above the API's own (``upstream.cookie_scope``)."""


def test_the_list_is_every_hostile_header() -> None:
    assert {name.lower() for name in HOSTILE} == ORIGIN_WIDE


def _lines(headers: dict[str, str]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())


def _assert_origin_wide_dropped(head: bytes) -> None:
    for name in HOSTILE:
        assert header_of(head, name) is None, name
    for name, value in KEPT.items():
        assert header_of(head, name) == value, name


@pytest.mark.parametrize("mode", ["splice", "relay"])
@pytest.mark.parametrize(("target", "status"), [("/ws/echo", 101), ("/ws/refuse", 403)])
async def test_a_network_upstreams_origin_wide_headers_never_reach_the_client(
    mode: str, target: str, status: int
) -> None:
    upstream_side = HeaderedUpstream(_lines({**HOSTILE, **KEPT}))
    listener = await asyncio.start_server(upstream_side, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api: dict[str, Any] = {"passthrough": False, **WIDER_COOKIES} if mode == "relay" else WIDER_COOKIES
    upstream = f"ws://127.0.0.1:{port}" + ("/refuse" if target == "/ws/refuse" else "/")
    gateway = ProbedGateway({"apis": [{"name": "chat", "path": target, "upstreams": [upstream], **api}]})
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            head = await answer_head(server.port, target)
            # The upstream's side ended while this loop runs: leaving the block stops the server and
            # blocks the loop, and the relay's close left unanswered (the splice's connection left
            # open) held that stop for the 5 s closing timeout (the 2 s graceful shutdown).
            await asyncio.wait_for(upstream_side.ended.wait(), 10)
    assert status_of(head) == status
    _assert_origin_wide_dropped(head)


@pytest.mark.parametrize(("refuse", "status"), [(False, 101), (True, 403)])
async def test_an_in_process_apps_origin_wide_headers_never_reach_the_client(refuse: bool, status: int) -> None:
    upstream = {"url": "asgi:", "app": answering_with({**HOSTILE, **KEPT}, refuse=refuse)}
    gateway = ProbedGateway({"apis": [{"name": "chat", "path": "/ws/echo", "upstreams": [upstream], **WIDER_COOKIES}]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, "/ws/echo")
    assert status_of(head) == status
    _assert_origin_wide_dropped(head)
