"""``ws_gateway.cookies.changed``: the Set-Cookie headers of upstreams' answers the gateway dropped or narrowed,
by reason, as a real OTLP receiver gets them from a gateway under real uvicorn in front of a real upstream that
sets cookies wider than its API.

Before, the only trace was a WARNING per API now and then (``upstream.cookie_scope``, ``upstream.set_cookies``):
an operator could not alert on an upstream that kept asking for more than its API, nor see how often a
``response_cookies`` list left out a cookie its backend needs. Each header counts once per reason, on every
connector, for a 101 and for a refusal the gateway relays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from asgi_ws_gateway.telemetry import names as n
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.otlp import OtlpReceiver
from support.rawhttp import answer_head, header_values, headered_upstream, status_of
from support.servers import UvicornServer
from support.telemetry import export_to

METRIC = n.COOKIES_CHANGED.name
LINES = [
    "wide=1; Domain=.example.com; Path=/",  # every sibling host and path: domain_removed, path_narrowed
    "root=2; Path=/",  # every API of the origin: path_narrowed
    "__Host-session=3; Path=/; Secure",  # the origin's own kind: host_prefix_dropped
    "host=4; Path=/ws/evil; Domain=127.0.0.1",  # the request's host and its subdomains: domain_removed
    "tenant=other; Path=/ws/evil",  # the cookie a limit keys by: read_by_policy
    "affinity=b2; Path=/ws/evil",  # within /ws/evil
    "theme=dark",  # no Path: given the API's, not counted
]
"""What the upstream answers with, to every handshake."""
READS_TENANT = [{"rate-limit-by-key": {"key": "{cookie.tenant|none}", "limit": 100, "window": 60}}]


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        export_to(monkeypatch, receiver, "http/protobuf")
        yield receiver


def _counted(otlp: OtlpReceiver) -> dict[tuple[str, str], float]:
    """The metric's latest value per (API, reason)."""
    return {
        (str(p.attributes[n.API]), str(p.attributes[n.COOKIE_REASON])): p.value for p in otlp.latest(METRIC).values()
    }


@pytest.mark.parametrize("mode", list(CONNECTORS))
async def test_each_dropped_or_narrowed_set_cookie_is_counted_by_reason(otlp: OtlpReceiver, mode: str) -> None:
    """Two 101s on /ws/evil and one 403 relayed on /ws/listed (``response_cookies`` naming three)."""
    lines = b"".join(f"Set-Cookie: {value}\r\n".encode() for value in LINES)
    async with headered_upstream(lines) as (upstream, port):
        evil = {"name": "evil", "path": "/ws/evil", "upstreams": [f"ws://127.0.0.1:{port}/"],
                "policies": READS_TENANT, **CONNECTORS[mode]}  # fmt: skip
        listed = {"name": "listed", "path": "/ws/listed", "upstreams": [f"ws://127.0.0.1:{port}/refuse"],
                  "response_cookies": ["wide", "affinity", "tenant"], **CONNECTORS[mode]}  # fmt: skip
        gateway = ProbedGateway({"apis": [evil, listed]})
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            heads = []
            for path in ("/ws/evil", "/ws/evil", "/ws/listed"):
                upstream.ended.clear()
                heads.append(await answer_head(server.port, path))
                await asyncio.wait_for(upstream.ended.wait(), 10)
            await gateway.settle()
            await asyncio.to_thread(gateway.gateway.telemetry.force_flush)
    assert [status_of(head) for head in heads] == [101, 101, 403]
    assert header_values(heads[0], "set-cookie") == [
        "wide=1; Path=/ws/evil", "root=2; Path=/ws/evil", "host=4; Path=/ws/evil", "affinity=b2; Path=/ws/evil",
        "theme=dark; Path=/ws/evil",
    ]  # fmt: skip
    assert header_values(heads[2], "set-cookie") == ["wide=1; Path=/ws/listed", "affinity=b2; Path=/ws/listed"]
    assert _counted(otlp) == {
        ("evil", "read_by_policy"): 2,
        ("evil", "host_prefix_dropped"): 2,
        ("evil", "domain_removed"): 4,
        ("evil", "path_narrowed"): 4,
        ("listed", "read_by_policy"): 1,
        ("listed", "not_in_response_cookies"): 4,  # root, __Host-session, host, theme
        ("listed", "domain_removed"): 1,
        ("listed", "path_narrowed"): 2,  # wide's /, affinity's /ws/evil
    }


async def test_an_answer_the_gateway_passes_as_written_counts_nothing(otlp: OtlpReceiver) -> None:
    """Cookies within the API, and what the operator allowed: no series at all."""
    values = ["affinity=b2; Path=/ws/evil", "wide=1; Domain=.example.com; Path=/"]
    lines = b"".join(f"Set-Cookie: {value}\r\n".encode() for value in values)
    async with headered_upstream(lines) as (upstream, port):
        api = {"name": "evil", "path": "/ws/evil", "upstreams": [f"ws://127.0.0.1:{port}/"],
               "response_cookie_domains": ["example.com"], "response_cookie_paths": ["/"]}  # fmt: skip
        gateway = ProbedGateway({"apis": [api]})
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            head = await answer_head(server.port, "/ws/evil")
            await asyncio.wait_for(upstream.ended.wait(), 10)
            await gateway.settle()
            await asyncio.to_thread(gateway.gateway.telemetry.force_flush)
    assert header_values(head, "set-cookie") == values
    assert _counted(otlp) == {}
