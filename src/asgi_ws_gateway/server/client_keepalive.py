"""The client's keepalive and the stall rule on the client leg, as the splice applies them to its sides:
the application's ``ping_interval``/``ping_timeout`` from its accept, a client that takes in nothing
queued to it dropped, and bytes it sent since a ping taken as a sign of life (:mod:`..progress`)."""

from __future__ import annotations

import logging

from ..progress import may_send, received, taken_in, undelivered
from ..relay.close_codes import CLIENT_STALLED
from .client_leg import ClientLeg

logger = logging.getLogger("asgi_ws_gateway.server.websocket")
"""The client leg's one logger, whichever of its modules writes the line."""


class ClientKeepalive(ClientLeg):
    """Keepalive pings, pong deadlines and the stall probe of a client connection."""

    _progress = 0  # what the client had taken in at the last look (``taken_in``)
    _received_at_ping: int | None = None  # what the client's TCP had delivered then, read or not (``received``)

    def _take_keepalive(self, interval: object, timeout: object) -> None:
        """The application's keepalive for this client (the API's ``ping_interval`` and ``ping_timeout``),
        before uvicorn's accept starts it: with uvicorn's ``ws_ping_*`` for every connection, an API's
        ``ping_timeout: 2`` dropped a stalled relay client after 20 s, and its ``null`` did not stop the rule.
        As on the splice, the stall rule needs both: either None turns it off (None interval: no pings;
        None timeout: no pong deadline). A value that is no number of seconds leaves uvicorn's."""
        ping_interval, ping_timeout = _seconds(interval), _seconds(timeout)
        if (ping_interval is None and interval is not None) or (ping_timeout is None and timeout is not None):
            return
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self._stall_window = None if ping_interval is None else ping_timeout

    # -- a client that reads nothing --

    def pause_writing(self) -> None:
        super().pause_writing()
        self.conn.writes_paused()
        self._watch_progress()  # the client must take some of it in (the stall rule, below)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_due is not None:
            self._stall_due.cancel()
            self._stall_due = None
        if self.conn.writes_resumed() and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))

    def _watch_progress(self) -> None:
        """Bytes wait for the client (the writes to it paused): it must take some of them in within every
        ``ping_timeout`` (the API's, from the accept; else uvicorn's ``ws_ping_timeout``), as the splice's
        stall rule asks of its sides.

        uvicorn's keepalive cannot find it: its ping waits behind the full buffer, and the close that
        follows a late pong waits for that buffer to drain, which never comes; the connection (and the
        application's send, waiting for the writes to resume) stayed open for as long as the client's
        process was stopped."""
        timeout = self._stall_window
        if timeout is None or timeout <= 0 or self._stall_due is not None or self.passed_through or self.disconnected:
            return
        self._progress = taken_in(self.transport)
        self._stall_due = self.loop.call_later(timeout, self._check_progress)

    def _check_progress(self) -> None:
        """``ping_timeout`` after the last look at the client's progress: a stall is none in that time.
        A client reading slowly but steadily is not one, though its writes may stay paused for long."""
        self._stall_due = None
        if self.disconnected:
            return
        taken = taken_in(self.transport)
        waiting = not self.writable.is_set() or undelivered(self.transport)
        if taken > self._progress:
            self._progress = taken
        elif waiting:
            logger.info("relay: the client read nothing for %g s (nothing queued to it was delivered); dropping it",
                        self._stall_window)  # fmt: skip
            # No close frame (it would wait behind the rest, unread), as the splice drops a side; the
            # application hears 1006, and a send waiting for the writes raises ClientDisconnected.
            if not self.close_sent:
                stalled = {"type": "websocket.disconnect", "code": 1006, CLIENT_STALLED: True}
                self.queue.put_nowait(stalled)  # type: ignore[arg-type]  # uvicorn's disconnect event, one key more
                self.close_sent = True
            self.transport.abort()
            return
        if waiting:
            self._watch_progress()  # the next look, ``ping_timeout`` from now

    # -- keepalive --

    def send_keepalive_ping(self) -> None:
        """uvicorn's, but, as the splice pings a side, no ping while the writes to the client are paused,
        only the next one scheduled: its pong could not come meanwhile, and the stall rule judges it; with
        no ``ping_timeout`` (no pong awaited) uvicorn wrote one more every ``ping_interval``, queued without
        bound behind a client that reads nothing. What the client's TCP delivered so far is noted: bytes
        it sends from now on, read or not, answer for it (:meth:`keepalive_timeout`)."""
        if not self.close_sent and not self.transport.is_closing() and not self._may_ping():
            self.ping_timer = None
            self.schedule_ping()
            return
        self._heard = False
        self._received_at_ping = received(self.transport)
        super().send_keepalive_ping()

    def _may_ping(self) -> bool:
        """The client's pong could come now: the writes to it flow. With no ``ping_timeout``, nothing judges
        the pong but its reading: no ping while the client is not read (its pongs would pile up unread)."""
        return self.writable.is_set() and (self.ping_timeout is not None or self.transport.is_reading())

    def keepalive_timeout(self) -> None:
        """uvicorn's, with the splice's rule of life: a client that sent bytes since the ping is alive,
        whether the gateway read them or not (:func:`..progress.received`: its TCP delivered
        them). uvicorn failed it with 1011 while its pong waited behind a large message it was still
        sending (a browser on a slow uplink), and, with its reading paused (the application not reading,
        backpressure), for a pong it left unread; never pinging such a client, the gateway kept a dead
        one for ever. Such a client's round ends as if it had answered: the next ping follows.

        Nor is a client charged for a pong while bytes written before the ping are still on their way to
        it (MBs, for a client reading slowly): it is judged by how they drain instead (the stall rule).
        Nor while it is not read and could not send: what it sent fills the window the gateway announced
        to it (:func:`..progress.may_send`), its silence nobody's (the upstream leg's keepalive
        judges the other side); where the kernel does not tell, a client not read is never charged."""
        timeout = self.ping_timeout
        if self.close_sent or self.transport.is_closing() or timeout is None:
            super().keepalive_timeout()
            return
        if not self.writable.is_set() or undelivered(self.transport):
            self._watch_progress()
            self.pong_timer = self.loop.call_later(timeout, self.keepalive_timeout)
            return
        if self._heard_since_ping():
            self.pong_timer = self.pending_ping_payload = None  # its pong, read late, is one no ping awaits
            self.schedule_ping()
            return
        if not self.transport.is_reading() and not may_send(self.transport):
            self.pong_timer = self.loop.call_later(timeout, self.keepalive_timeout)  # heard from once read
            return
        super().keepalive_timeout()

    def _heard_since_ping(self) -> bool:
        """The client sent bytes since the keepalive ping: the protocol got some, or its TCP delivered some."""
        if self._heard:
            return True
        before = self._received_at_ping
        return before is not None and (received(self.transport) or 0) > before


def _seconds(value: object) -> float | None:
    """``value`` if it is a number of seconds (finite, above 0; a bool is none), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    return None


__all__ = ["ClientKeepalive"]
