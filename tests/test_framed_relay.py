"""The frame relay between two fake transports, no sockets: policy steps, order, pauses, close codes.

Bytes fed to a side are what that peer sent; what the frame relay wrote to a transport is read
back with the frame reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

from asgi_ws_gateway._types import Data
from asgi_ws_gateway.errors import CloseConnection
from asgi_ws_gateway.messages.context import ConnectionContext, Direction, MessageCheck, MessageHandler, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.passthrough.assembler import MessageAssembler
from asgi_ws_gateway.passthrough.frame_encoding import close_frame, encode_frame
from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.relay.stats import RelayStats
from support.policies import context
from support.relay_fakes import FakeTransport

Step = Callable[[WsMessage], Awaitable[None] | None]


class Policy:
    """A message policy made of one function, in the directions given."""

    def __init__(self, step: Step, name: str = "test") -> None:
        self.step, self.name = step, name

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler | None:
        return self.step


def relay(
    inbound: Step | None = None, outbound: Step | None = None
) -> tuple[FramedRelay, FakeTransport, FakeTransport]:
    client, upstream = FakeTransport(), FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    policies = MessagePolicySet([Policy(inbound)] if inbound else [], [Policy(outbound)] if outbound else [])
    framed = FramedRelay(raw, policies=policies, handshake=context("/ws/chat"), max_message_size=1000,
                         close_timeout=30.0)  # fmt: skip
    framed.client.connection_made(client)
    framed._start()
    return framed, client, upstream


def read(written: bytearray, *, masked: bool) -> tuple[list[Data], tuple[int, str] | None]:
    """The messages and the close frame among the frames written to a peer."""
    frames = MessageAssembler(RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12), inbound=masked,
                              max_message_size=1 << 20)  # fmt: skip
    frames.feed(bytes(written))
    messages = [event[1] for event in iter(frames.next, None) if event[0] < 8]
    assert frames.error is None, frames.error
    return messages, frames.close


def text(data: str, *, mask: bool = True) -> bytes:
    return encode_frame(0x1, data.encode(), mask=mask)


async def test_a_waiting_policy_step_pauses_the_sender_and_keeps_the_order() -> None:
    """Messages after one whose policy waits are held, unread, and go on after it, in order."""
    gate = asyncio.get_running_loop().create_future()

    def step(message: WsMessage) -> Awaitable[None] | None:
        return gate if message.data == "slow" else None

    framed, client, upstream = relay(inbound=step)
    framed.client.data_received(text("a") + text("slow") + text("b"))
    assert read(upstream.written, masked=True)[0] == ["a"]
    assert not client.is_reading()
    framed.upstream.pause_writing()
    framed.upstream.resume_writing()  # the upstream's buffer drained: still paused for the policy
    assert not client.is_reading()
    framed.client.data_received(text("c"))  # a read already under way when reading paused
    gate.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert read(upstream.written, masked=True)[0] == ["a", "slow", "b", "c"]
    assert client.is_reading()


async def test_a_full_upstream_buffer_keeps_the_client_paused_after_a_waiting_step() -> None:
    gate = asyncio.get_running_loop().create_future()
    framed, client, upstream = relay(inbound=lambda m: gate)
    framed.client.data_received(text("a"))
    framed.upstream.pause_writing()
    gate.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert read(upstream.written, masked=True)[0] == ["a"]
    assert not client.is_reading()
    framed.upstream.resume_writing()
    assert client.is_reading()


async def test_a_policy_closing_a_client_message_gives_the_client_its_code_and_the_upstream_1001() -> None:
    def step(message: WsMessage) -> None:
        raise CloseConnection(4008, "forbidden", "no such room")

    framed, client, upstream = relay(inbound=step)
    framed.client.data_received(text("hi") + text("after"))
    assert read(client.written, masked=False)[1] == (4008, "no such room")
    assert read(upstream.written, masked=True) == ([], (1001, "peer closed: no such room"))
    assert (framed.stats.closed_by, framed.stats.close_code) == ("gateway", 4008)


async def test_a_policy_closing_an_upstream_message_gives_the_upstream_its_code_and_the_client_1001() -> None:
    def step(message: WsMessage) -> None:
        raise CloseConnection(1009, "too_big", "message too big", peer_reason="upstream message too big")

    framed, client, upstream = relay(outbound=step)
    framed.upstream.data_received(text("hi", mask=False))
    assert read(upstream.written, masked=True)[1] == (1009, "message too big")
    assert read(client.written, masked=False) == ([], (1001, "upstream message too big"))


async def test_a_transformed_message_is_framed_anew_masked_towards_the_upstream() -> None:
    def step(message: WsMessage) -> None:
        message.set_json({"wrapped": message.json()})

    framed, _client, upstream = relay(inbound=step)
    framed.client.data_received(text('{"a": 1}'))
    assert read(upstream.written, masked=True)[0] == ['{"wrapped":{"a":1}}']


async def test_an_unchanged_single_frame_goes_on_as_it_came() -> None:
    framed, client, upstream = relay(inbound=lambda m: None, outbound=lambda m: None)
    frame = text("as is")
    framed.client.data_received(frame)
    assert bytes(upstream.written) == frame
    framed.upstream.data_received(text("back", mask=False))
    assert bytes(client.written) == text("back", mask=False)


async def test_invalid_utf8_from_the_upstream_is_1011_to_the_client_and_1007_upstream() -> None:
    framed, client, upstream = relay(outbound=lambda m: None)
    framed.upstream.data_received(encode_frame(0x1, b"\xff", mask=False))
    assert read(client.written, masked=False) == ([], (1011, "upstream connection failed"))
    assert read(upstream.written, masked=True)[1] == (1007, "invalid UTF-8")


async def test_a_gateway_close_while_a_step_waits_forwards_nothing_more() -> None:
    gate = asyncio.get_running_loop().create_future()
    framed, client, upstream = relay(inbound=lambda m: gate)
    framed.client.data_received(text("held"))
    await framed.close(1001, "idle timeout", 1001, "idle timeout")
    gate.set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert read(upstream.written, masked=True) == ([], (1001, "idle timeout"))
    framed.client.data_received(close_frame(1001, "", mask=True))
    assert client.is_closing()


def size_limit(limit: int, calls: list[str]) -> MessageCheck:
    """A size limit as limit-message-size declares it: its handler closes with 1009 past ``limit``."""

    def handle(message: WsMessage) -> None:
        calls.append("handle")
        if message.size > limit:
            raise CloseConnection(1009, "too_big", "message too big", peer_reason="upstream message too big")

    def passes(data: Data, size: int) -> bool:
        calls.append("passes")
        return size <= limit

    return MessageCheck(handle, passes, max_size=limit)


async def test_a_direction_with_size_limits_only_forwards_what_fits_without_a_pipeline_call() -> None:
    calls: list[str] = []
    framed, client, upstream = relay(outbound=size_limit(5, calls))
    assert framed.upstream.unchecked == 5 and framed.client.unchecked == -1
    framed.upstream.data_received(text("12345", mask=False))
    assert bytes(client.written) == text("12345", mask=False) and calls == []
    framed.upstream.data_received(text("123456", mask=False))
    assert calls == ["handle"]
    assert read(upstream.written, masked=True)[1] == (1009, "message too big")
    assert read(client.written, masked=False) == (["12345"], (1001, "upstream message too big"))
    assert framed.stats.policy_actions == {("test", "close", "outbound", "too_big"): 1}


async def test_a_message_within_the_size_limits_goes_on_after_the_clients_close() -> None:
    """After the client's close frame, what the upstream sent before its answer still reaches the client, as on
    the splice and on a direction without policies (it was dropped: a slow reader lost its backlog)."""
    framed, client, _upstream = relay(outbound=size_limit(5, []))
    framed.client.data_received(close_frame(1000, "bye", mask=True))
    framed.upstream.data_received(text("late", mask=False) + close_frame(1000, "bye", mask=False))
    assert read(client.written, masked=False) == (["late"], (1000, "bye"))


async def test_a_policy_closing_on_a_message_after_the_clients_close_answers_the_client_with_its_code() -> None:
    """After the client's close frame, the upstream's messages still pass its policies: one a policy closes on
    is not forwarded, and the policy's close is honoured where a close can still be sent: the client's close
    is answered with the policy's code for it at once, and nothing the upstream sends after goes on (its
    answer, which the close wait used to wait for to its bounds while the upstream streamed on)."""
    calls: list[str] = []
    framed, client, upstream = relay(outbound=size_limit(5, calls))
    framed.client.data_received(close_frame(1000, "bye", mask=True))
    framed.upstream.data_received(text("too long", mask=False) + close_frame(1000, "bye", mask=False))
    assert calls == ["handle"]
    assert read(client.written, masked=False) == ([], (1001, "upstream message too big"))
    assert read(upstream.written, masked=True) == ([], (1000, "bye"))  # the client's, forwarded: no second close
    assert client.is_closing()


async def test_a_policy_closing_on_a_message_after_the_upstreams_close_answers_the_upstream_with_its_code() -> None:
    """The other direction: after the upstream's close frame, a client message a policy closes on gets the
    upstream the policy's code for it, as the answer to its close (the client had the upstream's already)."""

    def refuse(message: WsMessage) -> None:
        raise CloseConnection(1008, "refused", "policy violation", peer_reason="client message refused")

    framed, client, upstream = relay(inbound=refuse)
    framed.upstream.data_received(close_frame(4000, "done", mask=False))
    framed.client.data_received(text("after"))
    assert read(client.written, masked=False) == ([], (4000, "done"))  # the upstream's, forwarded: no second close
    assert read(upstream.written, masked=True) == ([], (1001, "client message refused"))


async def test_a_context_kept_after_the_connection_ended_answers_as_a_closed_connection() -> None:
    """The frame relay drops its policies' context at the end (no reference cycle is left): a policy that
    kept the context gets a closed connection's answers, and a task it starts then never runs."""
    kept: list[ConnectionContext] = []

    class Keeper(Policy):
        def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler | None:
            kept.append(connection)
            return None

    client, upstream = FakeTransport(), FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    framed = FramedRelay(raw, policies=MessagePolicySet([Keeper(lambda m: None)], []),
                         handshake=context("/ws/chat"), max_message_size=1000, close_timeout=30.0)  # fmt: skip
    framed.client.connection_made(client)
    framed._start()
    running = asyncio.create_task(framed.run())
    (connection,) = kept
    assert await connection.send_to_client("while open")
    for side in (framed.client, framed.upstream):
        side.connection_lost(None)
    stats = await running
    assert stats is framed.stats
    started: list[str] = []

    async def late() -> None:
        started.append("late")

    connection.start(late)
    assert not await connection.send_to_client("after the end")
    assert not await connection.send_to_upstream("after the end")
    await connection.close(1000, "after the end")
    await asyncio.sleep(0)
    assert started == []
    assert b"after the end" not in bytes(client.written) + bytes(upstream.written)
