"""The client leg at shutdown (SIGTERM), and the end of the application's task.

A handshake not answered yet gets the gateway's 503 draining refusal (its task is cancelled with
``SHUTDOWN_REFUSAL``); an accepted client gets 1012 and what it still sends is read and dropped until its
close; a client that reads nothing is dropped ``close_timeout`` (and ``ABORT_MARGIN``) later.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from uvicorn.protocols.utils import ClientDisconnected

from ..progress import undelivered
from ..relay.close_codes import CLIENT_GONE, SERVER_SHUTDOWN, SHUTDOWN_REFUSAL
from .client_leg import ClientLeg
from .log_lines import logged_path

SHUTDOWN_REASON = "server shutting down"
"""The close reason with the 1012 an accepted client gets at shutdown (the splice sends the same)."""
ABORT_MARGIN = 1.0
"""Seconds past ``close_timeout`` after which a connection still open at shutdown is dropped (a
quarter of uvicorn's ``timeout_graceful_shutdown`` at most)."""


class GracefulShutdown(ClientLeg):
    """The server's shutdown of a client connection, bounded by ``close_timeout``, and the application's task."""

    def shutdown(self) -> None:
        """The server shuts down (SIGTERM): close this connection, bounded by ``close_timeout``.

        uvicorn's own shutdown sent 1012 and closed the socket at once (a client still sending was
        reset: 1006), waited without end for a client that reads nothing (its close waits for the
        unread data to drain), and answered a handshake in flight with a bare 500 while the
        application went on with it.
        """
        if self.passed_through:
            if self._on_shutdown is not None:
                self._on_shutdown()  # the splice sends its 1012 to both sides
            self.close_sent = True  # what a forced quit counts (the transport is the splice's)
            return
        self.stop_keepalive()
        # The server's own bound (timeout_graceful_shutdown) comes first: past it, it stops waiting
        # for the connections, and one still open would be left to the event loop's end.
        grace = self.config.timeout_graceful_shutdown
        wait = self.close_timeout if grace is None else min(self.close_timeout, grace / 2)
        # A transport already closing (the client's close answered: the connection lingers, reading what
        # the client still sends, until its FIN or its bounds) has nothing left to send: a 1012 now was
        # websockets' InvalidState, raised out of uvicorn's shutdown, which then never ended.
        if not self.close_sent and not self.transport.is_closing():
            if self.handshake_complete and self.initial_response is None:
                self._close_at_shutdown(wait)
            elif self.initial_response is None:  # not answered yet; a refusal being sent is left to end
                self._refuse_at_shutdown()
        # So is a lingering one whose kernel still sends to its peer: its linger waits for that as long as
        # the peer reads on (``lingering_close``), and held the shutdown until the server's own bound.
        if not self.transport.is_closing() or undelivered(self.transport):
            margin = ABORT_MARGIN if grace is None else min(ABORT_MARGIN, grace / 4)
            self._abort_timer = self.loop.call_later(wait + margin, self._abort)

    def _close_at_shutdown(self, wait: float) -> None:
        """Send 1012, tell the application the server closed the client, then read and drop what the
        client still sends until its close (or ``wait`` seconds): the error-close path."""
        disconnect = {"type": "websocket.disconnect", "code": 1012, "reason": SHUTDOWN_REASON, SERVER_SHUTDOWN: True}
        self.queue.put_nowait(disconnect)  # type: ignore[arg-type]  # uvicorn's disconnect event, one key more
        if self._told_at_shutdown is not None:  # the application may be waiting elsewhere than in receive()
            try:
                self._told_at_shutdown(disconnect)
            except Exception:  # the application's code: raised out of uvicorn's loop over its connections,
                # it ended the server (every other client cut off without its 1012, no lifespan shutdown)
                self.logger.error("%s - the application's on_shutdown failed", self._client(), exc_info=True)
        self.conn.send_close(1012, SHUTDOWN_REASON)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.writable.set()  # a send waiting for the client to read ends now (ClientDisconnected), and the
        # relay reads its upstream's close instead of waiting to forward it one more message
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()  # what arrives now is dropped (send_receive_event_to_app)
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(wait, self.transport.close)

    def _refuse_at_shutdown(self) -> None:
        """Stop the application's handshake: it answers 503 (the gateway's draining refusal), or
        :meth:`send_500_response` does once the task ends without answering."""
        self._refusing = True
        task = self._task
        if task is not None and not task.done():
            self._stop_task(task, SHUTDOWN_REFUSAL)
        elif task is None and not self.handshake_initiated:
            self.transport.close()  # no request yet: nothing to answer
        # A task created but not started refuses when it starts (run_asgi).

    def _abort(self) -> None:
        """Drop a connection still open ``close_timeout`` after the shutdown: its client reads nothing."""
        self._abort_timer = None
        self.transport.abort()

    def send_500_response(self) -> None:
        """uvicorn's 500 for a handshake the application did not answer; a 503 that says to come back
        later when the server is shutting down."""
        if not self._refusing or self.initial_response or self.handshake_complete:
            super().send_500_response()
            return
        response = self.conn.reject(HTTPStatus.SERVICE_UNAVAILABLE, "The server is shutting down.\n")
        response.headers["Retry-After"] = "5"  # websockets' reject says Connection: close
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.handshake_complete = self.close_sent = True
        self.logger.info('%s - "WebSocket %s" 503 (server shutting down)', self._client(), logged_path(self._path()))

    async def run_asgi(self) -> None:
        """uvicorn's, but a handshake the shutdown stopped is answered 503 (see :meth:`shutdown`), a
        cancelled task (the shutdown's, or a forced quit's) logs no traceback, and an application that
        lets the cancellation of a client gone before its answer through (``CLIENT_GONE``) ends quietly."""
        self._task = task = asyncio.current_task(self.loop)  # (the loop given: no getpid() call on Python 3.11)
        try:
            if self._refusing:  # the shutdown came before this task's first step
                raise asyncio.CancelledError(SHUTDOWN_REFUSAL)
            if self._departed and task is not None:  # so did the client's departure: cancelled at the
                self._stop_task(task, CLIENT_GONE)  # application's first wait, where it can take it back
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError as exc:
            if CLIENT_GONE not in exc.args and not self._departed:  # else nothing to answer, nobody to tell
                if not self._refusing:
                    self._end_task()
                    raise
                self.send_500_response()
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete and (self.disconnected or self.transport.is_closing()):
                # Its client left before the answer (the accept raised ClientDisconnected, which the
                # application took as that): nothing to answer, and no fault of the server's.
                self.logger.debug('%s - "WebSocket %s" client gone before the handshake was answered',
                                  self._client(), logged_path(self._path()))  # fmt: skip
            elif not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        self._end_task()

    def _end_task(self) -> None:
        if self.close_timer is None:
            self.transport.close()
        if self.passed_through:  # connection_lost went to the splice's protocol, not here
            self.connections.discard(self)


__all__ = ["ABORT_MARGIN", "SHUTDOWN_REASON", "GracefulShutdown"]
