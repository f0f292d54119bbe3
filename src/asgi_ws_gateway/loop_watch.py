"""A WARNING when something blocked the event loop: every connection and request of the worker waited;
and how much one connection handles per loop turn (:data:`BYTES_PER_TURN`, :data:`INFLATED_PER_TURN`,
:data:`FRAMES_PER_TURN`, :data:`MESSAGES_PER_TURN`).

One event loop serves all of a worker's connections. A policy, plugin or in-process app that blocks
(``time.sleep``, synchronous I/O, CPU-bound work) stops all of them, and nothing failed to say so:
no timeout can interrupt it (``policy_timeout`` fires only once the loop runs again) and the
handshake that blocked still succeeded. A timer that should run every ``interval`` seconds is the
probe: when it runs ``threshold`` seconds late, the loop was held that long. The first such stall
is logged at once, then at most one line per ``quiet`` seconds with how many there were and the
longest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

BYTES_PER_TURN = 32 * 1024
"""Bytes of a peer's frames one connection parses or scans per event-loop turn (the gateway's protocol,
the splice's scanner, the relay's upstream leg), the rest held with reading paused until the next
turn: 256 KiB of tiny frames in one callback held every other connection of the worker 0.07-0.8 s;
a slice is ~0.1 s at most, and a 16 KiB message still one turn."""

INFLATED_PER_TURN = 1024 * 1024
"""Bytes of compressed messages one connection inflates per event-loop turn before it starts no more
frames (the splice's size count; the relay's two legs, whose websockets parsers stop after the frame
that inflates past it: ``upstream/deflate_streams.py``) or messages (the relay's pumps), the rest held
with reading paused until the next turn. Deflate inflates zeros about a thousandfold: a turn's
``BYTES_PER_TURN`` of ~1 KB messages was 32 MB of inflation in one callback, and every other
connection waited ~30 ms a read. A frame is never split (nor, by the pumps, a message): one of
``max_message_size`` still takes one turn."""

FRAMES_PER_TURN = 128
"""Frames one connection's websockets parser takes per event-loop turn (the relay's two legs: ``turn_frames.py``),
the rest held with reading paused until the next turn: ``BYTES_PER_TURN`` bounds the bytes, not the work,
and 32 KiB of 2-byte pings is 16,000 frames, of 3-byte messages 6,500, ~0.1 s of parsing (and answering) in
one callback; 30 upstreams flooding pings held another API's handshake and echo 9-10 s. 128 frames are
~2 ms: with 30 such upstreams that echo took ~0.2 s (512: ~0.5 s)."""

MESSAGES_PER_TURN = 512
"""Messages one connection's direction handles per event-loop turn before it lets the others run (the
frame relay's policies, the relay's pumps): 256 KiB of tiny messages is 37,000 of them, 0.1 s and more
in one step."""

INTERVAL = 0.25
THRESHOLD = 1.0
"""Seconds late that count as blocked: far above a busy loop's jitter, far below what users notice."""


class ReadShares:
    """What a large read holds beyond the share handled this loop turn: ``handle`` gets it
    :data:`BYTES_PER_TURN` bytes a turn, and ``transport`` is not read until the last share is handled.
    A handler may stop short of a share's end (a parser past :data:`INFLATED_PER_TURN`): what it
    leaves is handled first at the next turn.

    Args:
        transport: the connection's.
        handle: handles one share (parses its frames), returning the bytes it left of it (empty: none).
        live: whether shares still matter (False: the rest is dropped, as a closed connection's).
        may_read: whether reading may resume after the last share (something else may hold it paused).
    """

    __slots__ = ("_handle", "_live", "_may_read", "_transport", "waiting")

    def __init__(
        self,
        transport: asyncio.Transport,
        handle: Callable[[bytes], bytes],
        *,
        live: Callable[[], bool],
        may_read: Callable[[], bool],
    ) -> None:
        self._transport, self._handle, self._live, self._may_read = transport, handle, live, may_read
        self.waiting = bytearray()
        """The bytes not handled yet (empty: none, the connection is read as usual)."""

    def add(self, data: bytes) -> None:
        """Hold ``data`` after what waits; the next share is handled next turn."""
        if not self.waiting:
            asyncio.get_running_loop().call_soon(self._next)
        self.waiting += data
        self._transport.pause_reading()

    def _next(self) -> None:
        waiting = self.waiting
        if not self._live():
            waiting.clear()
            return
        share = bytes(waiting[:BYTES_PER_TURN])
        del waiting[:BYTES_PER_TURN]
        if rest := self._handle(share):
            waiting[:0] = rest
        if waiting:
            asyncio.get_running_loop().call_soon(self._next)
        elif self._may_read():
            self._transport.resume_reading()


class LoopWatch:
    """Times a probe on the running loop between :meth:`start` and :meth:`stop`.

    Args:
        interval: seconds between two runs of the probe.
        threshold: seconds late a run must be to count as a stall.
        quiet: seconds after a line during which stalls are only counted.
    """

    def __init__(self, *, interval: float = INTERVAL, threshold: float = THRESHOLD, quiet: float = 10.0) -> None:
        self.interval, self.threshold, self.quiet = interval, threshold, quiet
        self.stalls = 0
        """Stalls seen since :meth:`start`."""
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._unlogged = 0
        self._longest = 0.0
        self._quiet_until = float("-inf")

    def start(self) -> None:
        """Begin probing the running loop (again, after :meth:`stop`)."""
        self.stop()
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._probe, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if (late := now - self._due) >= self.threshold:
            self._stalled(late, now)
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._probe, loop)

    def _stalled(self, late: float, now: float) -> None:
        self.stalls += 1
        self._unlogged += 1
        self._longest = max(self._longest, late)
        if now < self._quiet_until:
            return
        logger.warning(
            "the event loop was blocked for %.1f s (%d time(s) since the last such line): every connection "
            "and request of this worker waited; something that blocks ran on it (a policy, plugin or "
            "in-process app calling time.sleep, synchronous I/O or CPU-bound work: run it with "
            "asyncio.to_thread)",
            self._longest,
            self._unlogged,
        )
        self._unlogged, self._longest, self._quiet_until = 0, 0.0, now + self.quiet


__all__ = [
    "BYTES_PER_TURN",
    "FRAMES_PER_TURN",
    "INFLATED_PER_TURN",
    "INTERVAL",
    "MESSAGES_PER_TURN",
    "THRESHOLD",
    "LoopWatch",
    "ReadShares",
]
