"""The frame relay: message policies inside the gateway's protocol, without the relay's two stacks.

An API with message policies cannot be spliced byte for byte: each message has to be whole to be
inspected. :class:`FramedRelay` keeps the splice's two transports, its backpressure, keepalive and
closing (``passthrough/splice.py``), and reads each side with a
:class:`~asgi_ws_gateway.passthrough.assembler.MessageAssembler` instead of a frame scanner: each
complete message goes through its direction's
:class:`~asgi_ws_gateway.messages.pipeline.MessagePipeline`, as in the relay, and what comes out is
written to the other side -- the frame as it arrived when it was one frame and the policies left it
unchanged (client frames are masked, upstream frames are not, as each receiver needs), re-framed
otherwise (masked towards the upstream). Pings, pongs and close frames go through in order with the
messages, as in the splice (one ping in flight each way, :mod:`.ping_window`).

A policy step that does not wait runs inline, in ``data_received``. One that waits (a Redis-backed
rate limit, a delay) gets a task; until it is done, that side is not read and its frames already
read stay in the assembler, so order and backpressure hold and nothing queues without bound. A read
of many small messages is handled ``MESSAGES_PER_TURN`` events per event-loop turn the same way (the
side not read meanwhile): one callback must not hold every other connection of the worker. Once the
other side is gone (or has the gateway's close frame), the step is cancelled and the side's frames
are dropped as they are read, its close frame still seen. Once the other side's own close frame passed
to it, its step is cancelled too, its message dropped (as one whose step would wait from then on), and
the frames behind it go on: its answer is read at once, not after the hold; a side read while its step waits anyway
holds one frame at most (``MessageAssembler.hold_limit``), then is not read.

A side that ends while a step of its direction waits (its last messages, its close frame and its TCP
close read behind the step) is not taken for one that vanished: what it sent before it went goes on
in order as the steps finish, its close frame too, and only then does the splice see it gone (as any
side whose close frame it has seen; with none, 1011 or 1001 after its messages). Not past
``close_timeout`` from its end: then the rest is dropped, logged at INFO, and it is gone as before.
The other side going meanwhile drops it at once (its messages have nowhere to go); the gateway
closing (a policy, a drain) drops what is left as it comes.

Closing is the splice's (its module docstring), plus what the relay does for policies: a policy
that closes gives the message's sender the policy's code and the other side ``peer_code``; a client
text message that is not UTF-8 gets the client 1007 (and the upstream 1007); an upstream's gets the
client 1011 ``upstream connection failed``. A message that arrives after the other side's close frame
goes through its direction's policies and on, as on a direction without policies and as the splice
forwards it (its sender's answer comes behind it): the close wait counts its peer's taking it in as
progress, within the wait's bounds (:mod:`..relay.close_wait`). Dropped there, a slow reader that closed
lost the backlog the gateway had yet to read (58 of 128 messages), and its close wait ended at its second
look where the splice's waited to the bound. From the gateway's own close on, messages are dropped
unread by the policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from .._types import Data
from ..errors import CloseConnection
from ..loop_watch import MESSAGES_PER_TURN
from ..messages.context import ConnectionContext
from ..relay.policy_tasks import PolicyTasks
from ..relay.stats import RelayStats
from .assembler import Event, MessageAssembler
from .frame_encoding import encode_frame
from .ping_window import PINGS_IN_FLIGHT, SUPERSEDED, UNSOLICITED, answered, count_drop
from .raw_upstream import RawUpstream
from .sides import Side
from .splice import Splice

if TYPE_CHECKING:
    from ..handshake.context import HandshakeContext
    from ..messages.pipeline import MessagePolicySet
    from ..upstream.close_secrets import SentCredentials

logger = logging.getLogger(__name__)

Process = Callable[[Data, int], "Data | Coroutine[Any, Any, Data | None] | None"]


class _FramedSide(Side):
    """One leg of the frame relay: whole messages in, each through the policies, whole frames out."""

    __slots__ = ("frames", "gone_due", "held", "process", "relay", "task", "unchecked")

    peer: _FramedSide

    def __init__(self, relay: FramedRelay, frames: MessageAssembler, *, client: bool) -> None:
        super().__init__(relay, frames, client=client)
        self.relay = relay
        self.frames = frames
        self.process: Process | None = None  # its direction's MessagePipeline.process_now
        self.unchecked = -1  # messages up to this size skip ``process`` (its policies are size limits only)
        # A policy step that waits, or the next loop turn's share of a large read: either way this
        # side is not read, and what it sends waits in the assembler (one check per read for both).
        self.task: asyncio.Task[None] | asyncio.Handle | None = None
        self.held: Event | None = None  # the event that next turn starts with (out of the assembler)
        # Its TCP connection ended while a policy step waited: what it sent before it went still goes
        # on once the steps finish, by this (close_timeout from its end); then the splice sees it gone.
        self.gone_due: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.heard = True
        frames = self.frames
        if self.task is None or frames.halted:  # (halted: every message is dropped, in any order)
            self.pump(frames.read(data))
        else:
            frames.feed(data)  # held until the policy step that waits (or the next turn) is done
            if frames.buffered > frames.hold_limit:
                self.transport.pause_reading()  # not read meanwhile: a read already under way, at most

    def stop_forwarding(self) -> None:
        """Nothing this side sends can go on (its peer is gone, or has the gateway's close frame): its
        frames are read and dropped, its close frame still seen, and a policy step that waits is
        cancelled, its result having nowhere to go. Read again for that close frame while the step
        held its reads in the assembler, a side grew a gateway by 300 MiB in 0.4 s."""
        self.frames.halt()
        if isinstance(self.task, asyncio.Task):
            self.task.cancel()
            self.task = None

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer.gone_due is not None:  # it went first, its messages still waiting: they have nowhere to go now
            self.open = False
            peer.drop_held()
            peer.leave()
        if isinstance(self.task, asyncio.Handle):  # what it sent before it went comes first (its close frame too)
            self.task.cancel()
            event, self.held, self.task = self.held, None, None
            self.pump(event, budget=-1)
        if isinstance(self.task, asyncio.Task):
            if peer.open and not self.frames.halted:
                # A policy step waits, and behind it what the side sent before it went, its close frame
                # too: all of it goes on once the steps finish, as without policies. Taken for a side
                # that vanished, it lost it all (an upstream's 10 messages and 4001: the client got 3
                # and 1011). Its transport is gone: nothing is written to it, nothing waits on it.
                self.open = self.write_paused = self.frames.hold_pings = False
                self._wake()
                self.gone_due = asyncio.get_running_loop().call_later(self.relay._close_timeout, self._give_up)
                return
            self.stop_forwarding()  # what waits has nowhere to go
        super().connection_lost(exc)

    def leave(self) -> None:
        """A side gone while its messages waited, now that none waits (delivered or dropped): the splice
        sees it gone, as if it had just gone (its close frame, if it sent one, already seen)."""
        if self.gone_due is not None:
            self.gone_due.cancel()
            self.gone_due = None
            self.relay.lost(self)

    def drop_held(self) -> None:
        """What a side gone still holds goes nowhere: dropped, its step cancelled."""
        self.stop_forwarding()
        if isinstance(self.task, asyncio.Handle):
            self.task.cancel()
            self.task = self.held = None

    def _give_up(self) -> None:
        self.gone_due = None
        logger.info("frame relay: the %s's messages still waited for a policy step %g s after it went; gave up on "
                    "them", "client" if self.client else "upstream", self.relay._close_timeout)  # fmt: skip
        self.drop_held()
        self.relay.lost(self)

    def _settle(self) -> None:
        """Once nothing of a side gone waits any more, it leaves (:meth:`leave`)."""
        if self.gone_due is not None and self.task is None:
            self.leave()

    def pump(self, event: Event | None = None, budget: int = MESSAGES_PER_TURN) -> None:
        """Handle ``event`` and the complete frames held, in order, until one waits for a policy or
        ``budget`` events were handled (the rest in the next loop turn; -1: no limit)."""
        frames, peer, splice, process, unchecked = self.frames, self.peer, self.relay, self.process, self.unchecked
        if event is None:
            event = frames.next()
        while event is not None:
            opcode, data, raw, size = event
            if frames.halted or not peer.open:
                # The gateway closes: nothing more goes on (close frames are still read), and an upstream's
                # message the client is not sent is not counted as sent.
                if opcode < 3 and not self.client:
                    self.relay.stats.uncount_out(size, opcode == 2)
            elif opcode == 9 and (
                frames.hold_pings or frames.held_ping is not None or len(frames.pings_in_flight) >= PINGS_IN_FLIGHT
            ):
                # It reads nothing, or its pings in flight await their pongs: the latest goes on later.
                if frames.held_ping is not None:
                    count_drop(self.relay.stats, inbound=self.client, reason=SUPERSEDED)
                frames.held_ping = raw
            elif opcode == 9:
                frames.pings_in_flight += (cast("bytes", data),)  # (a control frame's payload is bytes)
                peer.transport.write(raw)
            elif opcode == 10:
                in_flight = answered(peer.frames.pings_in_flight, cast("bytes", data))
                if in_flight is not None:  # it answers the peer's ping: its held one may go now
                    peer.frames.pings_in_flight = in_flight
                    peer.transport.write(raw)
                    peer.release_ping()
                else:
                    count_drop(self.relay.stats, inbound=self.client, reason=UNSOLICITED)
            elif opcode > 2:  # close
                peer.transport.write(raw if self.sent is None else self.close_without_credentials(raw))
            elif process is None or size <= unchecked:
                peer.transport.write(raw or self._frame(data))
            else:  # (after its peer's close frame too, as the splice forwards it: its answer comes behind)
                closing: CloseConnection | None = None
                try:
                    result = process(data, size)
                except CloseConnection as close:
                    result, closing = None, close
                except Exception:
                    splice.failed()
                    return
                if result is None:  # dropped, or closed on
                    if not self.client and peer.scanner.close is not None:
                        # After the client's close frame it goes nowhere: not counted as sent, as the relay
                        # (which reads it unchecked then) does not count it. Counted, it read out 3 for 2 sent.
                        splice.stats.uncount_out(size, opcode == 2)
                    if closing is not None:
                        splice.policy_close(self, closing)
                elif result is data:
                    peer.transport.write(raw or self._frame(data))  # unchanged: as it came when one frame
                elif isinstance(result, str | bytes):
                    peer.transport.write(self._frame(result))
                elif result is not None and peer.scanner.close is not None:
                    # Its peer closed: a step that waits would hold this side's answer behind it (see
                    # FramedRelay.after_frame). The message is dropped, not counted as sent; its step is
                    # cancelled once started, and closed (as in _close_step) if the connection's end
                    # cancelled its task before it ran.
                    if not self.client:
                        self.relay.stats.uncount_out(size, opcode == 2)
                    dropped = splice.background.spawn(_dropped(result))
                    dropped.add_done_callback(functools.partial(_close_step, result, None, size, opcode == 2))
                    asyncio.get_running_loop().call_soon(dropped.cancel)
                elif result is not None:
                    self.transport.pause_reading()
                    self.task = task = splice.background.spawn(self._finish(result, data, raw))
                    # Cancelled before it ran (stop_forwarding, the connection's end), the task never
                    # awaits the step: closed here, as it would be (no "never awaited" warning). Cancelled
                    # at all, its message went nowhere: an upstream's is not counted as sent.
                    uncount = self.relay.stats.uncount_out if not self.client else None
                    task.add_done_callback(functools.partial(_close_step, result, uncount, size, opcode == 2))
                    return
            if frames.idle:
                break  # nothing held: what a read of one message leaves (the turn budget counts nothing)
            event = frames.next()
            if event is None:
                break
            budget -= 1
            if not budget:
                self.transport.pause_reading()
                self.held, self.task = event, asyncio.get_running_loop().call_soon(self._next_turn)
                return
        if frames.interrupted:
            splice.after_frame(self)

    def _next_turn(self) -> None:
        event, self.held, self.task = self.held, None, None
        self.pump(event)
        self._read_again()
        self._settle()

    def _read_again(self) -> None:
        """Resume reading once nothing holds this side: no policy step waits, no turn is due, the peer reads."""
        if self.task is None and self.open and not self.peer.write_paused:
            self.transport.resume_reading()

    async def _finish(self, pending: Coroutine[Any, Any, Data | None], data: Data, raw: bytes) -> None:
        splice = self.relay
        try:
            try:
                result = await pending
            finally:
                dropped = self.task is not asyncio.current_task()  # (by stop_forwarding, or its peer's close)
                if not dropped:
                    self.task = None
            if dropped:  # done before its cancellation came: it goes nowhere all the same
                if not self.client:
                    splice.stats.uncount_out(_size(data), isinstance(data, bytes))
                return
        except CloseConnection as close:
            if dropped and not self.client:  # closed on as it was dropped: not sent, as a result would not be
                splice.stats.uncount_out(_size(data), isinstance(data, bytes))
            splice.policy_close(self, close)
            result = None
        except Exception:
            splice.failed()
            self._settle()
            return
        if result is not None:
            if self.peer.open and not self.frames.halted:
                self.peer.transport.write(raw if result is data and raw else self._frame(result))
            elif not self.client:  # the client closed or went, or the gateway closes, meanwhile: not sent
                splice.stats.uncount_out(_size(data), isinstance(data, bytes))  # as it was counted: as read
        self.pump()
        self._read_again()
        self._settle()

    def _frame(self, data: Data) -> bytes:
        """``data`` as one frame for the peer (masked towards the upstream)."""
        if isinstance(data, str):
            return encode_frame(0x1, data.encode(), mask=self.client)
        return encode_frame(0x2, data, mask=self.client)

    def resume_writing(self) -> None:
        self.write_paused = self.frames.hold_pings = False
        self.relay.writes_flowing(self)
        self.release_ping()  # frames reach the peer whole: never inside one
        self._wake()
        peer = self.peer
        if peer.open and peer.task is None:
            peer.transport.resume_reading()


def _close_step(
    step: Coroutine[Any, Any, Data | None], uncount: Callable[[int, bool], None] | None, size: int, binary: bool,
    task: asyncio.Task[None],
) -> None:  # fmt: skip
    step.close()  # (a step that ran is done already: nothing happens)
    if uncount is not None and task.cancelled():
        uncount(size, binary)


async def _dropped(step: Coroutine[Any, Any, Data | None]) -> None:
    """A policy step whose message is dropped: run until cancelled, its outcome ignored."""
    with contextlib.suppress(Exception):
        await step


def _size(data: Data) -> int:
    """``data``'s size as the assembler counted it (as read)."""
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode())


class FramedRelay(Splice):
    """A splice that reads whole messages and runs the connection's message policies on them.

    Offers what the relay offers its policies (``connection``, :meth:`close`,
    :meth:`send_to_client`, :meth:`send_to_upstream`, :meth:`start`) and what lifecycle and
    management use (as :class:`~asgi_ws_gateway.passthrough.splice.Splice`).

    Args:
        upstream: the upstream connection, handshake done, no extension negotiated.
        policies: the connection's message policies, attached here, once.
        handshake: the connection's handshake context, which the policies see.
        max_message_size, close_timeout, ping_interval, ping_timeout, sent: as for the splice.
    """

    client: _FramedSide
    upstream: _FramedSide

    def __init__(
        self,
        upstream: RawUpstream,
        *,
        policies: MessagePolicySet,
        handshake: HandshakeContext,
        max_message_size: int,
        close_timeout: float,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        sent: SentCredentials | None = None,
    ) -> None:
        if upstream.extensions is not None:
            raise ValueError("the frame relay reads frames without extensions")
        super().__init__(upstream, max_message_size=max_message_size, close_timeout=close_timeout,
                         ping_interval=ping_interval, ping_timeout=ping_timeout, sent=sent)  # fmt: skip
        self.background = PolicyTasks()
        self.connection = ConnectionContext(handshake, self.stats, self)
        for side, pipeline in zip((self.client, self.upstream), policies.attach(self.connection), strict=True):
            if pipeline is not None:
                side.process = pipeline.process_now
                if pipeline.checks == ():  # size limits only: what passes them needs no pipeline call
                    side.unchecked = pipeline.max_size

    def _sides(self, max_message_size: int) -> tuple[_FramedSide, _FramedSide]:
        frames_in = MessageAssembler(self.stats, inbound=True, max_message_size=max_message_size)
        frames_out = MessageAssembler(self.stats, inbound=False, max_message_size=max_message_size)
        return _FramedSide(self, frames_in, client=True), _FramedSide(self, frames_out, client=False)

    async def run(self) -> RelayStats:
        """As the splice's; the policies' tasks are cancelled, and awaited, before it returns."""
        stats = await super().run()
        for side in (self.client, self.upstream):  # as the splice's links back: no reference cycle left
            del side.relay, side.process
        self.connection.end()
        return stats

    async def _until_closed(self) -> None:
        self.background.begin()
        try:
            await super()._until_closed()
        finally:
            await self.background.end()

    def after_frame(self, side: Side) -> None:
        """As the splice's; and once ``side``'s close frame passed, a policy step that waits on its peer's
        message is cancelled (the message dropped, not counted as sent, as is each later one whose step would
        wait) and the peer is read again: its answer to the close comes at once. Left waiting, the step held the answer
        behind it, unread, until ``close_timeout`` cut the handshake (a delay of a minute held an upstream's
        answer, sent at once, to the client's close for the whole ``close_timeout``: 2 s with 1)."""
        super().after_frame(side)
        peer = cast(_FramedSide, side.peer)
        if side.scanner.close is not None and isinstance(peer.task, asyncio.Task):
            # Cancelled once started (see pump), its message uncounted by _close_step; replaced meanwhile,
            # it sends nothing on if it ends first (_finish).
            asyncio.get_running_loop().call_soon(peer.task.cancel)
            peer.task = None
            peer.pump()  # what it sent behind the message, its answer too, held in the assembler meanwhile
            peer._read_again()

    def _read_out(self, side: Side) -> None:
        """As the splice's, its frames dropped and its policy step cancelled (:meth:`_FramedSide.stop_forwarding`)."""
        framed = cast(_FramedSide, side)
        framed.stop_forwarding()
        if framed.task is None:  # (the next turn's share of a read resumes reading by itself)
            super()._read_out(side)

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task()`` while the connection is open: from :meth:`run` on, or at once if running."""
        self.background.start(task)

    async def send_to_upstream(self, data: Data) -> bool:
        """Send the upstream a message of the gateway's own (an error reply) once it reads; False once closing."""
        await self.upstream.drained()
        if self._closing or not self.upstream.open:
            return False
        payload, opcode = (data.encode(), 1) if isinstance(data, str) else (data, 2)
        self.upstream.transport.write(encode_frame(opcode, payload, mask=True))
        return True

    def policy_close(self, side: Side, close: CloseConnection) -> None:
        """A policy closes: the message's sender gets its code, the other side ``peer_code``.

        Also once the closing has begun (a side's close frame passed, the close wait under way): each side
        no close frame has reached yet gets the policy's, and the wait ends there, as for a bad frame then
        (``_fail_while_closing``). It used to drop the message alone and wait on to the wait's bounds
        (``CLOSE_WAIT_LOOKS`` looks while the client took in the stream), the client answered then with
        the close it had asked for."""
        codes = (close.code, close.detail, close.peer_code, close.peer_reason)
        client_code, client_reason, upstream_code, upstream_reason = codes if side.client else (*codes[2:], *codes[:2])
        if not self._closing:
            self._gateway_close(client_code, client_reason, upstream_code, upstream_reason)
            return
        self.gateway_closing = True  # from here on, what either side sends ends its part
        for target, code, reason in ((self.client, client_code, client_reason),
                                     (self.upstream, upstream_code, upstream_reason)):  # fmt: skip
            if target.peer.scanner.close is None:  # no close frame of its peer's reached it
                target.write_close(code, reason)
        if isinstance(side, _FramedSide):
            side.stop_forwarding()  # what the offender sends on goes nowhere
        for target in (self.client, self.upstream):
            if target.close_sent or target.peer.scanner.close is not None:  # it has its close frame
                self._end_towards(target)

    def failed(self) -> None:
        """A bug (not a policy's failure, which closes with 1011 by itself): logged, both sides 1011."""
        logger.exception("frame relay failed; closing both sides with 1011")
        with contextlib.suppress(Exception):
            self._gateway_close(1011, "gateway error", 1011, "gateway error")


__all__ = ["FramedRelay"]
