"""One pong for the pings a peer sends while it reads nothing, on either leg of a relayed connection.

websockets' Sans-I/O protocol answers every ping at once. A peer that pings and never reads (a
client on the gateway's server side, an upstream on its client side) makes those pongs pile up
in the transport's write buffer, which no backpressure bounds: one such peer grew a gateway by
170 MB (client) and 279 MB (upstream) in 15 s. RFC 6455 §5.5.3 lets an endpoint answer only the
most recent of the pings it has not answered yet, so while the transport's writes are paused
(its buffer over the high-water mark) the latest ping is held, and answered once they resume.

The same rule bounds the work of a peer flooding pings that does read: within one read (a turn's share of
it) the first ``ANSWERED_PER_READ`` pings are answered as they come (Autobahn's cases 2.10 and 2.11 want
each of 10 pings answered), then only the latest, at the end of the read. Answering each cost twice its
parsing, and an upstream's 32 KiB of empty pings was 16,000 pongs in one callback.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

ANSWERED_PER_READ = 16
"""Pings of one read answered each; past them, the read's latest only."""


class HeldPings(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) whose owner
    calls :meth:`writes_paused` and :meth:`writes_resumed` from the transport's flow control."""

    paused = False
    """The transport's write buffer is over its high-water mark: the peer is not reading."""
    held_ping: bytes | None = None
    """The most recent ping received while ``paused`` or past a read's ``ANSWERED_PER_READ``: its pong is owed."""
    pong_due = False
    """The read just parsed ended with the latest ping's pong queued (``data_to_send`` has it): for an owner
    that writes only on events (uvicorn's protocol) to write it; cleared by that owner."""
    _holding = False  # within a read, past its ANSWERED_PER_READ-th ping
    _answered = 0  # pings of the read answered

    def receive_data(self, data: bytes | bytearray) -> None:
        self._answered = 0
        try:
            super().receive_data(data)
        finally:
            self._holding = False
        if self.held_ping is not None and not self.paused:
            self.pong_due = self._answer_held_ping()

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            if self.paused or self._holding:
                self.held_ping = bytes(frame.data)
                return
            self._answered += 1
            self._holding = self._answered >= ANSWERED_PER_READ
        super().recv_frame(frame)

    def writes_paused(self) -> None:
        self.paused = True

    def writes_resumed(self) -> bool:
        """Writing may go on: the held ping's pong is queued (True: ``data_to_send`` has it)."""
        self.paused = False
        return self._answer_held_ping()

    def _answer_held_ping(self) -> bool:
        """Queue the held ping's pong, unless the connection is closing (True: queued)."""
        data, self.held_ping = self.held_ping, None
        if data is None or self.state is not State.OPEN:
            return False
        self.send_pong(data)
        return True


__all__ = ["ANSWERED_PER_READ", "HeldPings"]
