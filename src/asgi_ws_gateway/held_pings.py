"""One pong for the pings a peer sends while it reads nothing, on either leg of a relayed connection.

websockets' Sans-I/O protocol answers every ping at once. A peer that pings and never reads (a
client on the gateway's server side, an upstream on its client side) makes those pongs pile up
in the transport's write buffer, which no backpressure bounds: one such peer grew a gateway by
170 MB (client) and 279 MB (upstream) in 15 s. RFC 6455 §5.5.3 lets an endpoint answer only the
most recent of the pings it has not answered yet, so while the transport's writes are paused
(its buffer over the high-water mark) the latest ping is held, and answered once they resume.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State


class HeldPings(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) whose owner
    calls :meth:`writes_paused` and :meth:`writes_resumed` from the transport's flow control."""

    paused = False
    """The transport's write buffer is over its high-water mark: the peer is not reading."""
    held_ping: bytes | None = None
    """The most recent ping received while ``paused``: its pong is owed."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING and self.paused:
            self.held_ping = bytes(frame.data)
            return
        super().recv_frame(frame)

    def writes_paused(self) -> None:
        self.paused = True

    def writes_resumed(self) -> bool:
        """Writing may go on: the held ping's pong is queued (True: ``data_to_send`` has it)."""
        self.paused = False
        data, self.held_ping = self.held_ping, None
        if data is None or self.state is not State.OPEN:
            return False
        self.send_pong(data)
        return True


__all__ = ["HeldPings"]
