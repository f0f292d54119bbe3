"""Upstream host names are resolved once every few seconds, not once per handshake.

The resolver against the system's (``localhost`` from ``/etc/hosts``); the connectors through real
uvicorn with an upstream named ``localhost``, the splice and the websockets client, counting the
lookups; and the order addresses are tried in (pure logic: a connect function that refuses some).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from asgi_ws_gateway import ConfigError, WebSocketGateway, load_config
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.resolver import RESOLVER, Resolver, host_and_port
from support.clients import connect, expect_status
from support.clock import Clock
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


async def test_a_name_is_looked_up_once_per_ttl_and_once_for_concurrent_handshakes() -> None:
    clock = Clock()
    resolver = Resolver(ttl=5, clock=clock)
    answers = await asyncio.gather(*(resolver.addresses("localhost", 80) for _ in range(20)))
    assert resolver.lookups == 1
    assert "127.0.0.1" in answers[0] and all(answer == answers[0] for answer in answers)
    clock.now += 4.9
    await resolver.addresses("localhost", 80)
    assert resolver.lookups == 1
    clock.now += 0.2
    await resolver.addresses("localhost", 80)
    assert resolver.lookups == 2
    resolver.forget("localhost", 80)
    await resolver.addresses("localhost", 80)
    assert resolver.lookups == 3


async def test_a_caller_that_read_the_cache_just_before_the_answer_came_does_not_look_the_name_up_again() -> None:
    """The lookup thread ran between a caller's read of the cache and its look for a running lookup."""

    class ReadJustBeforeTheAnswer(dict[tuple[str, int], tuple[float, list[str]]]):
        """The cache as the next caller sees it: empty at its first read, as if read before the answer came."""

        reads = 0

        def get(self, key: tuple[str, int], default: Any = None) -> Any:
            self.reads += 1
            return default if self.reads == 1 else super().get(key, default)

    resolver = Resolver(ttl=5, clock=Clock(), lookup=lambda host, port: ["10.0.0.7"])
    assert await resolver.addresses("svc", 80) == ["10.0.0.7"]
    resolver._known = ReadJustBeforeTheAnswer(resolver._known)
    assert await resolver.addresses("svc", 80) == ["10.0.0.7"]
    assert resolver.lookups == 1


async def test_addresses_are_not_looked_up_and_unknown_names_fail_as_connect_would() -> None:
    resolver = Resolver()
    assert await resolver.addresses("127.0.0.1", 80) == ["127.0.0.1"]
    assert await resolver.addresses("::1", 80) == ["::1"]
    assert resolver.lookups == 0
    with pytest.raises(socket.gaierror):
        await resolver.addresses("no-such-host.invalid", 80)
    with pytest.raises(socket.gaierror):  # a failure is not kept: asked again, looked up again
        await resolver.addresses("no-such-host.invalid", 80)
    assert resolver.lookups == 2


async def test_connects_take_the_addresses_in_turn_leave_a_failed_one_out_and_forget_a_name_none_answers() -> None:
    resolver = Resolver(ttl=float("inf"))
    resolver._known["svc", 80] = (0.0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])  # looked up, never stale
    refused: set[str] = set()
    tried: list[str] = []

    async def attempt(address: str) -> str:
        tried.append(address)
        if address in refused:
            raise ConnectionRefusedError(111, "refused")
        return address

    # Healthy: spread over every address, as a resolver rotating its answers spread them.
    assert sorted({await resolver.connect("svc", 80, attempt) for _ in range(6)}) == ["10.0.0.1", "10.0.0.2",
                                                                                       "10.0.0.3"]  # fmt: skip
    refused.add("10.0.0.2")
    tried.clear()
    connected = [await resolver.connect("svc", 80, attempt) for _ in range(6)]
    assert set(connected) == {"10.0.0.1", "10.0.0.3"}
    assert tried.count("10.0.0.2") <= 1  # refused once, then left out
    assert await resolver.addresses("svc", 80) == ["10.0.0.1", "10.0.0.3"]
    refused |= {"10.0.0.1", "10.0.0.3"}
    with pytest.raises(ConnectionRefusedError):
        await resolver.connect("svc", 80, attempt)
    assert ("svc", 80) not in resolver._known  # none connected: resolved again next time


async def test_each_caller_says_how_old_the_addresses_may_be() -> None:
    """An API's ``dns_ttl``: the same name, cached once, judged by each caller's own."""
    clock = Clock()
    resolver = Resolver(ttl=5, clock=clock)
    await resolver.addresses("localhost", 80)
    clock.now += 2
    await resolver.addresses("localhost", 80)  # the default: 5 s
    assert resolver.lookups == 1
    await resolver.addresses("localhost", 80, ttl=1)  # 2 s old: too old for this caller
    assert resolver.lookups == 2
    await resolver.addresses("localhost", 80, ttl=1)
    assert resolver.lookups == 2
    for _ in range(3):
        await resolver.addresses("localhost", 80, ttl=0)  # every time
    assert resolver.lookups == 5


@pytest.mark.parametrize("mode", ["splice", "websockets-client"])
@pytest.mark.parametrize(("dns_ttl", "lookups"), [(None, 1), (0, 5)], ids=["default", "dns_ttl-0"])
async def test_handshakes_to_a_named_upstream_resolve_it_once_per_ttl(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, mode: str, dns_ttl: float | None, lookups: int
) -> None:
    url = upstream.url("/echo").replace("127.0.0.1", "localhost")
    api = api_entry(url, passthrough=mode == "splice")
    if dns_ttl is not None:
        api["dns_ttl"] = dns_ttl
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    RESOLVER.forget("localhost", upstream.port)
    before = RESOLVER.lookups
    for i in range(5):
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
    assert RESOLVER.lookups - before == lookups
    assert [record.headers["host"] for record in upstream.handshakes[-5:]] == [[f"localhost:{upstream.port}"]] * 5


async def test_an_unresolvable_upstream_is_a_502(uvicorn_server: UvicornFactory) -> None:
    api = api_entry("ws://no-such-host.invalid:9000/x")
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    assert (await expect_status(server.url("/ws/echo")))[0] == 502


async def test_names_kept_are_bounded_however_many_a_template_makes() -> None:
    """An upstream URL built from client values (``set_base_url``) can name any host: the cache of names
    starts again at 1,024 instead of growing."""
    resolver = Resolver()
    for i in range(1024):
        resolver._known[f"tenant-{i}.internal", 80] = (float("inf"), [f"10.0.{i // 256}.{i % 256}"])
    await resolver.addresses("localhost", 80)
    assert list(resolver._known) == [("localhost", 80)]


@pytest.mark.parametrize("value", [-1, 3601, float("inf"), float("nan"), "soon", None])
def test_an_invalid_dns_ttl_is_refused_by_field_path(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [api_entry("ws://chat.internal:9000/x", dns_ttl=value)]})
    assert "apis[0].dns_ttl" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://chat.internal:9000/x", ("chat.internal", 9000)), ("wss://Chat.Internal/x?a=1", ("chat.internal", 443)),
        ("ws://chat.internal/x", ("chat.internal", 80)), ("ws://[::1]:8080/", ("::1", 8080)),
        ("ws://[::1]/", ("::1", 80)),
    ],
)  # fmt: skip
def test_host_and_port_is_what_the_url_says_every_time(url: str, expected: tuple[str, int]) -> None:
    """The answers are remembered by scheme and authority: the same as urllib's, the first time or not."""
    for _ in range(2):
        parts = urlsplit(url)
        assert host_and_port(parts) == expected == (parts.hostname, parts.port or (443 if url[2] == "s" else 80))


@pytest.mark.parametrize("url", ["ws://chat.internal:99999/x", "ws://chat.internal:9x/x"])
def test_a_bad_port_is_refused_every_time(url: str) -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            host_and_port(urlsplit(url))
