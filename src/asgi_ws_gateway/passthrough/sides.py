"""One side of the splice: the asyncio protocol of the client's or the upstream's TCP connection.

A :class:`Side` copies what its peer's :class:`~asgi_ws_gateway.passthrough.frames.FrameScanner` passes
to the other side's transport, pauses its peer while its own writes are paused (backpressure), writes
the gateway's close frames and keepalive pings, and measures what it has taken in (the stall rule).
What happens next is the :class:`~asgi_ws_gateway.passthrough.splice.Splice`'s to decide.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from .. import progress
from ..relay.close_codes import wire_code, wire_reason
from .frame_encoding import close_frame, encode_frame
from .frames import Scanner
from .ping_window import PINGS_IN_FLIGHT, payload_of
from .read_out import BoundedReadOut

if TYPE_CHECKING:
    from ..relay.close_wait import CloseWait
    from ..upstream.close_secrets import SentCredentials
    from .splice import Splice

_PING = 0x9


def ping_payload() -> bytes:
    """A connection's payload for the gateway's keepalive pings; the pongs that carry it back are not
    forwarded. Random per connection: an endpoint's own ping with a payload the gateway uses would
    lose its pong (a constant one could be read in the source, or off any connection)."""
    return os.urandom(8)


class Side(asyncio.Protocol):
    """One leg of the splice: its transport, and what it sent."""

    __slots__ = ("client", "close_sent", "close_wait", "done_sending", "drain_waiter", "dropped",
                 "heard", "open", "peer", "pending_close", "ping_due", "progress", "refused", "scanner", "sent",
                 "splice", "stall_due", "stalled", "transport", "write_paused")  # fmt: skip

    transport: asyncio.Transport

    def __init__(self, splice: Splice, scanner: Scanner, *, client: bool) -> None:
        self.splice = splice
        self.scanner = scanner
        self.client = client
        self.peer: Side
        self.open = True  # its TCP connection is up
        self.close_sent = False  # the gateway sent this side a close frame of its own
        self.pending_close: bytes | None = None  # that close frame, waiting for the frame in flight to end
        self.heard = False  # it sent something since the last keepalive round
        self.ping_due: asyncio.TimerHandle | None = None  # a keepalive ping is waiting for an answer
        self.write_paused = False  # its transport's write buffer is over the high-water mark: it reads nothing
        self.drain_waiter: asyncio.Future[None] | None = None  # a message of the gateway's waits for that to end
        self.stall_due: asyncio.TimerHandle | None = None  # bytes wait for it: dropped unless it takes some in
        self.progress = 0  # what it had taken in at the last look (``taken_in``)
        self.close_wait: CloseWait | None = None  # its close wait's looks at that count (``Splice._expire``)
        self.dropped: str | None = None  # why the gateway dropped it (the stats' close reason)
        self.stalled = False  # that was a stall: the gateway's close, not a failure of the side's
        self.refused = False  # the gateway refused it: what it sends is read out by a BoundedReadOut
        self.done_sending = False  # its close frame, then its FIN: it still reads, and waits for its answer
        # The upstream's: the credentials the gateway sent it, taken out of its close reason (None: none to
        # look for, or its close frame seen).
        self.sent: SentCredentials | None = None

    def linger_began(self) -> None:
        """Its transport closes without a reset (``lingering_close``): the client's side is over for the
        client, and what only the client held (its concurrency lease) may go, though the socket lingers."""
        if self.client:
            self.splice.client_over.set()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.heard = True
        scanner = self.scanner
        out = scanner.feed(data)
        if scanner.interrupted and self.sent is not None and scanner.close is not None:
            out = self.close_without_credentials(out)
        if out and self.peer.open:
            self.peer.transport.write(out)
        if scanner.interrupted:
            self.splice.after_frame(self)

    def close_without_credentials(self, out: bytes) -> bytes:
        """``out`` (what goes on, ending with the upstream's close frame, or without it when nothing more
        goes on), its close reason without the credentials the gateway sent the upstream
        (:mod:`..upstream.close_secrets`); ``scanner.close``, which the access line records, too. Once."""
        sent, self.sent = self.sent, None
        assert sent is not None and self.scanner.close is not None
        code, reason = self.scanner.close
        scrubbed = sent.scrubbed(reason)
        if scrubbed is reason:
            return out
        self.scanner.close = code, scrubbed
        frame = close_frame(code, reason, mask=False)  # as the upstream sent it (unmasked, 2-byte header)
        if not out.endswith(frame):
            return out  # not forwarded (the gateway closes)
        return out[: -len(frame)] + close_frame(code, scrubbed, mask=False)  # (never longer: 123 bytes at most)

    def defer_rest(self) -> None:
        """Scan the rest of a large read in the next loop turn, reading no more meanwhile (one callback
        scanning 37,000 tiny frames held every other connection of the worker ~70 ms)."""
        if self.open and not self.transport.is_closing():
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._scan_rest)

    def _scan_rest(self) -> None:
        scanner = self.scanner
        if not self.open or not scanner.unscanned:
            return  # lost meanwhile (as what a paused side's kernel buffer holds), or scanned already
        scanner.unscanned = False
        self.data_received(b"")  # the next slice (the scanner holds back the rest again, if any)
        if not scanner.unscanned and not self.peer.write_paused and not self.transport.is_closing():
            self.transport.resume_reading()  # unless its peer reads nothing (backpressure)

    def eof_received(self) -> bool | None:
        if self.scanner.close is None or self.answered() or not self.peer.open or not self.transport.can_write_eof():
            return None  # gone without a close frame (or done, or TLS: no half-close): the transport closes
        # Its close frame, then its FIN (a half-close; after that frame it may send nothing anyway, RFC 6455
        # §5.5.1): it still reads, and the answer is on its way. It is closed once that is written to it
        # (close_if_done), or at close_timeout; closed here, it lost the answer: a client read EOF and no
        # close frame (1006). Paused, as nothing more comes: a later resume (the lingering close's) reads the
        # EOF again and ends, where asyncio's transport, its reader gone, lingered the whole 2 s.
        self.done_sending = True
        self.transport.pause_reading()
        return True

    def answered(self) -> bool:
        """Its close frame has its answer: its peer's close frame reached it, or the gateway's was written."""
        return self.peer.scanner.close is not None or (self.close_sent and self.pending_close is None)

    def close_if_done(self) -> None:
        """Close a side that sent its close frame and its FIN (:meth:`eof_received`) once its answer is
        written to it: the closing handshake is over, and it reads the answer, then the gateway's FIN."""
        if self.done_sending and self.open and self.pending_close is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Gone, nothing waits on its writes: a peer that resumes reading once they drain (a deferred
        # scan, the frame relay's next turn) is read out. Left set, a client that vanished while its
        # upstream flooded it kept the upstream unread for good, and the upstream, blocked in its
        # send, never took the gateway's 1001.
        self.open = self.write_paused = False
        self._wake()
        self.splice.lost(self)

    def pause_writing(self) -> None:
        # It reads nothing: the peer's data waits (backpressure), and so do the pongs its pings ask for.
        self.write_paused = self.scanner.hold_pings = True
        self.peer.transport.pause_reading()
        self.splice.writes_stalled(self)

    def resume_writing(self) -> None:
        self.write_paused = self.scanner.hold_pings = False
        self.splice.writes_flowing(self)
        self.release_ping()
        self._wake()
        if self.peer.open:
            self.peer.transport.resume_reading()

    async def drained(self) -> None:
        """Return once this side reads again (the gateway's writes to it resumed) or is gone."""
        while self.write_paused and self.open:
            if self.drain_waiter is None:
                self.drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.drain_waiter)  # a cancelled caller leaves the future to the others

    def _wake(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def release_ping(self) -> None:
        """Forward the ping held while this side read nothing or waited for its peer's pong, once it reads
        again, that pong came and it is between frames."""
        scanner = self.scanner
        if scanner.held_ping is None or scanner.hold_pings or scanner.mid_frame:
            return
        if len(scanner.pings_in_flight) >= PINGS_IN_FLIGHT:
            return
        ping, scanner.held_ping = scanner.held_ping, None
        peer = self.peer
        stopped = scanner.halted or scanner.close is not None or scanner.too_big or scanner.error is not None
        if peer.open and not peer.close_sent and not stopped:  # nothing goes after a close frame
            scanner.pings_in_flight += (payload_of(ping),)
            peer.transport.write(ping)

    def write_close(self, code: int, reason: str) -> None:
        """Send this side a close frame of the gateway's, once the frame it is receiving (if any) ends."""
        if not self.open or self.close_sent:
            return
        self.close_sent = True
        frame = close_frame(wire_code(code), wire_reason(reason), mask=not self.client)
        source = self.peer.scanner
        source.halt()  # nothing after the frame in flight reaches this side
        if source.sealed:
            self.transport.write(frame)
            self.end_if_refused()
            self.close_if_done()
        elif self.peer.open:
            self.pending_close = frame  # written when the peer's data_received finishes the frame
        else:
            # The rest of the frame will never come, and a close frame would land inside it: a FIN after
            # what is queued to it, read out to its TCP close (close_timeout at most). Closing the socket
            # had the kernel reset a side still sending, dropping what was queued to it.
            self.splice._end_towards(self, cut_short=True)

    def end_if_refused(self) -> None:
        """Half-close a side the gateway refused (an oversize or bad frame) once its close frame is out:
        its frames are no longer read, so its answer cannot be seen, and its TCP close ends it. (Closing
        the socket on its next read reset a client still sending, which then lost the close frame.)"""
        scanner = self.scanner
        if (
            (scanner.too_big or scanner.error is not None)
            and self.close_sent
            and self.pending_close is None
            and self.open
            and not self.transport.is_closing()  # (closed by its read-out's bound: nothing more goes to it)
            and self.transport.can_write_eof()
        ):
            self.transport.write_eof()

    def read_out_refused(self) -> None:
        """The gateway refused this side (an oversize or bad frame): from now on what it sends is counted
        and dropped by a :class:`~.read_out.BoundedReadOut` standing in for it, and past
        :data:`~.read_out.REFUSED_BYTES` it is closed (none of it could go on). Its scanner read it on,
        dropping all, until its TCP close or ``close_timeout``: 4-5 GB a second over loopback, a core busy
        per connection. Counted there, not in :meth:`data_received`: no cost per read of a connection that
        was never refused."""
        if self.refused:
            return
        self.refused = True
        transport = self.transport
        if self.open and not transport.is_closing():
            transport.set_protocol(BoundedReadOut(self))

    def undelivered(self) -> int:
        """Bytes written to this side it has not taken in yet (:func:`.progress.undelivered`)."""
        return progress.undelivered(self.transport)

    def taken_in(self) -> int:
        """A count that grows as this side takes in what is written to it (:func:`.progress.taken_in`)."""
        return progress.taken_in(self.transport)

    def write_ping(self) -> bool:
        """Send this side a keepalive ping if it is between frames; False if it is not."""
        if not self.open or self.close_sent or self.peer.scanner.mid_frame:
            return False
        self.transport.write(encode_frame(_PING, self.splice.ping_payload, mask=not self.client))
        return True


__all__ = ["Side", "ping_payload"]
