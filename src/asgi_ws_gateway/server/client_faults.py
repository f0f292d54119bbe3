"""A client that broke the protocol (invalid UTF-8, a bad frame, a message over the limit): the
application is told, the client gets its close frame, and what it still sends is read and dropped
until it closes (``close_timeout`` at most, :data:`~..passthrough.read_out.REFUSED_BYTES` at most), where
uvicorn reset a client still sending."""

from __future__ import annotations

import asyncio

from websockets.exceptions import PayloadTooBig

from ..passthrough.read_out import BoundedReadOut
from ..relay.close_codes import TOO_BIG
from .client_leg import ClientLeg


class ClientFaults(ClientLeg):
    """The close after a client's protocol error (its one log line is :meth:`ClientLeg._log_fault`)."""

    _eof_written = False

    def handle_parser_exception(self) -> None:
        """The client broke the protocol (or sent more than the limit): tell the application, send the
        close frame, then read and drop what the client still sends until it closes (or
        ``close_timeout``). uvicorn closed the socket at once, and a client still sending (the rest
        of an oversize message) had its connection reset: it saw 1006, never the close code."""
        if self.close_sent:  # closing already: the application's close, or called again for a later read
            self._end_failed_closing()
            self._read_out()  # (a client answering the close with a bad frame was read on until close_timeout)
            return
        close = self.conn.close_sent
        assert close is not None  # websockets failed the connection with this frame
        disconnect = {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        if isinstance(self.conn.parser_exc, PayloadTooBig) and close.code == 1009:  # (not a rule the header broke)
            disconnect[TOO_BIG] = True  # over the application's limit (MAX_SIZE): its refusal, not the client's close
        self.queue.put_nowait(disconnect)  # type: ignore[arg-type]  # uvicorn's disconnect event, one key more
        self.transport.write(b"".join(self.conn.data_to_send()))  # the close frame
        self.close_sent = True
        self._end_failed_closing()
        self._read_out()
        self.close_timer = asyncio.get_running_loop().call_later(self.close_timeout, self.transport.close)

    def handle_ping(self) -> None:
        if self._eof_written:
            # The connection failed earlier in the same read (a text message not UTF-8, then this ping):
            # its close frame and FIN are out, and uvicorn's answer raised "Cannot call write() after
            # write_eof()", logged as a fatal transport error with a traceback.
            return
        super().handle_ping()

    def _read_out(self) -> None:
        """What the client still sends is counted and dropped (the parser would discard it all the same),
        and past ``REFUSED_BYTES`` its transport is closed (lingering: the close frame and the FIN are out
        already), as the splice does with a side it refused (:class:`~..passthrough.read_out.BoundedReadOut`
        stands in for this protocol), once: whether the fault came first or answered a close the server had
        sent (the application's, the shutdown's). Before, it was parsed on until its close or
        ``close_timeout``: a client that flooded after a bad frame had 6.2 GB read from it in the 5 s of the
        default, a core busy per connection; and once that was bounded, bounded only in the first case: a
        client that answered the relay's close with a bad frame and flooded had 256 MiB read from it in well
        under a second, on until close_timeout."""
        transport = self.transport
        if not transport.is_closing() and not isinstance(transport.get_protocol(), BoundedReadOut):
            transport.set_protocol(BoundedReadOut(self))  # (plain text: its FIN is written, it is read on)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()  # the parser discards what comes: read it out

    def _end_failed_closing(self) -> None:
        """End the server's side of a connection the client broke the protocol on, once: its TCP close
        (or ``close_timeout``) ends the rest, as websockets' fail() asks (RFC 6455 §7.1.7). A client
        that answered the application's close frame with a bad frame instead of its own close was
        kept open for the whole close timer: its answer was discarded, and nothing ended it."""
        if self._eof_written or self.transport.is_closing():
            return
        self._eof_written = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()


__all__ = ["ClientFaults"]
