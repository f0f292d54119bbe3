"""A TLS connection's close, bounded by its peer's progress rather than by a fixed time.

A TLS transport closes by sending close_notify and waiting for the peer's. The event loop bounds that
wait (``ssl_shutdown_timeout``, 30 s), but its timer also covers writing out what the transports still
hold at the close, and it aborts them with what they hold: a response written at once with
``Connection: close`` (a single body message of several MB) reached a client reading it on steadily
cut short, silently (an EOF, not a reset), once that bound was passed; at a bound of ``header_timeout``
(1 s) a client reading 8 MiB at ~1.6 MB/s read 3,997,696 bytes of it.

So the loop keeps its own bound as a backstop, and :data:`TLS_CLOSES` lets go of a closing TLS connection
whose peer has taken in nothing (no byte acknowledged, :func:`~..progress.taken_in`) for a
whole ``header_timeout``: one that read its answer and then neither answered close_notify nor closed its
TCP end, where a plain connection lingers 2 s. A client still reading is not cut, as a plain
connection's lingering close waits for one.

The gateway's own protocols close a TLS connection through a lingering transport (the HTTP protocol's,
which the WebSocket protocol and the splice take over), whose closes are held to the lingering close's
bounds, 2 s and 1 MiB (:func:`~..passthrough.lingering_close.lingering`); this look is the backstop for
any other close.
"""

from __future__ import annotations

import asyncio

from ..progress import taken_in


class _TLSCloses:
    """The process's TLS connections, looked at every ``header_timeout`` once closing (one event loop per
    process serves them)."""

    def __init__(self) -> None:
        # Each connection's peer progress at the last look while it was closing (None: not closing yet).
        self._progress: dict[asyncio.Transport, int | None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, every: float) -> None:
        """Abort ``transport`` if, once closing, its peer takes in nothing for ``every`` seconds."""
        self._progress[transport] = None
        if self._timer is None:
            self._timer = loop.call_later(every, self._look, loop, every)

    def forget(self, transport: asyncio.Transport) -> None:
        """``transport``'s connection is lost: let go of it now, not at the next look. Held until then, each
        closed TLS connection's transport, TLS protocol, SSL object and buffers (~15 objects, ~35 KB) stayed
        for up to ``header_timeout``: 500 TLS requests answered and closed held 7,540 objects 2.5 s later."""
        self._progress.pop(transport, None)

    def _look(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        for transport, before in list(self._progress.items()):
            if transport.get_extra_info("socket") is None:  # connection lost: the TLS layer let go of it
                del self._progress[transport]
            elif transport.is_closing():
                now = taken_in(transport)
                if now == before:
                    del self._progress[transport]
                    transport.abort()
                else:
                    self._progress[transport] = now
        self._timer = loop.call_later(every, self._look, loop, every) if self._progress else None

    def __len__(self) -> int:
        return len(self._progress)


TLS_CLOSES = _TLSCloses()
"""The process's TLS connections whose close is bounded by their peer's progress (see the module docstring)."""


__all__ = ["TLS_CLOSES"]
