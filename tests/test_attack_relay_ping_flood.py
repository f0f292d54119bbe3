"""Upstreams flooding pings on the relay get a pong a read, not one a ping, and another API stays served.

An attack pass (``asgi-ws-gateway run``, one worker, two APIs) had 30 raw upstreams behind a
``passthrough: false`` API each send 20,000 pings right after the 101: the relay's upstream leg parsed
32 KiB of them a loop turn (~16,000 frames) and answered each, and another API's handshake and echo took
3.3-6.5 s instead of 0.01 s. Each parser call now takes ``FRAMES_PER_TURN`` frames at most, and past a
read's ``ANSWERED_PER_READ`` pings answers only its latest (``turn_frames``, ``held_pings``). What is
asserted is counted, not timed: the pongs each flooding upstream got, the latest ping's among them, and the
other API's echo done while the flood is parsed (within a hang guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

from websockets.asyncio.client import connect

from support.configs import api_entry, build_config, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame, raw_client_of
from support.upstream import UpstreamServer

FLOODERS = 30
PINGS = 20_000
FLOOD = b"".join(ws_frame(0x9, b"%d" % i, mask=False) for i in range(PINGS)) + ws_frame(0x1, b"done", mask=False)
"""Pings, then a message: once the client has it, the gateway parsed (and answered) every ping before it."""


async def test_upstreams_flooding_pings_on_the_relay_get_a_pong_a_read_and_another_api_is_served(
    tmp_path: Path,
) -> None:
    pongs: list[list[bytes]] = []

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered: list[bytes] = []
        pongs.append(answered)
        await accept_upstream(reader, writer, then=FLOOD)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while (frame := await next_frame(reader))[0] != 0x8:  # the gateway's pongs, then its close
                if frame[0] == 0xA:
                    answered.append(frame[1])
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    listener = await asyncio.start_server(flooding, "127.0.0.1", 0)
    hostile = f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"
    with UpstreamServer() as good:
        flood_api = api_entry(hostile, name="flood", path="/ws/flood", passthrough=False)
        config = write_config(tmp_path, build_config(good, api={"passthrough": False}, more_apis=[flood_api]))
        log = tmp_path / "gateway.log"
        async with listener, GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as gateway:
            clients = await asyncio.gather(*(raw_client_of(gateway.url("/ws/flood")) for _ in range(FLOODERS)))
            async with asyncio.timeout(60):  # a hang guard, not a measure
                async with connect(gateway.url("/ws/echo"), compression=None) as client:
                    await client.send("hello")
                    assert await client.recv() == "hello"
                for reader, _ in clients:
                    while await next_frame(reader) != (0x1, b"done"):
                        pass
                for reader, writer in clients:
                    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
                    assert (await close_frame_in(reader))[0] == 1000
                    writer.close()
    assert len(pongs) == FLOODERS
    for answered in pongs:
        assert answered[-1] == b"%d" % (PINGS - 1)  # the latest ping is answered (RFC 6455 §5.5.3)
        assert len(answered) <= PINGS // 4, f"{len(answered):,} pongs for {PINGS:,} pings"
    assert "Traceback" not in log.read_text()
