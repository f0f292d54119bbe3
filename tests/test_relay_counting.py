"""The relay's message counters: each message counted once, as received, with or without message policies.

The pumps count inline (the no-policy loop makes no call per message); these tests pin that count
to :meth:`RelayStats.count_in` / :meth:`RelayStats.count_out`, which passthrough's frame scanner
counts through, on every combination of policies. Fakes from ``support.relay_fakes``, no sockets.
"""

from __future__ import annotations

import asyncio

import pytest

from asgi_ws_gateway._types import Data
from asgi_ws_gateway.errors import DropMessage
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.messages.context import ConnectionContext, MessageHandler, MessagePolicy, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.relay.pumps import Relay
from asgi_ws_gateway.relay.stats import RelayStats
from support.policies import context
from support.relay_fakes import CLOSE_TIMEOUT, HANG, FakeClient, FakeUpstream

MAX_SIZE = 1000
CLIENT_SAYS: list[Data] = ["hi", "é", b"\x00" * 300]  # ASCII text, 2 UTF-8 bytes of text, binary
UPSTREAM_SAYS: list[Data] = ["hello", "ü" * 3, b"xy"]


class _PassThrough:
    name = "pass"

    def attach(self, connection: ConnectionContext, direction: str) -> MessageHandler | None:
        return lambda message: None


class _DropOrGrow:
    """Drops client messages that say "drop"; makes every upstream message a longer binary one."""

    name = "drop-or-grow"

    def attach(self, connection: ConnectionContext, direction: str) -> MessageHandler | None:
        def handle(message: WsMessage) -> None:
            if direction == "inbound" and message.data == "drop":
                raise DropMessage("dropped", "not this one")
            if direction == "outbound":
                data = message.data
                message.replace(b"grown:" + (data.encode() if isinstance(data, str) else data))

        return handle


def _relay(
    client: FakeClient, upstream: FakeUpstream, inbound: list[MessagePolicy], outbound: list[MessagePolicy]
) -> Relay:
    if not inbound and not outbound:
        return Relay(client.receive, client.send, upstream, max_message_size=MAX_SIZE, close_timeout=CLOSE_TIMEOUT)
    policies = MessagePolicySet(inbound, outbound)
    handshake = HandshakeContext("chat", context("/ws/x").request)
    return Relay(client.receive, client.send, upstream, max_message_size=MAX_SIZE, close_timeout=CLOSE_TIMEOUT,
                 policies=policies, handshake=handshake)  # fmt: skip


def _size(data: Data) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)


def _expected(client_says: list[Data], upstream_says: list[Data]) -> RelayStats:
    slots = MAX_SIZE.bit_length() + 1
    stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    for data in client_says:
        stats.count_in(_size(data), isinstance(data, bytes))
    for data in upstream_says:
        stats.count_out(_size(data), isinstance(data, bytes))
    return stats


async def _relay_until(relay: Relay, client: FakeClient, upstream: FakeUpstream, *, sent: int, received: int) -> None:
    """Run ``relay`` until the upstream got ``sent`` and the client ``received`` messages, then close."""
    task = asyncio.create_task(relay.run())
    async with asyncio.timeout(HANG):
        while len(upstream.sent) < sent or len(client.messages) < received:  # noqa: ASYNC110 - the fakes have no event
            await asyncio.sleep(0)
        client.closes_with(1000)
        await task


def _counters(stats: RelayStats) -> tuple[object, ...]:
    return (stats.messages_in, stats.bytes_in, stats.binary_in, stats.binary_bytes_in, stats.sizes_in,
            stats.messages_out, stats.bytes_out, stats.binary_out, stats.binary_bytes_out, stats.sizes_out)  # fmt: skip


@pytest.mark.parametrize(("inbound", "outbound"), [
    ([], []),
    ([_PassThrough()], [_PassThrough()]),
    ([_PassThrough()], []),
    ([], [_PassThrough()]),
], ids=["no-policies", "both-ways", "inbound-only", "outbound-only"])  # fmt: skip
async def test_each_message_is_counted_once_each_way(
    inbound: list[MessagePolicy], outbound: list[MessagePolicy]
) -> None:
    """Messages, bytes, the binary subset and the size slots, once per message, as RelayStats.count_* count."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = _relay(client, upstream, inbound, outbound)
    for data in CLIENT_SAYS:
        client.says(data)
    for data in UPSTREAM_SAYS:
        upstream.push(data)
    await _relay_until(relay, client, upstream, sent=len(CLIENT_SAYS), received=len(UPSTREAM_SAYS))
    assert upstream.sent == CLIENT_SAYS
    assert client.messages == UPSTREAM_SAYS
    assert _counters(relay.stats) == _counters(_expected(CLIENT_SAYS, UPSTREAM_SAYS))
    assert (relay.stats.messages_in, relay.stats.bytes_in) == (3, 2 + 2 + 300)  # not only equal: these numbers


async def test_dropped_and_transformed_messages_are_counted_once_as_received() -> None:
    """A dropped message still counts (its error reply does not); a transformed one counts at its received size."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = _relay(client, upstream, [_DropOrGrow()], [_DropOrGrow()])
    for data in ("drop", "keep"):
        client.says(data)
    for reply_to in ("up", b"\x01\x02\x03"):
        upstream.push(reply_to)
    # The client receives the error reply for "drop" and the two grown messages.
    await _relay_until(relay, client, upstream, sent=1, received=3)
    assert upstream.sent == ["keep"]
    (reply,) = [m for m in client.messages if isinstance(m, str)]  # the pumps interleave: order aside
    assert '"dropped"' in reply
    assert [m for m in client.messages if isinstance(m, bytes)] == [b"grown:up", b"grown:\x01\x02\x03"]
    assert _counters(relay.stats) == _counters(_expected(["drop", "keep"], ["up", b"\x01\x02\x03"]))
    assert relay.stats.policy_actions == {("drop-or-grow", "drop", "inbound", "dropped"): 1}


async def test_a_transformed_message_changes_frame_type_to_the_client() -> None:
    """The outbound pump sends what the policies returned, as a binary frame when they made it bytes."""
    client, upstream = FakeClient(), FakeUpstream()
    relay = _relay(client, upstream, [], [_DropOrGrow()])
    upstream.push("text")
    await _relay_until(relay, client, upstream, sent=0, received=1)
    assert client.messages == [b"grown:text"]


def test_policies_need_the_handshake_context() -> None:
    """Message policies see the handshake, so a relay with policies and no handshake is a programming error."""
    client, upstream = FakeClient(), FakeUpstream()
    with pytest.raises(ValueError, match="handshake"):
        Relay(client.receive, client.send, upstream, max_message_size=MAX_SIZE,
              policies=MessagePolicySet([_PassThrough()], []))  # fmt: skip
