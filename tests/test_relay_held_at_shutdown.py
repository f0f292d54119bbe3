"""A message a policy holds for the client as the server shuts down (the relay connector).

The server's 1012 reaches the relay twice in one turn (its queued disconnect, read by the client pump, and
``client_closed_at_shutdown``), each dropping the held message: the second cancelled the upstream pump again,
which took that for the relay's end and stopped reading. With more than websockets' read queue behind the
held message, the upstream's answer to the 1012 was never read: the shutdown waited out ``close_timeout``.
End to end under ``run`` and SIGTERM, and with the fakes of ``support.relay_fakes`` (the two drops in one
turn, as the server makes them).
"""

from __future__ import annotations

import asyncio
import signal
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.messages.context import ConnectionContext, MessageHandler, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.relay.close_codes import SERVER_SHUTDOWN
from asgi_ws_gateway.relay.pumps import Relay
from support.configs import api_entry, write_config
from support.hostile import Handler, hostile_upstream, sends_then_answers_its_close  # noqa: F401 - the fixture hostile
from support.policies import context
from support.processes import ready_server
from support.rawhttp import ws_frame
from support.rawws import next_frame, raw_client_of
from support.relay_fakes import HANG, FakeClient, FakeUpstream

BEHIND = 40
"""Upstream messages behind the held one: more than websockets' read queue holds before it stops reading."""
HELD = {"rate-limit-messages": {"messages": 2, "window": 60, "action": "delay"}}
"""The third message waits a minute for its window: longer than the test."""


class _Holds:
    """Holds every upstream message until the connection ends (as a 60 s delay would)."""

    name = "holds"

    def attach(self, connection: ConnectionContext, direction: str) -> MessageHandler | None:
        if direction != "outbound":
            return None

        async def hold(message: WsMessage) -> None:
            await asyncio.Event().wait()

        return hold


async def test_a_held_message_dropped_twice_in_one_turn_leaves_the_upstream_pump_draining() -> None:
    """The upstream pump, cut once, drains to the upstream's close: before, the second drop cancelled it
    again, that cancellation took for the relay's end; the pump ended, the upstream's close answer was never
    read, and the relay waited close_timeout for it (a pump's end, not the upstream's close, in the stats)."""
    client, upstream = FakeClient(), FakeUpstream()
    handshake = HandshakeContext("chat", context("/ws/x").request)
    relay = Relay(client.receive, client.send, upstream, max_message_size=1000, close_timeout=HANG,
                  policies=MessagePolicySet([], [_Holds()]), handshake=handshake)  # fmt: skip
    upstream.push("held")
    task = asyncio.create_task(relay.run())
    async with asyncio.timeout(HANG):
        while not relay._holding:  # noqa: ASYNC110 - the fakes have no event
            await asyncio.sleep(0)
        disconnect = {"type": "websocket.disconnect", "code": 1012, "reason": "bye", SERVER_SHUTDOWN: True}
        client._inbox.put_nowait(disconnect)  # as the server's shutdown does: queued, then the hook, one call
        relay.client_closed_at_shutdown(disconnect)
        to_client = relay._to_client
        assert to_client is not None
        stats = await task
    assert not to_client.cancelled(), "the upstream pump was cancelled, not drained to the upstream's close"
    assert upstream.closes[0] == (1012, "bye")  # (then the wind-down's idempotent close)
    assert (stats.closed_by, stats.close_code, stats.messages_out) == ("gateway", 1012, 0)


async def test_a_held_message_at_sigterm_holds_no_close_behind_it(
    hostile: Callable[[Handler], Awaitable[int]], tmp_path: Path
) -> None:
    """SIGTERM while the relay holds a message with BEHIND more queued: the client gets its 1012, the upstream
    its close, and run exits once they answer. Before, the upstream's answer was left unread and run exited
    after close_timeout (8 s of 8 measured; 30 here, past the test's deadline)."""
    closes: list[bytes] = []
    port = await hostile(
        sends_then_answers_its_close(
            b"".join(ws_frame(0x1, b"m%d" % i * 100, mask=False) for i in range(3 + BEHIND)), closes
        )
    )
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", close_timeout=30, passthrough=False,
                      message_policies={"outbound": [HELD]})  # fmt: skip
    config = write_config(tmp_path, {"apis": [entry]})
    command = ["-m", "asgi_ws_gateway", "run", str(config), "--log-level", "info"]
    with ready_server(lambda p: [*command, "--port", str(p)]) as server:
        reader, writer = await raw_client_of(f"ws://127.0.0.1:{server.port}/h")
        async with asyncio.timeout(10):  # a deadline against a hang, a third of close_timeout
            received = 0
            while received < 2:
                received += (await next_frame(reader))[0] == 0x1
            server.process.send_signal(signal.SIGTERM)
            while (frame := await next_frame(reader))[0] != 0x8:
                pass
            writer.write(ws_frame(0x8, frame[1][:2]))
            await writer.drain()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            assert await asyncio.to_thread(server.wait_exit, 10) == 0, server.output()
        output = server.output()
    assert struct.unpack("!H", frame[1][:2]) == (1012,)
    assert [struct.unpack("!H", close[:2])[0] for close in closes] == [1012]
    assert "closed by gateway with 1012" in output and "out 2 msg" in output, output
