"""websockets' asyncio client connection as the gateway runs it, under the ``ws://``/``wss://`` connector.

:class:`GatewayClientConnection` is the asyncio protocol ``connect()`` creates: it reads the
handshake's answer past interim responses and holds a refusal until its body is in, parses a large
read a share per loop turn, joins a fragmented message as it comes (each fragment but the last
counting ``FRAGMENT_FLOOR`` bytes at least toward ``max_size``, as on the splice and the frame relay),
tells the protocol of the transport's flow control, charges the keepalive only for silence the
upstream chose, and is over when the WebSocket is, not when TCP is (the socket then lingers until
the upstream closes it, within ``close_timeout``); while the relay leaves its messages unread, it sees
the upstream's TCP end (and so its close frame) within ``close_timeout`` of its coming in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import sys
from collections.abc import Awaitable, Generator
from typing import Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.messages import Assembler
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidMessage, PayloadTooBig
from websockets.frames import CONT, DATA_OPCODES, CloseCode, Frame
from websockets.protocol import Protocol, State

from ..fragment_floor import FRAGMENT_FLOOR
from ..held_pings import HeldPings
from ..loop_watch import BYTES_PER_TURN, ReadShares
from ..progress import peer_ended, taken_in
from ..redact import redact_text
from ..turn_frames import FramesPerTurn
from .deflate_streams import ClientDeflate
from .frame_headers import fail_at_waiting_header, rule_before_size
from .interim import UnreadableHead
from .refusal import HeldRefusal, MalformedLength, is_refusal, without_body
from .response_head import MAX_HEAD, AnswerHead

logger = logging.getLogger("asgi_ws_gateway.upstream.websockets_client")
"""The ``ws://`` connector's one logger, whichever of its modules writes the line."""


class UnlinkedParserFailure(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) unlinked from its
    parser and from what that parser failed on, so that nothing of a connection that is over is left
    in a reference cycle: its memory is freed at its end.

    websockets' protocol holds its parser, a generator whose frame holds the protocol, and keeps
    what the parser failed on (``parser_exc``) with its traceback, whose frames hold the protocol
    too and, for a compressed message over the limit, ``PerMessageDeflate.decode``'s output: the
    limit's size. Each cycle, with the protocol's inflater, deflater and buffers, waited for a
    collection of the oldest generation, which ``run``'s collector makes rare (docs/performance.md):
    2,000 compressed bombs from clients grew a relay worker by 1.6 GB, 2,000 ordinary relayed
    connections by 116 MB (``tests/test_attack_relay_inflate_memory.py``). A parser failure is kept
    without its traceback (its type and message stay), and :meth:`forget_parser` ends the parser.
    """

    @property
    def parser_exc(self) -> Exception | None:
        return self.__dict__.get("parser_exc")  # kept where websockets keeps it (an instance swapped in)

    @parser_exc.setter
    def parser_exc(self, exc: Exception | None) -> None:
        if exc is not None:
            exc.__traceback__ = None
        self.__dict__["parser_exc"] = exc

    def forget_parser(self) -> None:
        """The connection is over (its transport lost): a parser that holds nothing takes the place
        of websockets' own, and drops whatever it is still fed."""
        self.parser = _read_nothing()
        next(self.parser)


def _read_nothing() -> Generator[None]:
    while True:
        yield


class FragmentsOverLimit(PayloadTooBig):
    """A fragmented message whose fragments count past the limit (each but the last ``FRAGMENT_FLOOR``
    bytes at least): a :exc:`PayloadTooBig` as websockets' own, so the connection fails with 1009."""

    def __init__(self, limit: int) -> None:
        super().__init__(None, limit)
        self.limit = limit  # websockets' parser adds the message's size so far to max_size

    def __str__(self) -> str:
        return f"message exceeds limit of {self.limit} bytes ({FRAGMENT_FLOOR} per fragment at least)"


class FragmentFloor(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) that counts each
    fragment of a message but its last as ``FRAGMENT_FLOOR`` bytes at least toward ``max_size``, the
    rule of the splice and the frame relay: a fragment over the limit that way fails the connection
    with 1009 (:exc:`FragmentsOverLimit`), before it is an event. The relay's two legs share it: this
    connector's client protocol and the gateway's server protocol (``server/websocket.py``)."""

    def recv_frame(self, frame: Frame) -> None:
        short = FRAGMENT_FLOOR - len(frame.data)
        if short <= 0 or frame.fin or frame.opcode not in DATA_OPCODES:
            super().recv_frame(frame)  # what nearly every frame is
            return
        limit = self.max_message_size
        size = self.current_size if frame.opcode is CONT else 0  # None: websockets' ProtocolError follows
        if limit is not None and size is not None and size + FRAGMENT_FLOOR > limit:
            raise FragmentsOverLimit(limit)
        super().recv_frame(frame)
        self.current_size = (self.current_size or 0) + short


class RulesBeforeSize(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) that fails a frame whose
    header breaks a framing rule as the protocol error it is (1002, the rule's words) when the header also
    announces more than ``max_size``, as the splice and the frame relay do: websockets' parser compares the
    length with ``max_size`` before the rules on the rest of the header, and failed a long ping, a reserved
    bit, a data frame where a continuation was due, or a 64-bit length with its top bit set (RFC 6455 §5.2:
    it MUST be 0) as a message too big (1009; the relay told the client 1001)."""

    def fail(self, code: int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:  # called from the parser's ``except PayloadTooBig``
            exc = sys.exception()
            problem = rule_before_size(self, exc) if isinstance(exc, PayloadTooBig) else None
            if problem is not None:
                code, reason = CloseCode.PROTOCOL_ERROR, problem
        super().fail(code, reason)


class _ClientProtocol(UnlinkedParserFailure, RulesBeforeSize, FramesPerTurn, FragmentFloor, HeldPings, ClientDeflate):
    """websockets' client protocol, parsing ``FRAMES_PER_TURN`` frames a turn at most (:mod:`..turn_frames`),
    owing one pong to an upstream that pings while it reads nothing (and one a read to one that pings and reads),
    remembering that it failed the connection (whoever found the fault: the parser, ``recv()``'s
    UTF-8 check, the keepalive), keeping no traceback of a parser failure, counting tiny
    fragments at ``FRAGMENT_FLOOR``."""

    failed = False

    def fail(self, code: int, reason: str = "") -> None:
        super().fail(code, reason)
        self.failed = True


class MalformedAnswer(InvalidMessage):
    """The upstream's answer to the handshake breaks the gateway's head rule (``response_head``): the
    connector's 502 says how."""

    def __init__(self, problem: UnreadableHead) -> None:
        super().__init__(f"the upstream {problem}")
        self.problem = problem


_SWITCHING = b"HTTP/1.1 101 "
"""How a 101's status line starts once ``AnswerHead.as_http11`` wrote it."""

_LINGER_WITHOUT_TIMEOUT = 10.0
"""Seconds a finished upstream socket is kept for the upstream to close it when no close_timeout is set."""


def _nothing() -> None:
    pass


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark ``task``'s exception retrieved: whoever waited for it may have stopped waiting."""
    if not task.cancelled():
        task.exception()


class _JoinedMessages(Assembler):
    """websockets' receive queue, given whole messages: a fragmented one is joined as it comes, into
    one buffer, and queued once its last fragment is in.

    websockets' ``Assembler`` queued each fragment and refused a message of more than
    ``websockets.asyncio.messages.MAX_FRAGMENTS`` (4,096) of them with 1009 "too many fragments": a
    message of 320,000 bytes in 64-byte fragments, under a 1 MiB limit, which the splice and the frame
    relay deliver. The size limit (:class:`FragmentFloor`) bounds the buffer, and the number of
    fragments; the queue's flow control counts messages.
    """

    _parts: bytearray | None = None  # the fragments of the message being joined
    _opcode = CONT

    def put(self, frame: Frame) -> None:
        parts = self._parts
        if parts is None:
            if frame.fin:
                super().put(frame)  # what nearly every message is
                return
            self._opcode, self._parts = frame.opcode, bytearray(frame.data)
            return
        parts += frame.data
        if frame.fin:
            self._parts = None
            super().put(Frame(self._opcode, parts))

    def close(self) -> None:
        self._parts = None  # a message cut short: its fragments go with the connection
        super().close()


class _Lingering(asyncio.Protocol):
    """The TCP connection of a WebSocket that is over, until the upstream closes it or the deadline passes.

    What the upstream still sends is discarded; at its EOF the transport is closed, at the deadline
    aborted. ``closed`` is done once the transport is.
    """

    def __init__(self, transport: asyncio.Transport, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        if deadline is None:  # close_timeout: None (wait for ever) would keep a socket per such upstream
            deadline = loop.time() + _LINGER_WITHOUT_TIMEOUT
        self._timer = loop.call_at(deadline, transport.abort)
        transport.set_protocol(self)
        transport.resume_reading()  # the client may have paused it (a full receive queue): EOF must get in

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)


class GatewayClientConnection(ClientConnection):
    """The asyncio client connection, with :class:`_ClientProtocol` told of the transport's flow control,
    and over when the WebSocket is, not when TCP is.

    websockets' client waits for the server to close TCP after the closing handshake (RFC 6455
    §7.1.1) or after failing the connection, and only then ends ``recv()``; its ``close_timeout``
    is enforced only while a ``send``/``close`` waits. An upstream that keeps the socket open
    would hold the relay (and the client, and a connection slot) until a keepalive ping failed, or
    for ever. So once the upstream's close frame arrived (and the echo went out), or the
    connection was failed (a protocol error: our close frame went out), the transport is handed
    to :class:`_Lingering` and the connection is reported lost: ``recv()`` ends (after the
    messages already received), ``send`` raises, and ``close`` waits for the TCP connection to end,
    by the upstream's hand or at ``close_timeout`` from the close.

    Attributes:
        max_head: bytes of the answer's head read at most, interim responses included (a class with
            another: :meth:`reading_heads_of`).
    """

    max_head = MAX_HEAD

    @classmethod
    @functools.cache  # one class per limit (a gateway has one): websockets takes a class, not a factory
    def reading_heads_of(cls, max_head: int) -> type[GatewayClientConnection]:
        """This connection, reading answers' heads of up to ``max_head`` bytes."""
        if max_head == cls.max_head:
            return cls
        return type(cls.__name__, (cls,), {"max_head": max_head, "__module__": cls.__module__})

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        protocol.__class__ = _ClientProtocol  # only methods differ: the instance keeps its state
        super().__init__(protocol, **kwargs)
        self.lingering: _Lingering | None = None
        self._receiving = False
        # Until the answer's head is in and read by the splice's rule (response_head): websockets took
        # an interim response (100 Continue, 103 Early Hints) before the 101 for a refusal, and its own
        # rule (128 header lines, 1 to 18 digits of status) made a 502 of what the splice relayed.
        self._reading: AnswerHead | None = AnswerHead(self.max_head)
        self._head = bytearray()
        # Then a refusal, held back until its body is in, cut as the splice cuts it: websockets failed
        # the handshake on a body over 1 MiB, a 502 counted against a backend that had answered 403.
        self._answering = True
        self._refusal: HeldRefusal | None = None
        self._shares: ReadShares | None = None  # a large read's frames, a share per loop turn
        self.keepalive_failed = False  # the upstream answered no ping in ping_timeout: it sent no close
        self.stalled = False  # ... nor took in the ping: what was queued to it stayed unread (the splice's stall)
        self._unread = False  # the relay left messages unread (reading paused) since the keepalive's last ping
        self._heard = False  # the upstream sent bytes since the keepalive's last ping: alive, answered or not
        self._end_look: asyncio.TimerHandle | None = None  # while reading is paused: has the upstream's TCP ended?

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if self._answering:  # the handshake's answer (one test per message after it)
            data = self._answer(data)
            if not data:
                return
        shares = self._shares
        if (shares is not None and shares.waiting) or len(data) > BYTES_PER_TURN:
            (shares or self._read_shares()).add(data)
            return
        if rest := self._parse(data):  # FRAMES_PER_TURN parsed or INFLATED_PER_TURN inflated: the rest next turn
            (shares or self._read_shares()).add(rest)

    def _read_shares(self) -> ReadShares:
        """A large read's frames, parsed a share per loop turn (websockets parses a read whole: a hostile
        upstream's 256 KiB of tiny frames held every connection of the worker 0.25 s). Nothing after the
        close frame (or a failure) is read; reading resumes unless the relay has messages enough to take."""
        transport = self.transport

        def live() -> bool:
            return self.lingering is None and not transport.is_closing()

        self._shares = ReadShares(
            transport, self._parse, live=live, may_read=lambda: live() and not self.recv_messages.paused
        )
        return self._shares

    def _parse(self, data: bytes) -> bytes:
        """Parse ``data``'s frames, up to the ``FRAMES_PER_TURN``-th or the one that inflates the
        ``INFLATED_PER_TURN``-th byte of compressed messages in this call: the bytes after it are returned,
        to parse next turn."""
        protocol = cast(_ClientProtocol, self.protocol)
        if (inflating := protocol.inflating) is not None:
            inflating.start_share()
        self._receiving = True  # its send_data must not hand over before the frames are processed
        try:
            super().data_received(data)
        finally:
            self._receiving = False
        inflating = protocol.inflating  # maybe negotiated by this feed: the 101 and the first frames in one read
        rest = protocol.rest_of_turn() + (b"" if inflating is None else inflating.rest_of_share())  # one at most
        if fail_at_waiting_header(self.protocol):  # a bad header whose payload is still to come (frame_headers)
            if self.close_deadline is None and self.close_timeout is not None:  # as websockets sets it on a failure
                self.close_deadline = self.loop.time() + self.close_timeout
            self.send_data()  # the close frame; the transport is handed over (failed), to linger to the deadline
            return b""
        if self.protocol.handshake_exc is not None and not self.transport.is_closing():
            # The answer failed the handshake (a head or a refusal's body over websockets' limits, a
            # bad 101): websockets waited for the upstream's EOF to report it, and an upstream that
            # kept sending held the handshake to connect_timeout (a 504, not the 502 it is).
            self.transport.abort()
            return b""
        self._linger_if_over()
        return rest if self.lingering is None else b""  # over: what follows is dropped (the transport lingers)

    def _answer(self, data: bytes) -> bytes:
        """What websockets may read of the answer so far: its head whole and checked, a refusal whole."""
        if self._reading is not None:
            data = self._read_head(data)
            if not data:
                return b""
        refusal = self._refusal
        if refusal is None:
            if data.startswith(_SWITCHING):  # a 101, as most are, passes at once
                self._answering = False
                return data
            if not is_refusal(data):  # a 200, a 302: a 502 at once, its body unread
                self._answering = False
                return without_body(data)
            refusal = self._refusal = HeldRefusal()
        try:
            data = refusal.feed(data)
        except MalformedLength as exc:
            self._fail_handshake(UnreadableHead(f"refused with {exc}"))  # as the splice words it
            return b""
        self._answering = not refusal.settled
        return data

    def eof_received(self) -> None:
        if self._reading is not None:  # websockets would be handed nothing of the head cut short
            self._fail_handshake(UnreadableHead("closed the connection before its response head ended"))
            return
        if self._answering and self._refusal is not None and (held := self._refusal.eof()):
            self._answering = False
            self._parse(held)  # the refusal's body ended with the connection (no 101: nothing inflated)
        super().eof_received()

    def _read_head(self, data: bytes) -> bytes:
        """Nothing while the answer's head is to come, then all of it (past the interim responses, dropped,
        its status line as websockets reads it) and what followed it; a head that breaks the rule
        fails the handshake at once."""
        head, reading = self._head, self._reading
        assert reading is not None
        head += data
        try:
            if not reading.feed(head):
                return b""
        except UnreadableHead as exc:
            self._fail_handshake(exc)
            return b""
        self._reading, self._head = None, bytearray()
        return reading.as_http11(head)

    def _fail_handshake(self, problem: UnreadableHead) -> None:
        """Fail the handshake as websockets fails an answer it cannot parse (its parser then discards
        what comes), with the gateway's word for what is wrong, and drop the upstream leg."""
        self._reading, self._answering = None, False
        protocol = self.protocol
        protocol.handshake_exc = MalformedAnswer(problem)
        protocol.send_eof()
        protocol.parser = protocol.discard()
        next(protocol.parser)
        if not self.transport.is_closing():
            self.transport.abort()  # connection_lost: the handshake raises handshake_exc

    def send_data(self) -> None:
        super().send_data()
        # A failure found outside data_received: a text message that is not UTF-8 (recv() fails the
        # connection with 1007) or a keepalive timeout. websockets then waited close_timeout for the
        # upstream's TCP close inside recv(), and the client heard nothing until then.
        if not self._receiving:
            self._linger_if_over()

    def _linger_if_over(self) -> None:
        """Hand the transport over once the WebSocket is over: the upstream's close frame is in, or
        the connection was failed (our close frame is out)."""
        protocol = self.protocol
        if protocol.state is not State.CLOSING or self.lingering is not None:
            return  # open, as for every message: one test
        if protocol.close_rcvd is None and not cast(_ClientProtocol, protocol).failed:
            return
        if self.keepalive_task is not None and asyncio.current_task() is self.keepalive_task:
            # The keepalive failed the connection and waits for connection_lost(), which cancels it.
            # Lost from inside the task, the cancellation never landed: websockets' keepalive went on
            # to log "keepalive ping failed" at ERROR with an AssertionError's traceback, per connection.
            self.loop.call_soon(self._linger_if_over)
            return
        if self.connection_lost_waiter.done():
            return  # the transport ended meanwhile (a deferred hand-over)
        self.lingering = _Lingering(self.transport, self.close_deadline)
        self.connection_lost(None)  # the transport now reports to the lingering protocol only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        messages = self.recv_messages
        messages.__class__ = _JoinedMessages  # only methods differ: the instance keeps its state
        pause = messages.pause

        def pause_and_note() -> None:
            self._unread = True
            pause()
            self._look_for_the_end_later()

        messages.pause = pause_and_note

    def _look_for_the_end_later(self) -> None:
        if self._end_look is None:
            every = self.close_timeout if self.close_timeout is not None else _LINGER_WITHOUT_TIMEOUT
            self._end_look = self.loop.call_later(every, self._look_for_the_end)

    def _look_for_the_end(self) -> None:
        """Every ``close_timeout`` while the relay has messages enough to take (reading paused): the upstream's
        close frame, its FIN or its reset waits unread in the kernel behind them. Once its TCP is over (the
        kernel's state says so: :func:`..progress.peer_ended`), the rest is read, past the queue's bound (no
        more than the kernel holds: the upstream sends nothing after its FIN), for its end to be seen: the
        relay then bounds the client's backlog by the close wait. Before, an upstream that closed behind a
        backlog to a client reading nothing was never seen to end with the keepalive off (its close unread,
        its reset at its own close_timeout unseen): the connection was held for as long as the client lived."""
        self._end_look = None
        messages = self.recv_messages
        if not messages.paused or self.lingering is not None or self.connection_lost_waiter.done():
            return  # reading again (or over): a later pause looks again
        if not peer_ended(self.transport):
            self._look_for_the_end_later()
            return
        messages.high = messages.low = None  # no pause from here: what is left is bounded by the kernel's buffer
        messages.paused = False
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reading is not None and isinstance(exc, ssl.SSLError):
            # A TLS alert where the answer was due (``certificate_required``: the upstream wants a client
            # certificate), named as the splice names it; websockets said "did not receive a valid HTTP response".
            why = redact_text(str(exc))
            self._fail_handshake(UnreadableHead(f"closed the connection before its response head ended: {why}"))
        super().connection_lost(exc)
        # What points back at this connection goes (the receive queue's pause, a large read's shares,
        # the parser): each was a reference cycle that kept the connection until a full collection.
        self.recv_messages.pause = _nothing
        self._shares = None
        if self._end_look is not None:
            self._end_look.cancel()
            self._end_look = None
        cast(_ClientProtocol, self.protocol).forget_parser()

    async def keepalive(self) -> None:
        """websockets' keepalive, charging the upstream only for silence it chose.

        websockets waited for the pong from when the ping was written, and wrote it only once the
        write buffer drained: an upstream that reads nothing (frozen, its socket open) was never found
        dead, and one the gateway did not read (the client reads slowly: the relay's queue is full)
        was failed with its pong unread. Here ``ping_timeout`` starts with the ping, its wait to be
        written included, and a round in which the gateway paused reading the upstream is not held
        against it, nor one in which it sent bytes (as the splice and the relay's client leg judge a
        side): its pong cannot leave before the end of a frame it is sending, and an upstream sending
        one large message over a slow link (or trickling it) was dropped with 1011 where the splice and
        the frame relay kept it.
        """
        assert self.ping_interval is not None
        timeout = self.ping_timeout
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                if timeout is None:
                    await self.ping()
                    continue
                self._heard = False
                pong = await self._ping_written(timeout)
                if pong is None:
                    await self._fail_keepalive("read nothing (its ping could not be written)", stalled=True)
                    return
                while True:
                    self._unread = self.recv_messages.paused
                    try:
                        async with asyncio.timeout(timeout):
                            await asyncio.shield(pong)
                        break
                    except TimeoutError:
                        if self._heard:
                            break  # it sent bytes since the ping: alive, its pong maybe behind a frame it sends
                        if not (self._unread or self.recv_messages.paused):
                            await self._fail_keepalive("did not answer a ping")
                            return
        except ConnectionClosed:
            pass  # closed meanwhile: recv() reports it
        except Exception:  # a bug, not a peer's fault (websockets' own safety net)
            self.logger.error("keepalive ping failed", exc_info=True)

    async def _ping_written(self, window: float) -> Awaitable[float] | None:
        """A keepalive ping, once written (its pong's waiter); None when the upstream took in nothing of what
        waits for it in a ``window`` (``ping_timeout`` seconds): the splice's stall rule. One that reads slowly
        but steadily keeps the writes paused for long (the kernel's send buffer frees space in large gulps),
        and a ping given one window to be written dropped it as "read nothing" while it made progress."""
        writing = asyncio.ensure_future(self.ping())
        # A ping that fails (the connection ended) as the keepalive is cancelled, by the same connection_lost, was
        # left unretrieved: asyncio logged "Task exception was never retrieved" with a traceback, at ERROR.
        writing.add_done_callback(_retrieved)
        try:
            while True:
                taken = taken_in(self.transport)
                done, _ = await asyncio.wait({writing}, timeout=window)
                if done:
                    return writing.result()
                if taken_in(self.transport) <= taken:
                    return None
        finally:
            if not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await writing

    async def _fail_keepalive(self, why: str, *, stalled: bool = False) -> None:
        """Fail the connection with 1011 "keepalive ping timeout" (the close frame may never leave a full
        buffer: it is not waited for), then wait to be cancelled by ``connection_lost``."""
        if self.protocol.state is State.OPEN:
            logger.info("relay: the upstream %s in %g s; dropping it", why, self.ping_timeout)
            self.keepalive_failed, self.stalled = True, stalled
            if self.close_timeout is not None:
                self.close_deadline = self.loop.time() + self.close_timeout
            self.protocol.fail(1011, "keepalive ping timeout")
            self.send_data()  # hands the transport over to _Lingering in the next loop turn
        await asyncio.shield(self.connection_lost_waiter)

    def start_keepalive(self) -> None:
        # A close frame (or a bad frame) in the same read as the 101 ends the connection before
        # connect() starts the keepalive: a task that pinged a dead connection ping_interval later
        # and logged "keepalive ping failed" with a traceback, at ERROR.
        if self.lingering is None:
            super().start_keepalive()

    async def send(self, message: Any, **kwargs: Any) -> None:
        if self.lingering is not None:  # websockets would abort the transport handed over
            raise self.protocol.close_exc
        await super().send(message, **kwargs)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.lingering is None:
            # websockets bounds its wait for the upstream's answer by close_timeout, not the write of the
            # close frame before it: an upstream that reads nothing held close(), and a send waiting on
            # the same full buffer, until the keepalive failed (40 s by default; never without one).
            due = None if self.close_timeout is None else self.loop.call_later(self.close_timeout, self._unwritten)
            try:
                await super().close(code, reason)  # may end with the upstream's close frame: handed over
            finally:
                if due is not None:
                    due.cancel()
        if self.lingering is not None:
            await asyncio.shield(self.lingering.closed)

    def _unwritten(self) -> None:
        """``close_timeout`` after a close began: drop an upstream still not reached (its close unanswered,
        or never written), as websockets drops one that does not answer in time."""
        if self.lingering is None and not self.connection_lost_waiter.done():
            self.transport.abort()

    def pause_writing(self) -> None:
        super().pause_writing()
        cast(_ClientProtocol, self.protocol).writes_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if cast(_ClientProtocol, self.protocol).writes_resumed():
            self.send_data()


__all__ = [
    "FRAGMENT_FLOOR",
    "FragmentFloor",
    "FragmentsOverLimit",
    "GatewayClientConnection",
    "RulesBeforeSize",
    "UnlinkedParserFailure",
]
