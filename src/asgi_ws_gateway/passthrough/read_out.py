"""Reading out a peer the gateway is done with: what it still sends is counted and dropped, and past
:data:`REFUSED_BYTES` its transport is closed (lingering), not read for all of ``close_timeout``.

One protocol for both places a peer is refused: the splice's and the frame relay's sides
(:meth:`~.sides.Side.read_out_refused`, an oversize or bad frame) and the server's client leg
(``server.client_faults``, a client that broke the protocol): before, each read on, scanning or parsing
and dropping all, until the peer's close or ``close_timeout`` (over loopback a flooder had 4-5 GB a second
read from it by the splice, 6.2 GB in the default 5 s by the client leg), a core busy per connection.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .lingering_close import LINGER_BYTES

REFUSED_BYTES = 16 * LINGER_BYTES
"""Bytes a refused side (an oversize or bad frame) may still send after its refusal before it is closed
(16 MiB). More than a lingering close's :data:`LINGER_BYTES`: a client refused for a message over the
limit is still sending the rest of it, and must still read its 1009 (one sending an 8 MiB message
over the 1 MiB default, and one sending 8 MiB behind a bad frame, read their codes and the gateway's
FIN, not a reset: ``tests/test_attack_frames.py``). A flooder is read ~5 ms, not ``close_timeout``."""


class ReadOutOwner(Protocol):
    """The protocol a :class:`BoundedReadOut` stands in for: its transport, and the calls passed on to it."""

    @property
    def transport(self) -> asyncio.Transport: ...

    def eof_received(self) -> bool | None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


class BoundedReadOut(asyncio.Protocol):
    """The protocol of a refused peer's transport, standing in for ``owner``: drops what the peer sends,
    and closes the transport once that is over :data:`REFUSED_BYTES`; everything else (EOF, flow control,
    ``connection_lost``, a lingering close's ``linger_began`` if the owner has one) goes to the owner.
    Counted here, not in the owner's ``data_received``: no cost per read of a peer that was never refused.

    Closed as any connection the gateway is done with: the transport's ``close()`` (a
    :class:`~.lingering_close.LingeringTransport`'s) writes what is still queued to it and its FIN, and
    lingers, a flooder reaching the linger's own :data:`LINGER_BYTES` at once, at which it is read no more
    and the socket is closed once its close frame is delivered (a reset, its unread bytes dropped, the
    descriptor freed); a peer that takes in nothing is
    aborted by the linger's time bound, as by ``close_timeout`` over a transport that cannot linger.
    Not ``abort()``: a reset now could drop the close frame still on its way to it, and the splice may
    still write to it (a close frame waiting for the peer's frame in flight, a half-close): a lingering
    transport ignores that, where an aborted uvloop transport raised on it. Over TLS (no linger) it is
    aborted: its ``close()`` reads on, and what is written to an aborted TLS transport is dropped quietly.
    (The client leg never stands one in over TLS: its close after the fault is the TLS close, bounded
    by the lingering close's look at closing TLS connections.)"""

    __slots__ = ("left", "owner")

    def __init__(self, owner: ReadOutOwner) -> None:
        self.owner, self.left = owner, REFUSED_BYTES

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            transport = self.owner.transport
            if not transport.can_write_eof():
                # TLS (a wss:// upstream): no linger, and its close() is TLS's own shutdown, which reads and
                # drops on until the peer's close_notify: a flooder was read for all of close_timeout
                # (5.2 GB in 10 s over loopback). Past its bound it is dropped, as a linger past its own.
                transport.abort()
            elif not transport.is_closing():  # (once: the linger reads the rest)
                transport.close()

    def eof_received(self) -> bool | None:
        return self.owner.eof_received()

    def linger_began(self) -> None:
        began = getattr(self.owner, "linger_began", None)  # (the splice's sides have one)
        if began is not None:
            began()

    def pause_writing(self) -> None:
        self.owner.pause_writing()

    def resume_writing(self) -> None:
        self.owner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connection_lost(exc)


__all__ = ["REFUSED_BYTES", "BoundedReadOut", "ReadOutOwner"]
