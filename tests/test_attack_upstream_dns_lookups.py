"""Names whose DNS hangs hold nothing but their own handshakes.

The lookups ran on the event loop's executor (under uvloop libuv's pool: 2 threads for slow work):
while a few names' lookups hung, another name was not looked up at all and its handshakes timed out,
blaming a healthy backend. They run on threads of the gateway's own now, each caller within a deadline
(half its ``connect_timeout``), a name that hangs answered at once, and named in a WARNING.

End to end: real uvicorn and a real upstream, ``socket.getaddrinfo`` replaced by a fake DNS (some names
hang until the test ends; the gateway runs on asyncio's loop, whose executor calls
``socket.getaddrinfo``, where uvloop's libuv would call the C function). The rest is pure logic: a
resolver given a fake lookup function.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import GatewayOverloaded, NameLookupTimeout
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream import lookups
from asgi_ws_gateway.upstream.resolver import Resolver
from support.clients import connect, expect_status
from support.clock import Clock
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

_REAL_GETADDRINFO = socket.getaddrinfo


class _FakeDns:
    """``socket.getaddrinfo`` with names of its own: some answer ``127.0.0.1``, some hang until released."""

    def __init__(self, answering: set[str], hanging: set[str]) -> None:
        self.answering, self.hanging = answering, hanging
        self.asked: Counter[str] = Counter()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answering and name not in self.hanging:
            return _REAL_GETADDRINFO(host, port, *args, **kwargs)
        with self._lock:
            self.asked[name] += 1
        if name in self.hanging:
            self.release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]


@pytest.fixture
def names() -> Iterator[Callable[[set[str], set[str]], _FakeDns]]:
    """Install a fake DNS for the test; its hanging lookups end with the test."""
    installed: list[_FakeDns] = []

    def install(answering: set[str], hanging: set[str]) -> _FakeDns:
        fake = _FakeDns(answering, hanging)
        installed.append(fake)
        socket.getaddrinfo = fake
        return fake

    yield install
    socket.getaddrinfo = _REAL_GETADDRINFO
    for fake in installed:
        fake.release.set()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)


def _gateway(uvicorn_server: UvicornFactory, apis: list[dict[str, Any]], mode: str) -> Any:
    for api in apis:
        api["passthrough"] = mode == "splice"
    app = WebSocketGateway(not_found, config={"apis": apis})
    return uvicorn_server(app, ws=PASSTHROUGH if mode == "splice" else "websockets-sansio", loop="asyncio")


@pytest.mark.parametrize("mode", ["splice", "relay"])
async def test_names_whose_dns_hangs_do_not_hold_the_lookup_of_another_name(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, names: Callable[..., _FakeDns], mode: str
) -> None:
    zone = f"{uuid.uuid4().hex[:8]}.dns-test"
    slow = [f"slow{i}.{zone}" for i in range(8)]
    fast = f"fast.{zone}"
    fake = names({fast}, set(slow))
    apis = [
        api_entry(f"ws://{name}:{upstream.port}/echo", name=f"slow{i}", path=f"/ws/slow{i}", connect_timeout=2)
        for i, name in enumerate(slow)
    ]
    apis.append(api_entry(f"ws://{fast}:{upstream.port}/echo", name="fast", path="/ws/fast", connect_timeout=2))
    server = _gateway(uvicorn_server, apis, mode)

    waiting = [asyncio.create_task(expect_status(server.url(f"/ws/slow{i}"))) for i in range(len(slow))]
    await _until(lambda: len(fake.asked) >= len(slow))
    async with await connect(server.url("/ws/fast")) as ws:  # while every slow name's lookup hangs
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert fake.asked[fast] == 1
    assert [status for status, _, _ in await asyncio.gather(*waiting)] == [504] * len(slow)


async def test_a_lookup_that_hangs_is_a_dns_504_answered_at_once_after_and_named_in_a_warning(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    names: Callable[..., _FakeDns],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    slow = f"slow.{uuid.uuid4().hex[:8]}.dns-test"
    fake = names(set(), {slow})
    server = _gateway(uvicorn_server, [api_entry(f"ws://{slow}:{upstream.port}/echo", connect_timeout=2)], "relay")
    statuses = [(await expect_status(server.url("/ws/echo")))[0] for _ in range(3)]
    assert statuses == [504, 504, 504]
    assert fake.asked[slow] == 1  # the name hangs: answered without another lookup
    messages = [record.getMessage() for record in caplog.records]
    hangs = [m for m in messages if m.startswith(f"DNS lookup of {slow} has not answered")]
    assert len(hangs) == 1  # one line, not one per handshake
    denied = [m for m in messages if "handshake denied with 504" in m]  # one now and then, for a flood
    assert denied
    assert all("(upstream_dns_timeout)" in m and f"host name {slow} did not resolve" in m for m in denied)


# -- the resolver with a fake lookup function (pure logic) ------------------------------------------


class _Lookup:
    """A lookup function: ``hang`` names block until ``release`` is set, the others answer ``10.0.0.1``."""

    def __init__(self, hang: set[str] | None = None) -> None:
        self.hang = hang if hang is not None else set()
        self.asked: Counter[str] = Counter()
        self.release = threading.Event()
        self.answer = ["10.0.0.1"]
        self.failure: OSError | None = None

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked[host] += 1
        if host in self.hang:
            self.release.wait(30)
            if self.failure is not None:
                raise self.failure
        return list(self.answer)


@pytest.fixture
def lookup() -> Iterator[_Lookup]:
    fake = _Lookup()
    yield fake
    fake.release.set()


async def test_a_name_that_hangs_is_answered_at_once_and_its_late_answer_kept(lookup: _Lookup) -> None:
    lookup.hang = {"slow.internal"}
    resolver = Resolver(lookup=lookup)
    with pytest.raises(NameLookupTimeout) as info:
        await resolver.addresses("slow.internal", 80, wait=0.5)
    assert info.value.status == 504 and info.value.reason == "upstream_dns_timeout"
    for _ in range(5):  # no wait, no lookup: the one that hangs still holds its thread
        with pytest.raises(NameLookupTimeout):
            await resolver.addresses("slow.internal", 80, wait=30)
    assert lookup.asked["slow.internal"] == 1
    assert resolver.names.hanging() == ["slow.internal"]
    assert await resolver.addresses("fast.internal", 80, wait=30) == ["10.0.0.1"]
    lookup.release.set()
    await _until(lambda: not resolver.names.hanging())
    assert await resolver.addresses("slow.internal", 80) == ["10.0.0.1"]  # the late answer, kept
    assert lookup.asked["slow.internal"] == 1


async def test_a_failure_of_the_resolver_is_kept_briefly() -> None:
    clock = Clock()
    asked: Counter[str] = Counter()

    def failing(host: str, port: int) -> list[str]:
        asked[host] += 1
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    resolver = Resolver(lookup=failing, clock=clock)
    for _ in range(3):
        with pytest.raises(socket.gaierror):
            await resolver.addresses("flaky.internal", 80)
    assert asked["flaky.internal"] == 1
    clock.now += resolver.names.negative_ttl
    with pytest.raises(socket.gaierror):
        await resolver.addresses("flaky.internal", 80)
    assert asked["flaky.internal"] == 2


async def test_the_names_remembered_as_failed_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names come from templates (an issuer's claims can vary them): each failing name was kept until asked again."""
    monkeypatch.setattr(lookups, "MAX_FAILED", 64, raising=False)  # raising: the former code had none
    clock = Clock()

    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    resolver = Resolver(lookup=failing, clock=clock)
    for i in range(1000):
        with pytest.raises(socket.gaierror):
            await resolver.addresses(f"n{i}.flaky.internal", 80)
        if i % 100 == 0:
            clock.now += resolver.names.negative_ttl / 4  # some expire, most do not
    remembered = resolver.names._failed
    assert len(remembered) <= 64
    assert "n999.flaky.internal" in remembered  # the newest kept: the bound drops the oldest first


async def test_names_that_hang_hold_one_thread_each_and_the_last_free_one_is_not_queued_for(lookup: _Lookup) -> None:
    lookup.hang = {f"slow{i}.internal" for i in range(4)}
    resolver = Resolver(lookup=lookup, threads=4)
    for name in sorted(lookup.hang)[:3]:
        with pytest.raises(NameLookupTimeout):
            await resolver.addresses(name, 80, wait=0.5)
        resolver.forget(name, 80)  # a connect failed: still no second lookup of a name that hangs
        with pytest.raises(NameLookupTimeout):
            await resolver.addresses(name, 80)
    assert all(count == 1 for count in lookup.asked.values())
    assert await resolver.addresses("fast.internal", 80) == ["10.0.0.1"]  # the fourth thread
    with pytest.raises(NameLookupTimeout):
        await resolver.addresses("slow3.internal", 80, wait=0.5)
    with pytest.raises(GatewayOverloaded) as info:  # every thread held by a name that hangs: 503 at once
        await resolver.addresses("other.internal", 80)
    assert info.value.status == 503 and info.value.reason == "gateway_dns_busy"
    assert "other.internal" not in lookup.asked


async def test_a_name_looked_up_again_after_forget_holds_at_most_its_share_of_threads(lookup: _Lookup) -> None:
    lookup.hang = {"moving.internal"}
    resolver = Resolver(lookup=lookup)
    waiting = []
    for _ in range(5):
        waiting.append(asyncio.create_task(resolver.addresses("moving.internal", 80, wait=30)))
        await asyncio.sleep(0)
        resolver.forget("moving.internal", 80)
    assert resolver.lookups == resolver.names.per_name
    lookup.release.set()
    assert await asyncio.gather(*waiting) == [["10.0.0.1"]] * 5


async def test_stale_addresses_are_used_while_the_name_is_looked_up_again_within_a_bound(lookup: _Lookup) -> None:
    clock = Clock()
    resolver = Resolver(ttl=5, clock=clock, lookup=lookup)
    assert await resolver.addresses("svc.internal", 80) == ["10.0.0.1"]
    lookup.hang.add("svc.internal")  # its DNS hangs from now on
    clock.now += 6  # past the TTL, within the TTL again: the old addresses, no wait
    for _ in range(3):
        assert await resolver.addresses("svc.internal", 80, wait=30) == ["10.0.0.1"]
    assert resolver.lookups == 2  # one lookup again, in the background
    clock.now += 5  # older than twice the TTL: no longer used
    with pytest.raises(NameLookupTimeout):
        await resolver.addresses("svc.internal", 80, wait=0.05)
