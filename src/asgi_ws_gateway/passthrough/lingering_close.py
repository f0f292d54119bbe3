"""Closing a TCP connection whose peer may still be sending, without a reset: nginx's "lingering close".

Linux answers ``close()`` on a socket with unread bytes in its receive buffer (or bytes arriving after
it) with a RST instead of a FIN, and drops what it had not sent yet. A client still sending when the
gateway closed it (the rest of a large message, data behind its close frame, frames sent without
waiting for the 101 of a refused handshake) read ECONNRESET instead of EOF, and one that had not read
what was queued to it lost that, the close frame or the HTTP refusal with it (1006).

:class:`LingeringTransport` wraps a connection's transport; its :meth:`~LingeringTransport.close`
half-closes instead (a FIN once all that is queued is written), reads and drops what the peer still
sends, and closes once the peer closes, or at the first of :data:`LINGER_SECONDS` and
:data:`LINGER_BYTES`; while bytes written to the peer are still on their way (its FIN behind them), the
time bound waits for them as long as the peer takes some in within each :data:`LINGER_SECONDS`, a peer
that takes in nothing for that long while the transport still holds bytes is aborted, and the byte bound
stops the reads instead of closing (:class:`_Linger`). The protocol's ``connection_lost`` comes then
(the server still counts the connection until its socket is closed: its shutdown waits for it); a
protocol with a ``linger_began`` method is told at once (the splice's sides: what only the client held,
its concurrency lease, goes then, not at the peer's FIN). Every other call goes straight to the wrapped
transport: ``write`` as its own bound method, nothing added per write.

A lingering connection still holds its descriptor. A client that opens, is refused or closed, and keeps
its end open without a FIN held one each for 2 s after the close: a flood of those (a concurrency lease
of one is enough) filled the open-file table, though no connection of it was open. At most one
descriptor in :data:`LINGER_SHARE` of the open-file limit lingers; past that a close is a plain close.
No longer counted as an open connection, a lingering one still counts against the process's capacity
(:func:`lingering_count`: half a connection each, as it holds one descriptor of two).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..progress import received, taken_in, undelivered

if sys.platform != "win32":
    import resource

logger = logging.getLogger(__name__)

LINGER_SECONDS = 2.0
"""Seconds a closed connection's peer may go on sending (read and dropped) before the socket is closed."""
LINGER_BYTES = 1 << 20
"""Bytes read and dropped from a closed connection's peer before the socket is closed (1 MiB)."""
LINGER_SHARE = 8
"""At most one descriptor in this many of the process's soft open-file limit is a lingering connection's."""
LINGER_FLOOR = 16
"""Connections that may linger at once however low the open-file limit is."""
LINGER_UNLIMITED = 65536
"""Connections that may linger at once when the open-file limit is unlimited."""


def linger_room() -> int:
    """How many connections of this process may linger at once (see the module docstring)."""
    if sys.platform == "win32":
        return LINGER_UNLIMITED
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return LINGER_UNLIMITED
    return max(LINGER_FLOOR, soft // LINGER_SHARE)


def _ignored(data: object) -> None:
    """A write on a connection that is closing: nothing goes after its end."""


def _nothing() -> None:
    """Pausing or resuming the reads of a lingering connection: it reads until its end."""


class LingeringTransport:
    """``transport``, closed without a reset (see the module docstring); everything else is its own.

    The calls made per message (``write``, ``writelines``, ``pause_reading``, ``resume_reading``: the
    relay's client leg pauses and resumes reading around each message) are the transport's own bound
    methods until the linger begins, then no-ops; the other calls pass through one method of this class.
    No ``__dict__``: a spliced connection holds two of these for its whole life. Over a transport that
    cannot half-close (TLS), :meth:`close` is the transport's.
    """

    __slots__ = ("_linger", "_transport", "pause_reading", "resume_reading", "write", "writelines")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._linger: _Linger | None = None
        self.write: Callable[[bytes], None] = transport.write
        self.writelines: Callable[[Iterable[bytes]], None] = transport.writelines
        self.pause_reading: Callable[[], None] = transport.pause_reading
        self.resume_reading: Callable[[], None] = transport.resume_reading

    def close(self) -> None:
        transport = self._transport
        if self._linger is not None:
            return  # its end or its bound closes it: closed now, the bytes still coming would reset it
        if transport.is_closing():
            transport.close()
            return
        if not transport.can_write_eof():  # TLS: close_notify is its end; what comes after goes unseen
            transport.close()
            _watch_tls_close(transport, lingers=lingering_count() < linger_room())
            return
        if lingering_count() >= linger_room():
            transport.close()  # past the room: a plain close, as before lingering (a reset if bytes are unread)
            if transport.get_write_buffer_size():  # nor is it held by a peer that reads nothing (_Linger)
                _watch_drain(transport, taken_in(transport))
            return
        protocol = transport.get_protocol()
        linger = self._linger = _Linger(transport, protocol)
        # From here the connection is closed to whoever holds this transport: nothing more is written,
        # and it reads until the end (pausing would hold the peer's FIN back).
        self.write = self.writelines = _ignored
        self.pause_reading = self.resume_reading = _nothing
        transport.set_protocol(linger)
        began = getattr(protocol, "linger_began", None)
        if began is not None:
            began()
        transport.write_eof()  # the FIN, once what is queued is written
        transport.resume_reading()  # (paused by backpressure, or while early data was held)

    def is_closing(self) -> bool:
        return self._linger is not None or self._transport.is_closing()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class _Linger(asyncio.Protocol):
    """The protocol of a transport that lingers: what the peer sends is dropped; the transport closes
    at its EOF or at the bound, and its protocol before is told then (``connection_lost``).

    The bound waits for what is still on its way to the peer (the FIN behind it), as long as the peer
    takes some of it in within each :data:`LINGER_SECONDS` (:func:`~.progress.taken_in`), read on
    meanwhile: at 2 s from the close, a client reading a backlog of MBs slowly and still sending was
    no longer read, and the socket's close once the transport's write was done reset it, the rest of
    the kernel's send buffer and the close frame lost. A peer that takes in nothing for that long while
    the transport still holds bytes for it is aborted: the transport's ``close()`` writes them first, and
    a peer that reads nothing never let it end (the relay's client, closed or closing with bytes queued
    to it below the high-water mark, where its stall rule does not look, held its descriptor, the
    kernel's send buffer and the transport's for as long as it kept its end open, ``close_timeout``
    and the 2 s long past). Holding only the kernel's bytes, it is closed as before (they go on); then the
    first look is at the first bound, a look the less per close, and a peer taking nothing in ends 2 s later.
    Past :data:`LINGER_BYTES` with bytes still on their way, it is read no more and left to that bound: closed
    with the peer's bytes unread, the socket was reset and the kernel dropped what it still held for the peer.
    """

    __slots__ = ("__weakref__", "left", "protocol", "taken", "timer", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        self.transport, self.protocol, self.left = transport, protocol, LINGER_BYTES
        # What the peer had taken in (the bound looks at its progress), if the transport still holds bytes
        # for it; else the first bound looks (the kernel's bytes only: a syscall less per close).
        self.taken: int | None = taken_in(transport) if transport.get_write_buffer_size() else None
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._bound)
        _LINGERING.add(self)  # (weak: a transport dropped without its connection_lost leaves no count behind)

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0 and not self.transport.is_closing():  # (once: the close below reads no more)
            if undelivered(self.transport):
                # Still on its way to the peer: read no more, and let the bound close once it is delivered
                # (or abort a peer that takes nothing in). Closed now, its socket's unread bytes had the
                # kernel reset the connection and drop what it still held: a slow reader that sent on (it has
                # not read the close frame yet) lost the rest of its backlog and the close frame.
                logger.debug("lingering close: the peer sent %d bytes more; reading no more", LINGER_BYTES)
                self.transport.pause_reading()
                return
            logger.debug("lingering close: the peer sent %d bytes more; closing", LINGER_BYTES)
            self.transport.close()  # what is still queued to it is written first (the bound watches that)

    def eof_received(self) -> None:
        return None  # the peer is done too: the transport closes (the bound watches what it still writes)

    def _bound(self) -> None:
        """:data:`LINGER_SECONDS` after the linger began, or after the last look at the peer's progress."""
        self.timer = None
        transport = self.transport
        if undelivered(transport):  # the transport's bytes or the kernel's: the FIN is behind them
            taken = taken_in(transport)
            if self.taken is None or taken > self.taken:  # it reads on (and may still send): another look later
                self.taken = taken
                self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._bound)
                return
            if transport.get_write_buffer_size():  # they would never be written: nothing would end it
                logger.debug("lingering close: the peer took in nothing for %g s; aborting", LINGER_SECONDS)
                transport.abort()  # connection_lost follows
                return
        if not transport.is_closing():
            if self.left < LINGER_BYTES:
                logger.debug("lingering close: the peer still sent after %g s; closing", LINGER_SECONDS)
            else:  # (said "still sent" too: a client whose FIN never left its host was looked for in the gateway)
                logger.debug("lingering close: the peer sent nothing, nor its FIN, in %g s; closing", LINGER_SECONDS)
            transport.close()

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        _LINGERING.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.protocol.connection_lost(exc)


def _watch_drain(transport: asyncio.Transport, taken: int) -> None:
    """A plain close's write, still waiting for its peer: :data:`LINGER_SECONDS` later, aborted unless the
    peer took some of it in meanwhile (``taken``: what it had taken in; then the next look), as a linger's.
    Many closes at once overflowed the room, and each such close of a peer reading nothing held its
    descriptor and buffers for as long as the peer kept its end open."""

    def look() -> None:
        if not transport.get_write_buffer_size():  # written, or the connection is lost
            return
        now = taken_in(transport)
        if now <= taken:
            logger.debug("closing: the peer took in nothing for %g s; aborting", LINGER_SECONDS)
            transport.abort()
            return
        _watch_drain(transport, now)

    asyncio.get_running_loop().call_later(LINGER_SECONDS, look)


TLS_FIRST_LOOK_SECONDS = LINGER_SECONDS / 256
"""When a closing TLS connection's peer is first looked at (:func:`_watch_tls_close`), each look then twice
as long after the one before, up to :data:`TLS_LOOK_SECONDS`: what it sends between two looks, read and
dropped by the TLS layer, is its byte bound's overshoot (a flood sent at once is seen within a few MiB)."""
TLS_LOOK_SECONDS = LINGER_SECONDS / 16
"""The longest between two looks at a closing TLS connection's peer."""
TLS_CLOSE_RECEIVE_BUFFER = 4096
"""A closing TLS connection's socket receive buffer (``SO_RCVBUF``, bytes; Linux doubles it): what its peer
may send between two looks is a few of these per round trip, however far apart the looks are."""


def _watch_tls_close(transport: asyncio.Transport, *, lingers: bool) -> None:
    """A TLS connection just closed (its answer, then close_notify, on their way): the lingering close's
    bounds, kept from outside the TLS layer; counted as a lingering connection while it waits for the
    peer's answer (``lingers``: there is room, :func:`linger_room`), else aborted once the peer took in
    all it was sent, as a plain close past the room lets go of its descriptor at once.

    Closing, a TLS transport reads, decrypts and drops what its peer still sends until the peer's
    close_notify or FIN, or the loop's ``ssl_shutdown_timeout``; its protocol sees none of it, nor can it
    pause it. A client refused (a bad request head, a 403, a 404, a bad frame relayed) that flooded on had
    8.8-11.7 GB read from it over loopback in the 20 s before the server's look at closing TLS connections
    (``server.tls_close``) let go of it, a core busy; plain text, 1 MiB. At each look here
    (:data:`TLS_FIRST_LOOK_SECONDS`, then further apart) the peer's TCP counts are read (:mod:`..progress`):
    past :data:`LINGER_BYTES` sent since the close it is aborted; everything written to it taken in
    (close_notify last) and no answer within :data:`LINGER_SECONDS`, aborted, as a plain linger closes then;
    bytes still on their way wait as long as it takes some in within each :data:`LINGER_SECONDS`, as a
    plain linger's do. Unlike a plain linger's reads, the TLS layer's cannot be paused at the byte bound: a
    slow reader that sends that much more after the close loses the rest of what it was sent.

    Each such close held its descriptor uncounted, however many closed at once: clients answered and
    closed (``Connection: close``) that left the close_notify unanswered, 360 a second from 4 threads,
    kept a worker under a 256 open-file limit at 228 descriptors, and 119 of 162 health checks failed
    meanwhile (plain text: 17 descriptors, none failed). Now they count as lingering connections (the
    capacity counts them, :func:`lingering_count`), as many as there is room for.

    The looks bound what the peer sends after the close only as often as they come: one that kept silent
    for a while and then flooded (the looks 0.125 s apart by then) had 59-115 MiB read from it over loopback
    before the next look; sent at once, 2-11 MiB. Its socket's receive buffer is made small
    (:data:`TLS_CLOSE_RECEIVE_BUFFER`): nothing but its close_notify is awaited from it, and what it sends
    goes no faster than that buffer per round trip (over loopback, per delayed acknowledgement): 0.1-0.3
    MiB before its abort either way. What it is sent is not slowed."""
    loop = asyncio.get_running_loop()
    start = received(transport)
    if start is None:  # the counts are unknown (not Linux, or the socket is gone): the loop's own bound
        return
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TLS_CLOSE_RECEIVE_BUFFER)
    mark = (loop.time(), taken_in(transport))  # the last progress of the peer's reading, and when
    wait = TLS_FIRST_LOOK_SECONDS
    counted = _TLSLinger()  # held by the looks: counted until they end (or their loop is dropped)
    if lingers:
        _TLS_LINGERING.add(counted)

    def end() -> None:
        _TLS_LINGERING.discard(counted)
        transport.abort()

    def look() -> None:
        nonlocal mark, wait
        now = received(transport)
        if now is None:  # closed: the connection is lost
            _TLS_LINGERING.discard(counted)
            return
        if now - start > LINGER_BYTES:
            logger.debug("closing TLS: the peer sent %d bytes more; aborting", LINGER_BYTES)
            end()
            return
        if not lingers and not undelivered(transport):  # past the room, and all it was sent is in
            end()
            return
        if loop.time() - mark[0] >= LINGER_SECONDS:
            taken = taken_in(transport)
            if not undelivered(transport) or taken <= mark[1]:
                logger.debug("closing TLS: no close_notify, nor progress, for %g s; aborting", LINGER_SECONDS)
                end()
                return
            mark = (loop.time(), taken)
        wait = min(2 * wait, TLS_LOOK_SECONDS)
        loop.call_later(wait, look)

    loop.call_later(wait, look)


_LINGERING: weakref.WeakSet[_Linger] = weakref.WeakSet()
"""This process's lingering connections (one event loop per process serves them)."""


class _TLSLinger:
    """A closing TLS connection waiting for its peer's answer, as counted (:func:`_watch_tls_close`): weakly,
    as a linger is (uvloop's TLS transports take no weak reference)."""

    __slots__ = ("__weakref__",)


_TLS_LINGERING: weakref.WeakSet[_TLSLinger] = weakref.WeakSet()
"""This process's closing TLS connections waiting for their peer's answer (:func:`_watch_tls_close`)."""


def lingering_count() -> int:
    """This process's connections lingering now, closing TLS ones waiting for their peer's answer with
    them: each holds a descriptor (the capacity counts them)."""
    return len(_LINGERING) + len(_TLS_LINGERING)


def is_lingering(transport: asyncio.BaseTransport) -> bool:
    """Whether ``transport`` lingers now (a wrapper's :meth:`LingeringTransport.close` began it): its
    protocol, until the linger ends, is the linger's own."""
    return isinstance(transport.get_protocol(), _Linger)


def lingering(transport: asyncio.Transport) -> asyncio.Transport:
    """``transport``, closed without a reset: a :class:`LingeringTransport` standing in for it (itself if
    it is one: the HTTP protocol's over TLS, which the WebSocket protocol it hands over to takes too)."""
    if isinstance(held := cast(object, transport), LingeringTransport):
        return cast(asyncio.Transport, held)
    return cast(asyncio.Transport, LingeringTransport(transport))


__all__ = [
    "LINGER_BYTES",
    "LINGER_FLOOR",
    "LINGER_SECONDS",
    "LINGER_SHARE",
    "LINGER_UNLIMITED",
    "TLS_CLOSE_RECEIVE_BUFFER",
    "TLS_FIRST_LOOK_SECONDS",
    "TLS_LOOK_SECONDS",
    "LingeringTransport",
    "is_lingering",
    "linger_room",
    "lingering",
    "lingering_count",
]
