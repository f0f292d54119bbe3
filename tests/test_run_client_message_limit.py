"""``run`` reads a client's message as large as its API allows, past uvicorn's 16 MiB (``server.serving``).

uvicorn's ``ws_max_size`` (16 MiB) held every client's message, whatever its API's ``max_message_size``: an API
configured for 64 MiB closed a client's 20 MiB message with 1009, and nothing at start-up said so. ``run`` now
sizes it from the largest API's limit; each connection is still held to its own API's.
"""

from __future__ import annotations

import os
from pathlib import Path

from asgi_ws_gateway.config.limits import MIB
from support.clients import connect, expect_close
from support.configs import api_entry, build_config, write_config
from support.processes import ready_server
from support.upstream import UpstreamServer

LARGE = 20 * MIB
"""A message past uvicorn's 16 MiB, within the large API's 64 MiB."""


async def test_a_message_past_16_mib_reaches_an_api_that_allows_it_and_no_other(tmp_path: Path) -> None:
    with UpstreamServer(max_size=None) as upstream:
        document = build_config(
            upstream, name="large", path="/large", api={"max_message_size": 64 * MIB},
            more_apis=[api_entry(upstream, name="small", path="/small")],  # 1 MiB, the default
        )  # fmt: skip
        config = write_config(tmp_path, document)
        command = ["-m", "asgi_ws_gateway", "run", str(config), "--log-level", "info"]
        with ready_server(lambda port: [*command, "--port", str(port)]) as server:
            message = os.urandom(LARGE)
            async with await connect(f"ws://127.0.0.1:{server.port}/large", compression=None) as ws:
                await ws.send(message)
                assert await ws.recv() == message  # it was closed 1009 (message too big)
            async with await connect(f"ws://127.0.0.1:{server.port}/small", compression=None) as ws:
                await ws.send(message[: 2 * MIB])
                assert (await expect_close(ws))[0] == 1009  # each connection still held to its own API's limit
            output = server.output()
    assert output.count("clients' messages are read up to 67108864 bytes (apis[0].max_message_size") == 1, output
