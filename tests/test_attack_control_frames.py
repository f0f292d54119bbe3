"""End to end: a peer's ping and pong floods, and what of them reaches the other side, per connector.

Pings and pongs are not messages: no message policy counts them. On the splice and the frame relay
they went end to end, every one: a client's 2,000 pings in one burst were 2,000 pings the upstream
had to answer, and 2,000 unsolicited pongs reached it too (the relay answers a client's pings itself
and forwards none). Now each way ``PINGS_IN_FLIGHT`` (16) pings at most await their pongs, the later
ones held (the latest kept, RFC 6455 §5.5.3), and a pong goes on only when it answers one
(``passthrough/ping_window.py``).
Raw sockets play the attacker and a raw upstream records what reaches it; the gateway is real uvicorn
with the gateway's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.passthrough.ping_window import PINGS_IN_FLIGHT, answered
from asgi_ws_gateway.relay.stats import RelayStats
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame, raw_client_of
from support.servers import UvicornFactory

PINGS = 2000


class Recorder:
    """A raw upstream recording the frames it reads. It answers no ping until it reads the text message
    ``end`` (then the ones it read, and each one as it comes): the pings of a burst arrive before any
    answer can release one. ``ping_first``: it pings the client once, right after its 101."""

    def __init__(self, *, ping_first: bytes | None = None) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.ping_first = ping_first
        self.closed = asyncio.Event()

    def of(self, opcode: int) -> list[bytes]:
        return [payload for code, payload in self.frames if code == opcode]

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = b"" if self.ping_first is None else ws_frame(0x9, self.ping_first, mask=False)
        await accept_upstream(reader, writer, then=first)
        answering = False
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                opcode, payload = await next_frame(reader)
                self.frames.append((opcode, payload))
                if opcode == 0x1 and payload == b"end":
                    answering = True
                    writer.write(b"".join(ws_frame(0xA, ping, mask=False) for ping in self.of(0x9)))
                elif opcode == 0x9 and answering:
                    writer.write(ws_frame(0xA, payload, mask=False))
                elif opcode == 0x8:
                    writer.write(ws_frame(0x8, payload[:2], mask=False))
                    await writer.drain()
                    break
        self.closed.set()
        writer.close()


def _gateway(port: int, connector: str, uvicorn_server: UvicornFactory, provider: MeterProvider) -> str:
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", **CONNECTORS[connector])
    return uvicorn_server(ProbedGateway({"apis": [entry]}, meter_provider=provider), ws=PASSTHROUGH).url("/h")


def _drops(metric_reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    """The ``control-frames`` drops counted by ``ws_gateway.policy.actions``: (direction, reason) -> count."""
    data = metric_reader.get_metrics_data()
    found: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "ws_gateway.policy.actions":
                    continue
                for point in metric.data.data_points:
                    attributes: Any = point.attributes
                    if attributes["ws_gateway.policy.name"] == "control-frames":
                        key = (attributes["ws_gateway.message.direction"], attributes["ws_gateway.policy.reason"])
                        found[key] = int(point.value)  # type: ignore[union-attr]  # a counter's point
    return found


async def _pongs_until(reader: asyncio.StreamReader, last: bytes) -> list[bytes]:
    """The pongs the client reads up to the one carrying ``last``."""
    pongs: list[bytes] = []
    while not pongs or pongs[-1] != last:
        opcode, payload = await next_frame(reader)
        if opcode == 0xA:
            pongs.append(payload)
    return pongs


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, recorder: Recorder) -> None:
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    await writer.drain()
    assert (await asyncio.wait_for(close_frame_in(reader), 10))[0] == 1000
    writer.close()
    await asyncio.wait_for(recorder.closed.wait(), 10)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_ping_flood_reaches_the_upstream_a_window_of_pings_at_a_time(
    hostile: Any, uvicorn_server: UvicornFactory, reader: tuple[MeterProvider, InMemoryMetricReader], connector: str
) -> None:
    """2,000 pings, then a message: the upstream read 2,000 pings (and owed 2,000 pongs) on the splice
    and the frame relay. Now it reads the first 16, the message, and once it answered them, the latest:
    the client's last ping is answered, as on the relay (where the gateway answers them itself: the first 16
    of a read and its latest, :mod:`asgi_ws_gateway.held_pings`, so how many depends on how the reads fell)."""
    recorder = Recorder()
    url = _gateway(await hostile(recorder), connector, uvicorn_server, reader[0])
    client, writer = await raw_client_of(url)
    writer.write(b"".join(ws_frame(0x9, b"%d" % i) for i in range(PINGS)) + ws_frame(0x1, b"end"))
    await writer.drain()
    pongs = await asyncio.wait_for(_pongs_until(client, b"%d" % (PINGS - 1)), 10)
    await _close(client, writer, recorder)
    if connector == "relay":
        assert recorder.of(0x9) == []  # the gateway answered them itself
        assert pongs[-1] == b"%d" % (PINGS - 1) and len(pongs) <= PINGS
        assert pongs == sorted(set(pongs), key=int)  # in order, none twice
        return
    window = [b"%d" % i for i in range(PINGS_IN_FLIGHT)]
    assert recorder.of(0x9) == [*window, b"%d" % (PINGS - 1)]
    assert pongs == [*window, b"%d" % (PINGS - 1)]
    assert recorder.frames.index((0x1, b"end")) == PINGS_IN_FLIGHT  # behind the window, before the latest
    assert _drops(reader[1]) == {("client_to_upstream", "ping_superseded"): PINGS - PINGS_IN_FLIGHT - 1}


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_only_a_pong_that_answers_a_ping_reaches_the_upstream(
    hostile: Any, uvicorn_server: UvicornFactory, reader: tuple[MeterProvider, InMemoryMetricReader], connector: str
) -> None:
    """2,000 unsolicited pongs reached the upstream on the splice and the frame relay (the relay forwards
    none). Now only the one answering the upstream's own ping does, on every connector, even behind
    unsolicited ones (a pong answers a ping by its payload)."""
    recorder = Recorder(ping_first=b"up")
    url = _gateway(await hostile(recorder), connector, uvicorn_server, reader[0])
    client, writer = await raw_client_of(url)
    if connector != "relay":  # (the relay's upstream leg answers it itself)
        assert await asyncio.wait_for(next_frame(client), 10) == (0x9, b"up")
    burst = [ws_frame(0xA, b"unasked %d" % i) for i in range(PINGS)]
    burst.insert(PINGS // 2, ws_frame(0xA, b"up"))
    writer.write(b"".join(burst) + ws_frame(0x1, b"end"))
    await writer.drain()
    await _close(client, writer, recorder)
    assert recorder.of(0xA) == [b"up"]  # (on the relay the gateway's own answer)
    if connector != "relay":
        assert _drops(reader[1]) == {("client_to_upstream", "unsolicited_pong"): PINGS}


@pytest.mark.parametrize("connector", ["splice", "frame relay"])
async def test_an_upstreams_ping_flood_reaches_the_client_a_window_of_pings_at_a_time(
    hostile: Any, uvicorn_server: UvicornFactory, reader: tuple[MeterProvider, InMemoryMetricReader], connector: str
) -> None:
    """The other way: an upstream's burst of pings reaches the client as its first 16, then (once the client
    answered them) its latest."""
    burst = b"".join(ws_frame(0x9, b"%d" % i, mask=False) for i in range(PINGS))

    async def upstream(up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        await accept_upstream(up_reader, up_writer, then=burst + ws_frame(0x1, b"end", mask=False))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (await next_frame(up_reader))[0] != 0x8:
                pass
            up_writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            await up_writer.drain()
        up_writer.close()

    url = _gateway(await hostile(upstream), connector, uvicorn_server, reader[0])
    client, writer = await raw_client_of(url)
    seen: list[tuple[int, bytes]] = []
    while not seen or seen[-1] != (0x1, b"end"):
        seen.append(await asyncio.wait_for(next_frame(client), 10))
    writer.write(b"".join(ws_frame(0xA, payload) for opcode, payload in seen if opcode == 0x9))
    seen.append(await asyncio.wait_for(next_frame(client), 10))
    window = [(0x9, b"%d" % i) for i in range(PINGS_IN_FLIGHT)]
    assert seen == [*window, (0x1, b"end"), (0x9, b"%d" % (PINGS - 1))]
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    assert (await asyncio.wait_for(close_frame_in(client), 10))[0] == 1000
    writer.close()
    assert _drops(reader[1]) == {("upstream_to_client", "ping_superseded"): PINGS - PINGS_IN_FLIGHT - 1}


def test_a_ping_and_its_pong_pair_up_split_byte_by_byte() -> None:
    """The scanner holds a split ping or pong back whole: a ping cut into single bytes is still in flight
    (its payload known), its pong cut so still answers it, and the same pong again answers nothing."""
    stats = RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12)
    client = FrameScanner(stats, inbound=True, max_message_size=1000)
    upstream = FrameScanner(stats, inbound=False, max_message_size=1000)
    client.answers, upstream.answers = upstream, client
    ping = ws_frame(0x9, b"abc")
    assert b"".join(client.feed(ping[i : i + 1]) for i in range(len(ping))) == ping
    in_flight = [client.pings_in_flight]
    pong = ws_frame(0xA, b"abc", mask=False)
    assert b"".join(upstream.feed(pong[i : i + 1]) for i in range(len(pong))) == pong
    in_flight.append(client.pings_in_flight)
    assert in_flight == [(b"abc",), ()]
    assert upstream.feed(pong) == b""
    assert stats.policy_actions == {("control-frames", "drop", "outbound", "unsolicited_pong"): 1}


def test_a_pong_answers_its_ping_and_every_one_before_it() -> None:
    """As ``websockets`` reads a pong: the peer may answer only the latest of the pings it read."""
    assert answered((b"1", b"2", b"3"), b"2") == (b"3",)
    assert answered((b"1", b"2", b"3"), b"3") == ()
    assert answered((b"1", b"2"), b"9") is None
