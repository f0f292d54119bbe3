"""Passthrough: after the handshake, splice the client's and the upstream's TCP streams.

Bytes are copied as they arrive, in both directions, by two asyncio protocols; a
:class:`~asgi_ws_gateway.passthrough.frames.FrameScanner` per direction reads the frame headers for the
counters and the close frames. Backpressure: when one transport's write buffer passes its high
water mark, the other side's reading pauses until it drains, so nothing queues without bound.

Closing follows the relay's table as far as bytes allow:

* a close frame from either side passes through as it is (the upstream's reason without the credentials
  the gateway sent it: ``Side.close_without_credentials``); its code is recorded, and once the
  upstream's TCP connection ends (the server ends it first), or the upstream's close frame answers
  the client's, the client's is closed too. A bad frame (or a message over the limit) instead of that
  answer is the gateway's close to whichever side has none yet (``_fail_while_closing``). A close
  frame with a code no peer may send (RFC 6455 §7.4: below 1000, 1004-1006, 1015-2999, 5000 and
  up), a one-byte payload or a reason that is not UTF-8 is a bad frame (below), never forwarded;
* a side that sends its close frame and then its FIN (a half-close: after that frame it may send
  nothing anyway, RFC 6455 §5.5.1) has not vanished: it still reads, and once the answer (its peer's
  close frame, or the gateway's at the close wait's end) is written to it, it is closed
  (:meth:`Side.close_if_done`). Closed at its FIN, a client read EOF and no close frame (1006), the
  upstream's answer a moment late. A FIN with no close frame before it is a vanished side, as is any
  FIN over TLS (no half-close there);
* the client vanishes without a close frame: the upstream gets 1001 "client went away", as from
  the relay, and is read (and dropped) again even if a full client buffer had paused it, so its
  answer arrives and its TCP connection is closed at once instead of at the close timeout;
* the upstream vanishes: the client gets 1011 "upstream connection failed" (none inside a frame the
  upstream left unfinished); after the client's own close frame, which it never answered, the client's
  code and reason echoed, as the relay answers it (and the upstream's, to an upstream whose close frame
  a vanished client never answered; and at the close wait's end, to a side whose peer stayed silent);
* a side that may still be sending (acks, pongs) when its peer ends first is read and dropped until
  it answers its close frame or closes (half-closed when it has no close frame to answer), never
  closed: a reset lost what was still queued to it (``_end_towards``);
* a side sends a frame that breaks the framing rules (``FrameScanner.error``): the frame is not
  forwarded; a client gets 1002 (1007 for a close reason that is not UTF-8) and the upstream the
  same code and reason, as uvicorn and the relay do; an upstream gets 1002 (1007) and the client
  1011 "upstream connection failed". What the refused side (this one, or one over the size limit)
  still sends is read and dropped, and it is half-closed after its close frame: its TCP close ends
  it (``close_timeout`` at most), where closing its socket reset a side still sending; past
  ``REFUSED_BYTES`` (16 MiB) after its refusal it is closed (:meth:`Side.read_out_refused`), where
  one that flooded had GBs read from it a second, all of ``close_timeout``;
* the gateway closes (oversize message, idle, lifetime, drain, management): its own close frame
  to each side (masked towards the upstream) and nothing more is forwarded; a side in the middle
  of receiving a frame gets the rest of that frame first (a close frame cannot land inside a
  payload), bounded by ``close_timeout``; only when the frame's sender is gone does it get none:
  it is half-closed and read out instead (``_end_towards``), never closed;
* keepalive: a side that sent nothing for ``ping_interval`` seconds gets a ping from the gateway
  (its pong is taken out of the stream, never forwarded); one that then sends nothing for
  ``ping_timeout`` seconds is dead: its connection is aborted and the other side closed as if it
  had vanished (1001 "client went away" upstream, 1011 "upstream connection failed" to the client).
  Silence counts only while the gateway reads that side: one it does not read (because its peer
  reads nothing) is not charged. The side that reads nothing is: once the gateway's writes to it
  pause, it must take in some of what is queued to it within each ``ping_timeout`` seconds, or it is
  dropped the same way (a stall: no progress, not a slow reader, whose writes may stay paused for
  long while the kernel's send buffer drains). Nor is a side charged for a pong while bytes written
  before its ping are still on their way to it: it is judged by that progress instead.
  The access line records a stall as the gateway's close (reason ``client read nothing`` or
  ``upstream read nothing``); a side that did not answer a ping as its own 1006 (reason
  ``did not answer a ping``).

The gateway closes the upstream's TCP connection as soon as the upstream answers a close frame the
gateway sent; every closing handshake is bounded by ``close_timeout``, counted as the stall rule counts
(``_expire``): at ``close_timeout`` from the close, and at each ``close_timeout`` after, the handshake
waits on while bytes are still on their way to a side that took some of them in since the last look (a
slow reader still reading its backlog, the close frame behind it), and both sides are aborted once none
is, or one that bytes wait for took in nothing. Progress counts for a backlog, not for a stream fed on
past the close: the wait ends at the look after a side took in more than
:data:`..relay.close_wait.CLOSE_WAIT_BYTES` (and a message) since the close began, and at
:data:`..relay.close_wait.CLOSE_WAIT_LOOKS` looks whatever the progress. At the
server's shutdown (1012) it is ``close_timeout`` from there, progress or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .._types import Data, Message
from ..relay.close_wait import CloseWait
from ..relay.stats import RelayStats
from .asgi_extension import ACCEPT
from .frame_encoding import encode_frame
from .frames import FrameScanner
from .raw_upstream import RawUpstream
from .sides import Side, ping_payload

if TYPE_CHECKING:
    from ..upstream.close_secrets import SentCredentials

logger = logging.getLogger(__name__)


class Splice:
    """Copies bytes both ways between a client transport and a :class:`RawUpstream`.

    Offers what the relay offers (``stats``, ``finished``, :meth:`run`, :meth:`close`,
    :meth:`abort`, :meth:`send_to_client`), so lifecycle, management and telemetry treat both alike.

    Args:
        upstream: the upstream connection, handshake done.
        max_message_size: payload bytes one message may carry, each way.
        close_timeout: seconds a closing handshake may take before both connections are aborted.
        sent: the credentials the gateway sent the upstream, taken out of its close reason.
    """

    def __init__(
        self,
        upstream: RawUpstream,
        *,
        max_message_size: int,
        close_timeout: float,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        sent: SentCredentials | None = None,
    ) -> None:
        slots = max_message_size.bit_length() + 1
        self.stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
        self.finished = asyncio.Event()
        """Set when both TCP connections are closed."""
        self.gateway_closing = False
        self.client_over = asyncio.Event()
        """Set when the client's connection is over for the client (the gateway closed it, or it vanished),
        while the sockets may still linger: what the client holds (its concurrency lease) may go."""
        self._closing = False
        # Asked once (the upstream's, if it knows it): each asking is a getpid() call on Python 3.11.
        self._loop = upstream.loop or asyncio.get_running_loop()
        # What run() waits on: a future of that loop (an Event's wait() asks for the loop again, and
        # queues a future of its own); ``finished`` is set with it, for whoever else waits.
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._close_timeout = close_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._max_message_size = max_message_size  # (the close wait's byte bound has one message besides)
        self._shutting_down = False  # the server's shutdown: the close wait is ``close_timeout``, progress or not
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._upstream_raw = upstream
        self.client, self.upstream = self._sides(max_message_size)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.upstream.sent = sent
        self._ping_payload: bytes | None = None if ping_interval is not None else b""

    @property
    def ping_payload(self) -> bytes:
        """The payload of this connection's keepalive pings (random: no endpoint's own ping can carry it);
        empty without keepalive. Drawn when first asked for (the first ping, most connections never
        get one: a ``getrandom`` call per handshake saved), and only then are pongs carrying it taken
        out of the stream: none can answer a ping not yet sent."""
        payload = self._ping_payload
        if payload is None:
            payload = self._ping_payload = ping_payload()
            self.client.scanner.pong = self.upstream.scanner.pong = payload
        return payload

    def _sides(self, max_message_size: int) -> tuple[Side, Side]:
        """The client's side and the upstream's."""
        extensions = self._upstream_raw.extensions
        scan_in = FrameScanner(self.stats, inbound=True, max_message_size=max_message_size, extensions=extensions)
        scan_out = FrameScanner(self.stats, inbound=False, max_message_size=max_message_size, extensions=extensions)
        scan_in.answers, scan_out.answers = scan_out, scan_in  # pongs answer the other way's pings (ping_window)
        return Side(self, scan_in, client=True), Side(self, scan_out, client=False)

    def accept_message(self) -> Message:
        """The ASGI message that completes the client's handshake and hands its transport over."""
        raw = self._upstream_raw
        return {"type": ACCEPT, "subprotocol": raw.subprotocol, "headers": raw.response_headers,
                "extensions": raw.extensions, "protocol": self.client, "on_started": self._start,
                "on_shutdown": self._server_shutdown}  # fmt: skip

    def _start(self) -> None:
        """The server handed the client transport over: start copying."""
        raw = self._upstream_raw
        raw.transport.set_protocol(self.upstream)
        self.upstream.connection_made(raw.transport)
        leftover, ended = raw.leftover, raw.ended()
        raw.release()
        if not ended:
            # Before the bytes (as the client's early data): what they pause stays paused. Resumed after
            # them, an upstream whose bytes behind its 101 filled the client's buffer was read on without
            # bound (the client's transport asks for the pause once).
            raw.transport.resume_reading()
        if leftover:
            self.upstream.data_received(leftover)
        if ended:
            # The upstream ended between its 101 and now: connection_lost went to the old protocol.
            self.upstream.open = False
            self.lost(self.upstream)
        if self._ping_interval is not None:
            self._keepalive_timer = self._loop.call_later(self._ping_interval, self._keepalive)

    def _keepalive(self) -> None:
        """Every ``ping_interval``: ping each side that sent nothing since the last round.

        A timer, not a task: an idle spliced connection holds no coroutine. A side the gateway does
        not read (its peer reads nothing: backpressure; a policy step) is not charged for its silence:
        its pong would wait behind what the gateway leaves unread. A peer that stays so is dropped by
        :meth:`writes_stalled` instead.
        """
        if self._closing:
            return
        loop = self._loop
        for side in (self.client, self.upstream):
            if side.ping_due is not None:
                continue  # a ping is waiting for its answer
            if side.heard or not side.transport.is_reading():
                side.heard = False
            elif side.write_ping() and self._ping_timeout is not None:
                side.ping_due = loop.call_later(self._ping_timeout, self._ping_expired, side)
        assert self._ping_interval is not None
        self._keepalive_timer = loop.call_later(self._ping_interval, self._keepalive)

    def _ping_expired(self, side: Side) -> None:
        side.ping_due = None
        if side.heard or (side.open and not side.transport.is_reading()):  # alive, or not read meanwhile
            side.heard = False
            return
        if not side.open or self._closing:
            return
        if side.write_paused or side.undelivered():
            # The ping may still wait behind bytes written before it (MBs, in the kernel's send buffer,
            # for a client reading 1 MB/s): the side is judged by how they drain, not by its pong.
            self.writes_stalled(side)
            return
        logger.info("passthrough: the %s did not answer a ping in %g s; dropping it", _name(side), self._ping_timeout)
        side.dropped = "did not answer a ping"
        side.transport.abort()  # connection_lost follows: the peer is closed as for a vanished side

    def writes_stalled(self, side: Side) -> None:
        """Bytes wait for ``side`` (the gateway's writes to it paused, or a ping's answer is late behind
        them): it must take some of them in within every ``ping_timeout``. Its peer, unread meanwhile,
        could not answer a ping: the one to blame is ``side``."""
        if self._ping_interval is None or self._ping_timeout is None or side.stall_due is not None:
            return
        side.progress = side.taken_in()
        side.stall_due = self._loop.call_later(self._ping_timeout, self._check_progress, side)

    def writes_flowing(self, side: Side) -> None:
        """``side`` reads again; its peer, read again, is heard from now (its pong may be on its way)."""
        if side.stall_due is not None:
            side.stall_due.cancel()
            side.stall_due = None
        side.peer.heard = True

    def _check_progress(self, side: Side) -> None:
        """``ping_timeout`` after the last look at ``side``'s progress: a stall is none in that time.

        Not "paused the whole time": a client reading a steady 20 KB/s kept the writes paused for
        minutes, the transport resuming only once its buffer drains below the low-water mark, which
        waits for the kernel's send buffer (up to 4 MB) to free space in large gulps."""
        side.stall_due = None
        if not side.open or self._closing:
            return
        taken = side.taken_in()
        if taken > side.progress:
            side.progress = taken
        elif side.write_paused or side.undelivered():
            logger.info("passthrough: the %s read nothing for %g s (nothing queued to it was delivered); dropping it",
                        _name(side), self._ping_timeout)  # fmt: skip
            side.dropped, side.stalled = f"{_name(side)} read nothing", True
            side.transport.abort()  # connection_lost follows: the peer gets a close frame, as for a vanished side
            return
        if side.write_paused or side.undelivered():
            self.writes_stalled(side)  # the next look, ``ping_timeout`` from now

    def _stop_timers(self) -> None:
        client, upstream = self.client, self.upstream
        for handle in (client.ping_due, client.stall_due, upstream.ping_due, upstream.stall_due, self._timer,
                       self._keepalive_timer):  # fmt: skip
            if handle is not None:
                handle.cancel()
        client.ping_due = client.stall_due = upstream.ping_due = upstream.stall_due = self._keepalive_timer = None

    def _server_shutdown(self) -> None:
        # The close wait's progress rule gives way to the shutdown's bound: ``close_timeout`` from here at
        # most, a close already under way included (its next look aborts what is still open).
        self._shutting_down = True
        self._gateway_close(1012, "server shutting down", 1012, "server shutting down")

    async def run(self) -> RelayStats:
        """Wait until both connections are closed. Cancelling it aborts both."""
        await self._until_closed()
        # Both connections are lost (no callback comes after connection_lost) and nothing of the
        # splice's runs: drop the sides' links back, so that refcounting frees the connection's
        # objects now rather than the garbage collector later (they were ~50 objects in cycles).
        for side in (self.client, self.upstream):
            del side.splice, side.peer, side.transport
            scanner = side.scanner
            if type(scanner) is FrameScanner:  # (the frame relay's assemblers have no peer)
                # Each side's scanner points at the other's (``answers``): a cycle left every handshake
                # two scanners, the stats they count into and its lists for the next collection.
                scanner.answers = None
        return self.stats

    async def _until_closed(self) -> None:
        try:
            await self._ended
        except asyncio.CancelledError:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop both TCP connections now."""
        for side in (self.client, self.upstream):
            if side.open:
                side.transport.abort()
        if not self._closing:
            self._closing = True
            self.stats.closed_by, self.stats.close_code, self.stats.close_reason = "gateway", 1006, "aborted"

    @property
    def closing(self) -> bool:
        """True once the connection's close is under way: the gateway's own (a policy, a drain, the server's
        shutdown), either side's close frame, a side lost or being dropped."""
        return self._closing or any(_going(side) for side in (self.client, self.upstream))

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> bool:
        """Close both sides on the gateway's own initiative; False (a no-op) once closing has started."""
        return self._gateway_close(client_code, client_reason, upstream_code, upstream_reason)

    async def send_to_client(self, data: Data) -> bool:
        """Send the client a message of the gateway's own once it reads (a client that reads nothing
        must not pile them up: a reply per dropped message grew a gateway by 298 MB in 15 s); False when
        not between messages or closing."""
        await self.client.drained()
        scanner = self.upstream.scanner
        if self._closing or not self.client.open or scanner.mid_frame or scanner.in_message:
            return False
        payload, opcode = (data.encode(), 1) if isinstance(data, str) else (data, 2)
        self.client.transport.write(encode_frame(opcode, payload, mask=False))
        return True

    def _gateway_close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> bool:
        """Begin the gateway's close with these codes; False (nothing done) once closing has begun."""
        if self._closing:
            return False
        self._closing = self.gateway_closing = True
        self.stats.closed_by, self.stats.close_code, self.stats.close_reason = "gateway", client_code, client_reason
        self.client.write_close(client_code, client_reason)
        self.upstream.write_close(upstream_code, upstream_reason)
        self._arm_timer()
        return True

    def after_frame(self, side: Side) -> None:
        """``side`` sent a close frame, an oversize message or a bad frame (or data while the gateway
        closes, or while one of its pings is held, or a read larger than its scanner scans at once)."""
        scanner = side.scanner
        peer = side.peer
        if scanner.held_ping is not None:
            side.release_ping()
        if peer.scanner.held_ping is not None:  # (its ping in flight may just have had this side's pong)
            peer.release_ping()
        if peer.pending_close is not None and scanner.sealed and peer.open:
            if not peer.transport.is_closing():  # (a refused side closed at its read-out's bound takes nothing)
                peer.transport.write(peer.pending_close)  # the frame in flight is complete
            peer.pending_close = None
            peer.end_if_refused()
            peer.close_if_done()
        if scanner.too_big or scanner.error is not None:
            side.read_out_refused()  # (once: what it sends from here on is counted there, not scanned)
            if self.gateway_closing:
                # Refused, or it broke a rule while the gateway closes: what it still sends is dropped
                # until it closes its end (close_timeout at most), so that it reads its close frame.
                side.end_if_refused()
            else:
                if scanner.error is not None:
                    logger.info("passthrough: the %s sent a bad frame (%s); closing with %d", _name(side),
                                scanner.error, scanner.error_code)  # fmt: skip
                    code, error = scanner.error_code, scanner.error
                    to_client = (code, error) if side.client else (1011, "upstream connection failed")
                    codes = (*to_client, code, error)
                elif side.client:
                    codes = (1009, "message too big", 1001, "client message too big")
                else:
                    codes = (1001, "upstream message too big", 1009, "message too big")
                if self._closing:  # (a message over the limit too: the client was kept to the close timer)
                    self._fail_while_closing(side, *codes)
                else:
                    self._gateway_close(*codes)
            if scanner.cut:  # it got part of a frame whose rest never comes: no close frame fits
                self._end_towards(peer, cut_short=True)
            return
        if scanner.close is None:
            if scanner.unscanned:  # (after a close frame, nothing it sends matters)
                side.defer_rest()
            return
        peer.close_if_done()  # it sent its close frame and its FIN: this one (written to it) answers it
        if self.gateway_closing or (not side.client and self.upstream.close_sent):
            side.transport.close()  # it answered the gateway's close frame: the handshake is over
            return
        if not self._closing:
            self._closing = True
            code, reason = scanner.close
            self.stats.closed_by = "client" if side.client else "upstream"
            self.stats.close_code, self.stats.close_reason = code, reason
            self._arm_timer()
        elif side.client and (self.stats.closed_by == "upstream" or side.close_sent):
            # The client answered the upstream's close (or the gateway's, the upstream gone): the server
            # ends it. (Not on bytes a client sends after its own close frame: the upstream's answer
            # has yet to reach it.)
            side.transport.close()
        elif not side.client and self.stats.closed_by == "client" and peer.open:
            # The upstream answered the client's close: the handshake is over towards the client, and
            # the server (the gateway, there) ends it now; an upstream that keeps its TCP connection
            # open held the client's until close_timeout. The upstream's own close (or
            # close_timeout) still ends the upstream's.
            peer.transport.close()

    def _fail_while_closing(
        self, side: Side, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str
    ) -> None:
        """``side`` sent a bad frame or a message over the limit after its peer's close frame (instead of its
        answer), or after the gateway's for a vanished peer. _gateway_close does nothing once closing has
        begun: the side waiting for an answer got none, and a client waited close_timeout for its TCP close
        with no close frame (1006). Now each side that was sent no close frame yet gets the gateway's (these
        codes, as _gateway_close's at any other time), and a client that has both close frames is closed."""
        self.gateway_closing = True  # from here on, what either side sends ends its part (below, lost())
        for target, target_code, target_reason in (
            (self.client, client_code, client_reason),
            (self.upstream, upstream_code, upstream_reason),
        ):
            if target.peer.scanner.close is None:  # no close frame of its peer's reached it
                target.write_close(target_code, target_reason)
        side.end_if_refused()
        client = self.client
        answered = client.close_sent or self.upstream.scanner.close is not None
        if not client.open or not answered or client.pending_close is not None:
            return
        if side.client or client.scanner.close is not None:
            # Refused (its TCP close ends it, as end_if_refused does), or it sent its close frame and
            # has the answer: the server ends it.
            self._end_towards(client)

    def lost(self, side: Side) -> None:
        if side.client:
            self.client_over.set()
            # What the upstream sends from here on is read and dropped: never counted as sent (the
            # messages it sent after the gateway's 1001 were: out 8 for the 3 the client got).
            self.upstream.scanner.seal()
        peer = side.peer
        if peer.pending_close is not None:  # the frame it was receiving from ``side`` will never end
            self._end_towards(peer, cut_short=True)
        if not self._closing:  # it vanished without a close frame (or the gateway dropped it)
            self._closing = True
            stats = self.stats
            if side.stalled:
                # A stall is the gateway's close, not the side's failure (passive health counts those):
                # the code the client got, 1006 for a client dropped, 1011 for an upstream.
                stats.closed_by, stats.close_code = "gateway", 1006 if side.client else 1011
            else:
                stats.closed_by, stats.close_code = "client" if side.client else "upstream", 1006
            stats.close_reason = side.dropped or ""
            side.scanner.halt()
            sealed = side.scanner.sealed  # no close frame can land inside a frame it left unfinished
            if sealed:
                peer.write_close(*((1001, "client went away") if side.client else (1011, "upstream connection failed")))
            self._end_towards(peer, cut_short=not sealed)  # (read again, its answer seen, if a full buffer paused it)
            self._arm_timer()
        elif peer.open and not self.gateway_closing and (not side.client or peer.scanner.close is not None):
            if side.scanner.close is None and (asked := peer.scanner.close) is not None:
                # ``side`` vanished without answering its peer's close frame: the gateway answers it, the
                # peer's code and reason echoed, as the relay answers either side (RFC 6455 §5.5.1). The peer
                # got its TCP close alone, a failed closing handshake (1006) where the relay gave it its close.
                peer.write_close(*asked)
            self._end_towards(peer)  # the closing handshake is over (the gateway's own: each side answers)
        elif peer.open:
            self._read_out(peer)  # its answer to the close frame it has: ``side``'s full buffer may have paused it
        if not self.client.open and not self.upstream.open:
            self._stop_timers()
            self.finished.set()
            if not self._ended.done():  # (cancelled with run())
                self._ended.set_result(None)

    def _end_towards(self, side: Side, *, cut_short: bool = False) -> None:
        """Nothing more goes to ``side``, which may still send (acks, pongs it owes): read and drop what
        it sends until its answer to the close frame queued to it, or its TCP close (``close_timeout``
        at most); with no close frame to answer, half-close it, a FIN after all queued to it. Closing
        its socket had the kernel reset the connection at its next bytes, dropping the upstream's last
        messages and close frame (1 of 48 reached a client reading 2 MB/s). A FIN right behind the
        close frame cut the handshake short: a ``websockets`` client closed on it with its buffer full,
        and its pending send() then failed with an AttributeError (Python 3.11's abort after close).
        One that sent its close frame sends nothing more: closed. ``cut_short``: it is left inside a
        frame, which no close frame may follow. A refused side's answer is not read: its TCP close ends
        it, as :meth:`Side.end_if_refused` has it."""
        scanner = side.scanner
        if not side.open or side.transport.is_closing():
            return
        if scanner.close is not None:
            side.transport.close()
            return
        side.pending_close = None
        self._read_out(side)
        refused = scanner.too_big or scanner.error is not None  # its frames are not read: no answer is seen
        answer_due = side.close_sent or side.peer.scanner.close is not None
        if (cut_short or refused or not answer_due) and side.transport.can_write_eof():
            side.transport.write_eof()  # no close frame to answer: its FIN is the end it can see
        self._arm_timer()

    def _read_out(self, side: Side) -> None:
        """Read ``side`` again (its peer's full buffer, or a policy step, may have paused it) to drop
        what it sends until its close frame or TCP close: its peer is gone or closing.

        Not bounded in bytes, unlike a refused side's read-out: a side that behaves may still send all
        it queued before the close frame reached it (its socket's and the gateway's kernel buffers,
        MBs, and what its library holds, besides the rest of a message up to ``max_message_size``),
        and a bound cut its closing handshake short. Its frames are still scanned: an oversize or a bad
        one makes it a refused side, bounded from there; ``close_timeout`` bounds the rest."""
        if side.open and not side.scanner.unscanned and not side.transport.is_closing():
            side.transport.resume_reading()  # (a deferred scan resumes reading by itself)

    def _arm_timer(self) -> None:
        if self._timer is None:
            self._look_at_progress()
            self._timer = self._loop.call_later(self._close_timeout, self._expire)

    def _look_at_progress(self) -> None:
        """What each open side has taken in so far, which the close wait's next look compares (``_expire``):
        its :class:`~asgi_ws_gateway.relay.close_wait.CloseWait` begun at the first (its byte bound counts from
        there), its mark set again at each arming."""
        for side in (self.client, self.upstream):
            if side.open:
                taken, wait = side.taken_in(), side.close_wait
                if wait is None:
                    side.close_wait = CloseWait(taken, self._max_message_size)
                else:
                    wait.again(taken)

    def _expire(self) -> None:
        """``close_timeout`` after the close began, or after the last look: the closing handshake waits on
        while a side takes in some of what was on its way to it within each ``close_timeout`` (the stall
        rule's progress, :mod:`..progress`), and ends when none did, or one that bytes still wait for took
        in nothing. A side that took in the last of them since the last look is progress too: its answer
        (the close frame behind them) gets a whole ``close_timeout``, as a close with nothing queued does.

        Counted from the close frame's passing alone, it aborted a client still reading a large backlog
        slowly (its TCP's acknowledged count growing) at ``close_timeout``: the rest of its backlog and
        the close frame behind it were lost (57 of 128 64 KiB messages read at ~1.6 MB/s, 1 s). Waiting
        only while bytes were still on their way, a look just after a slow upstream read the last of the
        client's backlog and close frame aborted both sides before the upstream's answer came: the
        client got no close frame. Not at a shutdown: the server's bound holds there (:meth:`_server_shutdown`);
        nor past the wait's own bounds (:meth:`CloseWait.spent`): an upstream that never answered the client's
        close frame but streamed on to a client reading on held both connections (and the client's lease) for
        good. The rule is :class:`~asgi_ws_gateway.relay.close_wait.CloseWait`'s, one per side, as the relay's."""
        self._timer = None
        delivering = stalled = spent = False
        looks = 0
        for side in (self.client, self.upstream):
            wait = side.close_wait
            if side.open and wait is not None:
                taken = side.taken_in()
                progressed = wait.look(taken)
                delivering = delivering or progressed
                stalled = stalled or (not progressed and side.undelivered() > 0)
                spent = spent or wait.spent(taken)
                looks = max(looks, wait.looks)
        if delivering and not stalled and not spent and not self._shutting_down:
            self._arm_timer()  # (the next look, ``close_timeout`` from now)
            return
        why = _ended_by(spent, stalled, self._shutting_down)
        for side in (self.client, self.upstream):
            if side.open and not self._answered_for_its_peer(side):
                logger.info("passthrough: closing handshake timed out at the close wait's look %d (%s); aborting "
                            "the %s connection", looks, why, _name(side))  # fmt: skip
                with contextlib.suppress(Exception):
                    side.transport.abort()

    def _answered_for_its_peer(self, side: Side) -> bool:
        """At the close wait's end, a side whose close frame its peer never answered, with nothing on its way
        to it, gets the gateway's answer (its code and reason echoed, as the relay answers at once) and its TCP
        close: aborted, it saw its closing handshake fail (1006) for its peer's silence. Not at a shutdown."""
        asked = side.scanner.close
        if (
            asked is None
            or self._shutting_down
            or side.close_sent
            or side.peer.scanner.close is not None
            or side.peer.scanner.mid_frame
            or side.undelivered() > 0
        ):
            return False
        side.write_close(*asked)
        side.transport.close()
        return True


def _going(side: Side) -> bool:
    """``side``'s TCP connection is lost, or on its way (dropped: ``connection_lost`` has yet to run)."""
    transport: asyncio.BaseTransport | None = getattr(side, "transport", None)  # (unset until handed over)
    return not side.open or (transport is not None and transport.is_closing())


def _name(side: Side) -> str:
    return "client" if side.client else "upstream"


def _ended_by(spent: bool, stalled: bool, shutting_down: bool) -> str:
    """Why a close wait ended, for its log line."""
    if shutting_down:
        return "the server's shutdown"
    if spent:
        return "its bounds"
    return "a side that took in nothing" if stalled else "no progress"


__all__ = ["Splice"]
