"""A header, query parameter or cookie a template reads, sent twice with different values, is a 400.

Found by an attack pass: a limit keyed by ``{header.x-tenant}`` counted ``acme, acme`` (the copies
joined) as a new tenant while every upstream read ``acme``, so repeating the header reset the limit;
``{cookie.session}`` took the last of ``session=S; session=junk`` (Go, Node and PHP read the first)
and ``{query.apikey}`` the first of ``?apikey=junk&apikey=K`` (PHP and Rack read the last): a fresh
counter per request while the upstream saw the real key. Now identical copies are one value and
differing copies are refused (``ambiguous_value``) before the policy keys, checks or routes on
either; a message policy's template reading such a value, which no handshake policy read, gets it as
missing (its default), never a fresh key.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.handshake.request_view import AmbiguousValue
from asgi_ws_gateway.messages.context import ConnectionContext
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.state.memory import MemoryState
from support.clients import connect
from support.configs import api_entry
from support.policies import build, context, denied
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

LIMITED = {"rate-limit-by-key": {"key": "{header.x-tenant}", "limit": 2, "window": 60}}


@pytest.mark.parametrize(
    ("entry", "parts"),
    [
        (LIMITED, {"headers": [("X-Tenant", "acme"), ("X-Tenant", "junk")]}),
        (
            {"rate-limit-by-key": {"key": "{cookie.session}", "limit": 2, "window": 60}},
            {"headers": [("Cookie", "session=S; session=junk")]},
        ),
        (
            {"limit-concurrency": {"key": "{cookie.session}", "max": 1}},
            {"headers": [("Cookie", "session=S"), ("Cookie", "session=junk")]},
        ),
        ({"quota-by-key": {"key": "{query.apikey}", "limit": 2, "period": "month"}}, {"query": "apikey=junk&apikey=K"}),
        ({"set-header": {"header": "X-Room", "value": "{query.room}"}}, {"query": "room=a&room=b"}),
    ],
    ids=["header", "cookie-one-header", "cookie-two-headers", "query-quota", "set-header-template"],
)
async def test_a_value_sent_twice_differently_is_refused_before_the_policy_uses_it(
    entry: dict[str, Any], parts: dict[str, Any]
) -> None:
    denial = await denied(build(entry).apply(context(**parts)))
    assert (denial.status, denial.reason) == (400, "ambiguous_value")


async def test_identical_copies_are_one_value_and_count_against_the_same_limit() -> None:
    """``acme`` twice is ``acme`` (it was ``acme, acme``: a fresh counter)."""
    policy = build(LIMITED, store=MemoryState())
    await policy.apply(context(headers=[("X-Tenant", "acme")]))
    await policy.apply(context(headers=[("X-Tenant", "acme"), ("X-Tenant", "acme")]))
    denial = await denied(policy.apply(context(headers=[("X-Tenant", "acme")] * 3)))
    assert denial.status == 429


async def test_the_cookie_header_itself_stays_the_whole_jar() -> None:
    """``{header.cookie}`` is the jar (its copies joined with "; "), not one value."""
    ctx = context(headers=[("Cookie", "a=1"), ("Cookie", "b=2")])
    assert ctx.lookup("header", ("cookie",)) == "a=1; b=2"


def test_a_message_template_reads_an_ambiguous_value_as_missing() -> None:
    """After accept there is no refusing: a message policy keyed by it falls to its default."""
    handshake = context(headers=[("X-Tenant", "acme"), ("X-Tenant", "junk")], query="room=a&room=a")
    with pytest.raises(AmbiguousValue):
        handshake.lookup("header", ("x-tenant",))
    connection = ConnectionContext(handshake, RelayStats(), cast(Any, None))  # lookups use no control
    assert connection.lookup("header", ("x-tenant",)) is None
    assert connection.lookup("query", ("room",)) == "a"


async def test_end_to_end_repeating_the_header_no_longer_resets_the_limit(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    api = api_entry(upstream, policies=[LIMITED])
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    url = server.url("/ws/echo")
    for _ in range(2):
        async with await connect(url, additional_headers=[("X-Tenant", "acme")]) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    seen = len(upstream.handshakes)
    for headers, status in (
        ([("X-Tenant", "acme")], 429),
        ([("X-Tenant", "acme"), ("X-Tenant", "acme")], 429),  # was admitted: "acme, acme" was a new counter
        ([("X-Tenant", "acme"), ("X-Tenant", "junk")], 400),  # was admitted: "acme, junk" likewise
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=headers)
        assert refused.value.response.status_code == status
    assert len(upstream.handshakes) == seen  # no refused handshake reached the upstream
