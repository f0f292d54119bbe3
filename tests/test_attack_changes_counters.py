"""A policy added in front of a limit leaves the limit's default counter (and its counts) where it was.

Found by an attack pass on configuration changes: a limit without ``counter:`` counted on a counter
named by its place in its list (``api:chat.1``). An operator who tightened access with an
``ip-filter`` placed first moved every limit after it to a fresh counter: the connections open
under ``limit-concurrency: {max: 2}`` stopped counting (4 were open from one client), and a
``quota-by-key`` of 5 a month admitted 9 after a second insert. A default counter is now named by
the policy's type and its ordinal among that type in its list: only a policy of the same type
added or removed before it moves it. Real uvicorn, a real upstream, each store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asgi_ws_gateway.policies.build import GatewayPolicies
from asgi_ws_gateway.policies.build import load_policies as build_policies
from asgi_ws_gateway.state.memory import MemoryState
from support.clients import connect, expect_status
from support.configs import build_config
from support.gateway import ProbedGateway
from support.redis import STORES, unique_prefix
from support.servers import UvicornServer
from support.upstream import UpstreamServer

TENANT = {"X-Tenant": "acme"}
TIGHTEN = {"ip-filter": {"allow": ["127.0.0.0/8"]}}
"""Only loopback clients: every test client still passes."""
DENY_ONE = {"ip-filter": {"deny": ["10.0.0.1"]}}
CAP = {"limit-concurrency": {"key": "{header.x-tenant}", "max": 2, "lease_ttl": 30}}
QUOTA = {"quota-by-key": {"key": "{header.x-tenant}", "limit": 3, "period": "month"}}


def _config(upstream: UpstreamServer, store: dict[str, Any], *policies: dict[str, Any]) -> dict[str, Any]:
    return build_config(upstream, api={"policies": list(policies)}, store=store)


@contextlib.contextmanager
def _served(config: dict[str, Any]) -> Iterator[tuple[ProbedGateway, str]]:
    gateway = ProbedGateway(config)
    with UvicornServer(gateway) as server:
        yield gateway, server.url("/ws/echo")


@contextlib.asynccontextmanager
async def _held(url: str, count: int) -> AsyncIterator[None]:
    """``count`` connections of the tenant, each answering, open for the block."""
    async with contextlib.AsyncExitStack() as stack:
        for i in range(count):
            ws = await stack.enter_async_context(await connect(url, additional_headers=TENANT))
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
        yield


@pytest.mark.parametrize("store", STORES)
async def test_a_filter_added_before_a_concurrency_cap_leaves_its_open_connections_counting(
    upstream: UpstreamServer, store: dict[str, Any]
) -> None:
    """Before: after the insert the cap of 2 admitted 2 more while 2 were open."""
    store = {**store, "prefix": unique_prefix()}
    with _served(_config(upstream, store, CAP)) as (gateway, url):
        async with _held(url, 2):
            assert (await expect_status(url, additional_headers=TENANT))[0] == 429
            tightened = _config(upstream, store, TIGHTEN, CAP)
            assert await gateway.on_server(lambda: gateway.gateway.apply_config(tightened)) == ["echo"]
            assert (await expect_status(url, additional_headers=TENANT))[0] == 429
        await gateway.settle()


@pytest.mark.parametrize("store", STORES)
async def test_filters_added_before_a_quota_leave_its_count(upstream: UpstreamServer, store: dict[str, Any]) -> None:
    """Before: each insert gave the tenant a fresh quota of 3 for the month (9 admitted after two)."""
    store = {**store, "prefix": unique_prefix()}
    with _served(_config(upstream, store, QUOTA)) as (gateway, url):
        async with _held(url, 2):
            pass
        tightened = _config(upstream, store, TIGHTEN, QUOTA)
        await gateway.on_server(lambda: gateway.gateway.apply_config(tightened))
        async with _held(url, 1):
            pass
        status, _, body = await expect_status(url, additional_headers=TENANT)
        assert status == 429 and b"quota of 3 handshakes per month exceeded" in body
        tighter = _config(upstream, store, TIGHTEN, DENY_ONE, QUOTA)
        await gateway.on_server(lambda: gateway.gateway.apply_config(tighter))
        assert (await expect_status(url, additional_headers=TENANT))[0] == 429
        await gateway.settle()


def _counters(policies: GatewayPolicies) -> dict[str, str]:
    """Each counting policy's counter, and the policy's class."""
    return {policy.counter: type(policy).__name__ for policy in policies._builder.built if hasattr(policy, "counter")}


def _document(extra: list[dict[str, Any]]) -> dict[str, Any]:
    """Limits in every scope that names counters, ``extra`` in front of each list of handshake policies
    and a ``limit-message-size`` in front of each message rate limit when ``extra`` is not empty."""
    rate = {"rate-limit-by-key": {"key": "{client.network}", "limit": 5, "window": 60}}
    slow = {"rate-limit-by-key": {"key": "{client.network}", "limit": 50, "window": 3600}}
    messages = {"rate-limit-messages": {"key": "{client.network}", "messages": 10, "window": 1}}
    size = [{"limit-message-size": {"max": 1024}}] if extra else []
    nested = {"choose": {"when": [{"if": {"ref": "header.x-plan", "equals": "free"}, "policies": [*extra, rate]}],
                         "otherwise": [*extra, CAP]}}  # fmt: skip
    message_policies = {"inbound": [*size, messages], "outbound": [*size, messages]}
    product = {"name": "gold", "apis": ["chat"], "policies": [*extra, QUOTA], "message_policies": message_policies}
    api = {"policies": [*extra, rate, nested, slow, CAP, QUOTA], "message_policies": message_policies}
    return build_config(name="chat", path="/chat", api=api, policies=[*extra, rate],
                        message_policies=message_policies, products=[product])  # fmt: skip


async def test_every_scope_s_default_counters_stay_when_other_types_are_added_before() -> None:
    """Global, product, API, ``choose`` branch and message (each direction) limits keep their counters,
    and no two of them share one."""
    before = build_policies(_document([]), store=lambda config: MemoryState())
    after = build_policies(_document([TIGHTEN, DENY_ONE, {"set-header": {"header": "X-A", "value": "1"}}]),
                           store=lambda config: MemoryState())  # fmt: skip
    try:
        counters = _counters(before)
        assert counters == _counters(after)
        assert len(counters) == 14  # each on its own: 1 global, 1 product and 6 API handshake limits, 6 message
        assert {name for name, kind in counters.items() if kind == "RateLimitMessages"} == {
            f"msg:{scope}.{direction}.rate-limit-messages.0"
            for scope in ("global", "product:gold", "api:chat")
            for direction in ("in", "out")
        }
        assert "api:chat.rate-limit-by-key.1" in counters  # the second of its type: apart from the first
    finally:
        await before.aclose()
        await after.aclose()


async def test_naming_the_first_limit_s_counter_leaves_the_second_on_its_own() -> None:
    """Following the advice (``counter:`` on one limit) must not put the next limit of its type on the
    first's old counter, and its counts."""
    rate = {"key": "{client.network}", "limit": 5, "window": 60}
    documents = [
        build_config(api={"policies": [{"rate-limit-by-key": rate}, {"rate-limit-by-key": rate}]}),
        build_config(
            api={"policies": [{"rate-limit-by-key": {**rate, "counter": "named"}}, {"rate-limit-by-key": rate}]}
        ),
    ]
    built = [build_policies(document, store=lambda config: MemoryState()) for document in documents]
    try:
        assert [list(_counters(policies)) for policies in built] == [
            ["api:echo.rate-limit-by-key.0", "api:echo.rate-limit-by-key.1"],
            ["named", "api:echo.rate-limit-by-key.1"],
        ]
    finally:
        for policies in built:
            await policies.aclose()
