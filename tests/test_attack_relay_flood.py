"""A client flooding large messages on the relay does not grow the worker.

The gateway's WebSocket protocol parses a large read a share a loop turn (``loop_watch.ReadShares``)
and keeps reading paused meanwhile; uvicorn's ``receive()`` resumed reading whenever the
application's queue emptied, whatever the shares still held, so every message the relay took let one
more read (up to 256 KiB) in while 32 KiB a turn were parsed out. An attack pass flooded 64 KiB
messages at ``asgi-ws-gateway run`` with ``passthrough: false`` towards an upstream that reads all:
the worker grew by 1.1 GB in 8 s, 3 GB in 16 s (the splice and the frame relay stayed flat).
"""

from __future__ import annotations

import os
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from support.configs import build_config, write_config
from support.processes import GatewayProcess, rss_kib

MESSAGE = os.urandom(65536)  # incompressible, as the attack's
SENT = 384 * 1024 * 1024


async def test_a_client_flooding_large_messages_on_the_relay_does_not_grow_the_worker(tmp_path: Path) -> None:
    received = 0

    async def sink(connection: ServerConnection) -> None:  # reads all, as a healthy upstream does
        nonlocal received
        async for message in connection:
            received += len(message)

    async with serve(sink, "127.0.0.1", 0, compression=None, max_size=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        config = write_config(tmp_path, build_config(f"ws://127.0.0.1:{port}/", api={"passthrough": False}))
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
            assert gateway.process is not None
            before = rss_kib(gateway.process.pid)
            grown = 0
            async with connect(f"ws://127.0.0.1:{gateway.port}/ws/echo", compression=None) as client:
                for sent in range(0, SENT, len(MESSAGE)):
                    await client.send(MESSAGE)
                    if sent % (32 * 1024 * 1024) == 0:
                        grown = max(grown, rss_kib(gateway.process.pid) - before)
            grown = max(grown, rss_kib(gateway.process.pid) - before)
    assert received > 0
    assert grown < 64 * 1024, f"the worker grew by {grown / 1024:.0f} MiB for {SENT >> 20} MiB relayed"
