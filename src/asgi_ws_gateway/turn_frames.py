"""A read's frames parsed ``FRAMES_PER_TURN`` at most per loop turn, on either leg of a relayed connection.

Each leg feeds websockets' parser a read ``BYTES_PER_TURN`` bytes a turn (:class:`..loop_watch.ReadShares`),
and bytes say little of the work: 32 KiB of 2-byte pings is 16,000 frames, of 3-byte messages 6,500, each
an object, an event and (for a ping) a pong: ~0.1 s of one callback per connection. 30 hostile upstreams
doing so held another API's handshake and echo on the same worker 3-6 s. So, as a share ends once it
inflated ``INFLATED_PER_TURN`` bytes (``upstream/deflate_streams.py``), a read's parse ends after its
``FRAMES_PER_TURN``-th frame: the bytes after it are taken out of the parser's buffer, for the leg to feed
at the next turn (:meth:`FramesPerTurn.rest_of_turn`). A frame is never split.
"""

from __future__ import annotations

from websockets.frames import Frame
from websockets.protocol import Protocol

from .loop_watch import FRAMES_PER_TURN


class FramesPerTurn(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``, and before any mixin
    whose ``recv_frame`` may not call on: every frame counts) whose ``receive_data`` parses
    ``FRAMES_PER_TURN`` frames at most; its owner feeds :meth:`rest_of_turn` at the next turn."""

    _frames = 0  # frames parsed by the current receive_data
    _rest = b""  # what followed the frame that ended the read's share

    def receive_data(self, data: bytes | bytearray) -> None:
        self._frames = 0
        super().receive_data(data)

    def recv_frame(self, frame: Frame) -> None:
        super().recv_frame(frame)
        self._frames += 1
        if self._frames >= FRAMES_PER_TURN:
            buffer = self.reader.buffer  # the bytes after this frame: the parser waits for more
            self._rest += buffer
            buffer.clear()

    def rest_of_turn(self) -> bytes:
        """What the last ``receive_data`` left unparsed past its ``FRAMES_PER_TURN``-th frame (empty: none):
        to feed at the next loop turn, before anything read later."""
        rest, self._rest = self._rest, b""
        return rest


__all__ = ["FramesPerTurn"]
