"""The upstream's ``X-Forwarded-For`` is the chain the gateway believed, from the header it was told to believe.

Under ``forwarded_header: forwarded`` the gateway decided who the client was from ``Forwarded`` and
built the upstream's ``X-Forwarded-For`` from the client's own ``X-Forwarded-For``: from its trusted
proxy, ``Forwarded: for=203.0.113.9`` and the client's ``X-Forwarded-For: 6.6.6.6`` admitted
203.0.113.9 and told the upstream (and ``{header.x-forwarded-for}``) ``6.6.6.6, 127.0.0.1``. Under
the default ``x-forwarded-for``, what a client wrote left of itself went on too
(``6.6.6.6, 203.0.113.9, 127.0.0.1``): the leftmost entry, which most frameworks take for the client,
was one no proxy vouched for. Now the upstream gets the hops the trusted proxies vouch for, the
client first, then the peer. Real uvicorn (the test's connection is the trusted proxy 127.0.0.1), an
upstream that records the headers it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.headers import forwarding_headers
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

SEEN = [{"set-header": {"header": "x-seen-for", "value": "{header.x-forwarded-for}"}}]


@pytest.mark.parametrize(
    ("header", "sent", "expected"),
    [
        ("forwarded", {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "6.6.6.6"}, "203.0.113.9, 127.0.0.1"),
        ("forwarded", {"Forwarded": 'for=6.6.6.6, for="[2001:db8::7]:4711"', "X-Forwarded-For": "6.6.6.6"},
         "2001:db8::7, 127.0.0.1"),
        ("forwarded", {"Forwarded": "for=unknown"}, "unknown, 127.0.0.1"),
        ("x-forwarded-for", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}, "203.0.113.9, 127.0.0.1"),
        ("x-forwarded-for", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 127.0.0.2"},
         "203.0.113.9, 127.0.0.2, 127.0.0.1"),
    ],
)  # fmt: skip
async def test_the_upstream_is_sent_the_chain_the_gateway_believed(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, header: str, sent: dict[str, str], expected: str
) -> None:
    """Before: the client's own ``6.6.6.6`` led the upstream's chain (5 of 5)."""
    config = {"apis": [api_entry(upstream, policies=SEEN)], "forwarded_header": header,
              "trusted_proxies": ["127.0.0.1", "127.0.0.2"]}  # fmt: skip
    url = uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False).url("/ws/echo")
    async with await connect(url, additional_headers=sent) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    seen = upstream.handshakes[-1]
    assert seen.headers["x-forwarded-for"] == [expected]
    assert seen.header("x-seen-for") == expected


_hops = st.lists(
    st.sampled_from(["6.6.6.6", "203.0.113.9", "10.0.0.1", "10.0.0.2", "garbage", "[2001:db8::1]:80"]), min_size=1
)


@given(_hops, st.sampled_from(["x-forwarded-for", "forwarded"]), st.sampled_from(["6.6.6.6", "203.0.113.9"]))
def test_nothing_left_of_the_client_goes_upstream(hops: list[str], header: Any, other: str) -> None:
    """Whatever the chain, the upstream's first hop is the client the gateway resolved, and the
    header the configuration does not believe is never read."""
    trusted = Networks(["10.0.0.0/8"])
    value = ", ".join(hops) if header == "x-forwarded-for" else ", ".join(f'for="{h}"' for h in hops)
    unread = "forwarded" if header == "x-forwarded-for" else "x-forwarded-for"
    scope = {
        "client": ("10.0.0.9", 1),
        "headers": [(header.encode(), value.encode()), (unread.encode(), b"for=" + other.encode())],
    }
    sent = dict(forwarding_headers(scope, trust_forwarded=True, trusted_proxies=trusted, forwarded_header=header))
    chain = sent["x-forwarded-for"].split(", ")
    assert chain[-1] == "10.0.0.9"
    believed: list[str] = []
    for hop in reversed(hops):
        believed.insert(0, "unknown" if hop == "garbage" else hop.split("]")[0].strip("["))
        if not hop.startswith("10.") or hop == "garbage":
            break
    assert chain[:-1] == believed
