"""Attacks on what templates build from one client value written many times, through real uvicorn:
8 ``set-header`` policies writing an 8 KB header 680 times each sent 43.5 MB upstream per handshake
(4 at once: 174 MB, the worker 83 -> 498 MiB); a ``transform-message`` writing it into 16 fields
rendered 87 MB for each 7-byte message before dropping it as too big."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

LONG = "v" * 8000
"""The client's header: within a header line's 8 KiB."""
REPEATED = "{header.x-a}" * 680
"""8,160 characters of template, within set-header's limit of 8,192."""
MIB = 1024 * 1024


class _Recording:
    """A TCP upstream that counts the connections and bytes the gateway sends it, and answers nothing."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while chunk := await reader.read(MIB):
                self.received += len(chunk)
        except ConnectionError:
            pass
        writer.close()


@asynccontextmanager
async def _recording() -> AsyncIterator[tuple[_Recording, str]]:
    upstream = _Recording()
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    try:
        yield upstream, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()


@contextmanager
def _peak() -> Iterator[list[int]]:
    """The peak of the process's traced allocations in the block (the server's thread too), in bytes."""
    found = [0]
    tracemalloc.start()
    try:
        yield found
        found[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _api(upstream: str, **api: Any) -> dict[str, Any]:
    return {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream], "connect_timeout": 2, **api}]}


async def test_eight_set_headers_writing_a_client_header_680_times_are_refused_unsent(
    uvicorn_server: UvicornFactory,
) -> None:
    """431 before any backend is contacted: the upstream gets no connection, and no text past the
    bounds is built."""
    policies = [{"set-header": {"header": f"X-Amp-{i}", "value": REPEATED}} for i in range(8)]
    async with _recording() as (upstream, url):
        gateway = uvicorn_server(WebSocketGateway(not_found, config=_api(url, policies=policies)))
        with _peak() as peak:
            outcomes = await asyncio.gather(
                *[expect_status(gateway.url("/ws/echo"), additional_headers={"X-A": LONG}) for _ in range(4)]
            )
        assert [status for status, _, _ in outcomes] == [431] * 4
        assert "X-Amp-0" in json.loads(outcomes[0][2])["detail"]
        assert (upstream.connections, upstream.received) == (0, 0)
    assert peak[0] < 16 * MIB, f"{peak[0]} bytes allocated for 4 handshakes"


async def test_set_headers_each_within_bounds_but_together_past_the_head_s_are_refused_unsent(
    uvicorn_server: UvicornFactory,
) -> None:
    """Eight headers of 8 KB: each one a header value may be, 72 KB together (64 KiB sent at most)."""
    policies = [{"set-header": {"header": f"X-Amp-{i}", "value": "{header.x-a}"}} for i in range(8)]
    async with _recording() as (upstream, url):
        gateway = uvicorn_server(WebSocketGateway(not_found, config=_api(url, policies=policies)))
        status, _, body = await expect_status(gateway.url("/ws/echo"), additional_headers={"X-A": LONG})
        assert status == 431 and "upstream request head" in json.loads(body)["detail"]
        assert upstream.connections == 0


async def test_a_set_header_within_its_bound_still_reaches_the_upstream(uvicorn_server: UvicornFactory) -> None:
    with UpstreamServer() as upstream:
        policies = [{"set-header": {"header": "X-Amp", "value": "{header.x-a}" * 2}}]
        gateway = uvicorn_server(WebSocketGateway(not_found, config=_api(upstream.url("/echo"), policies=policies)))
        async with await connect(gateway.url("/ws/echo"), additional_headers={"X-A": "v" * 3000}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert upstream.handshakes[-1].header("x-amp") == "v" * 6000


async def test_transform_message_writing_a_client_header_680_times_is_too_big_unbuilt(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Each message is answered ``message_too_big`` (as any message rewritten too big is), and the
    87 MB is never rendered; a client with a short header gets its fields set."""
    transform = {"transform-message": {"set": {f"f{i}": REPEATED for i in range(16)}}}
    config = _api(upstream_server.url("/echo"), message_policies={"inbound": [transform]})
    url = uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")
    async with await connect(url, additional_headers={"X-A": LONG}) as ws:
        with _peak() as peak:
            for _ in range(3):
                await ws.send('{"m":1}')
                reply = json.loads(await ws.recv())
                assert (reply["error"], reply["policy"]) == ("message_too_big", "transform-message")
    assert peak[0] < 16 * MIB, f"{peak[0]} bytes allocated for 3 messages"
    async with await connect(url, additional_headers={"X-A": "v"}) as ws:
        await ws.send('{"m":1}')
        echoed = json.loads(await ws.recv())
        assert echoed["m"] == 1 and echoed["f0"] == "v" * 680
