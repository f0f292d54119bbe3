"""The client leg's per-frame path: a connection's state, its start and end, what is read and sent.

:class:`ClientLeg` sits right over uvicorn's ``WebSocketsSansIOProtocol``, so that the per-frame
methods' calls to uvicorn's (``super()``) pass no other class on their way; the other jobs
(:mod:`.websocket` lists them) are composed over it and use its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.utils import ClientDisconnected, get_client_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.protocol import State

from ..loop_watch import BYTES_PER_TURN, ReadShares
from ..passthrough.asgi_extension import (
    ACCEPT,
    CLOSE_TIMEOUT,
    MAX_SIZE,
    NO_COMPRESSION,
    ON_SHUTDOWN,
    PING_INTERVAL,
    PING_TIMEOUT,
    STOPPED,
)
from ..passthrough.lingering_close import lingering
from ..progress import taken_in
from ..upstream.frame_headers import fail_at_waiting_header
from .log_lines import PATH_ONLY, QUIET, UVICORN_ERROR, PathOnly, logged_path
from .server_protocol import FRAMES_LATER, _ServerProtocol, start_frames
from .tls_close import TLS_CLOSES


class ClientLeg(WebSocketsSansIOProtocol):
    """A client connection's state and its per-frame path: reads parsed a share per loop turn, fragments
    joined as they come, text decoded once, the application's ``receive`` and ``send``."""

    conn: _ServerProtocol
    passed_through = False
    _on_shutdown: Callable[[], None] | None = None
    _told_at_shutdown: Callable[[dict[str, Any]], None] | None = None  # the application's ON_SHUTDOWN
    _fault_logged = False
    _abort_timer: asyncio.TimerHandle | None = None  # set at shutdown (GracefulShutdown)
    _stall_due: asyncio.TimerHandle | None = None  # bytes wait for the client: dropped unless it takes some in
    _stall_window: float | None  # seconds the client gets to take some of that in (ClientKeepalive)
    _heard = False  # the protocol got bytes from the client since the last keepalive ping
    _task: asyncio.Task[None] | None = None  # the application's, from its first step (GracefulShutdown)
    _refusing = False  # the server shuts down before the handshake was answered: 503 (GracefulShutdown)
    _departed = False  # the client left before the handshake was answered: its task cancelled (ClientDeparture)

    # What the jobs composed over this class (GatewayWebSocketProtocol) answer:
    _refuse_request: Callable[[], None]  # the request head refused (OpeningHandshake)
    _take_keepalive: Callable[[object, object], None]  # the accept's ping_interval, ping_timeout (ClientKeepalive)
    _pass_through: Callable[[Any], Awaitable[None]]  # the passthrough extension's accept (PassthroughHandover)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._message = bytearray()  # the fragments of the message being read, joined
        self._early_data = bytearray()  # what the client sent before its handshake was answered
        self._shares: ReadShares | None = None  # a large read's frames, a share per loop turn
        self._stall_window = self.ping_timeout  # uvicorn's ws_ping_timeout, unless the application's accept says
        # uvicorn's ServerProtocol, made the gateway's: a subclass that only overrides a method, so
        # the instance keeps its state; building a second one per connection costs ~3% of a handshake.
        self.conn.__class__ = _ServerProtocol
        # The adapters hold nothing of a connection: one each for all of them.
        self.conn.logger = QUIET
        self.logger = PATH_ONLY if self.logger is UVICORN_ERROR else PathOnly(self.logger)  # type: ignore[assignment]

    def _stop_task(self, task: asyncio.Task[None], why: str) -> None:
        """Cancel the application's handshake with ``why``, written in its scope too (:data:`STOPPED`): the
        middleware takes the cancellation back by it even when a library replaced the message on its way."""
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][STOPPED] = why
        task.cancel(why)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Closed with a FIN, what the client still sends read and dropped (a reset lost what it was sent).
        self.transport = lingering(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._abort_timer, self._stall_due):
            if timer is not None:
                timer.cancel()
        self._abort_timer = self._stall_due = None
        self._shares = None  # it points back at this protocol: a reference cycle, freed only by a full collection
        self._told_at_shutdown = None  # the relay's, which holds this protocol's send and receive: a cycle too
        TLS_CLOSES.forget(self.transport)  # (over TLS: the server's look at closing TLS connections held it on)
        super().connection_lost(exc)
        self.conn.forget_parser()  # so does websockets' parser at its protocol

    def _taken_in(self) -> int:
        """What the client has taken in of what was sent to it (:func:`..progress.taken_in`): the relay's
        close wait looks at it (the scope's passthrough extension offers it: ``TAKEN_IN``)."""
        return taken_in(self.transport)

    # -- reading --

    def data_received(self, data: bytes) -> None:
        self._heard = True  # a sign of life (``keepalive_timeout``)
        if self.handshake_initiated and not self.handshake_complete:
            self._hold_early_data(data)
            return
        if self.handshake_initiated:
            shares = self._shares
            if (shares is not None and shares.waiting) or len(data) > BYTES_PER_TURN:
                (shares or self._read_shares()).add(data)
                return
            if rest := self._parse_frames(data):  # a share's frames or inflation reached: the rest next turn
                (shares or self._read_shares()).add(rest)
            return
        if self.conn.parser is FRAMES_LATER:  # (a request handed over parsed, its handshake not begun)
            start_frames(self.conn)
        self.conn.receive_data(data)
        if self.conn.handshake_exc is not None:  # the request head itself was refused
            self._refuse_request()
            return
        self.handle_events()
        if rest := self.conn.rest_of_turn():  # frames past FRAMES_PER_TURN that came with the request
            self._hold_early_data(rest)  # read once the handshake is answered, after those parsed

    def _parse_frames(self, data: bytes) -> bytes:
        """Parse ``data``'s frames, up to the ``FRAMES_PER_TURN``-th or the one that inflates the
        ``INFLATED_PER_TURN``-th byte of compressed messages in this call: the bytes after it are returned, to
        parse next turn (32 KiB of ~1 KB messages was 32 MB of inflation in one callback, of 2-byte pings
        16,000 frames, every other connection of the worker waiting). The read's latest ping is answered
        once, at its end (:mod:`..held_pings`)."""
        conn = self.conn
        if conn.parser is FRAMES_LATER:
            start_frames(conn)
        inflating = conn.inflating
        if inflating is not None:
            inflating.start_share()
        super().data_received(data)
        if conn.pong_due:  # uvicorn writes on a ping event, and a ping held to the read's end is none
            conn.pong_due = False
            self.handle_ping()
        rest = conn.rest_of_turn() + (b"" if inflating is None else inflating.rest_of_share())  # one at most
        if conn.parser_exc is None and fail_at_waiting_header(conn):  # a bad header, its payload still to come
            self.handle_parser_exception()
        if conn.parser_exc is not None:
            self._log_fault(conn.close_sent.code if conn.close_sent else 1002, str(conn.parser_exc))
            return b""  # failed: what follows is not read
        return rest

    async def receive(self) -> ASGIReceiveEvent:
        """uvicorn's, but reading resumes once the application's queue is empty only if no large read
        still waits to be parsed: uvicorn resumed it whatever :class:`ReadShares` held, so every message
        the application took let one more read (256 KiB) in while 32 KiB a turn were parsed out (a
        client flooding 64 KiB messages on the relay grew the worker by 3 GB in 16 s)."""
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            shares = self._shares
            if shares is None or not shares.waiting:  # else the last share resumes it
                self.transport.resume_reading()
        return message

    def _read_shares(self) -> ReadShares:
        """A large read's frames, parsed a share per loop turn: websockets parses all of a read at once,
        ~20 µs a frame, and 256 KiB of tiny frames held the event loop 0.8 s, every other connection
        of the worker waiting (the splice and the frame relay scan them without an object each)."""
        transport = self.transport
        self._shares = ReadShares(
            transport,
            self._parse_frames,
            live=lambda: not transport.is_closing(),
            may_read=lambda: not self.read_paused and not transport.is_closing(),  # the application's turn first
        )
        return self._shares

    def _hold_early_data(self, data: bytes) -> None:
        """Keep what the client sends before its handshake is answered, unread, and read no more.

        A client that does not wait for the 101 sends frames the server's parser would take before
        the application decided: a spliced connection lost them with the parser (and was left with
        reading paused: nothing it sent later was forwarded, its close was never seen, and its
        upstream connection stayed open), and the relay read them before the API's message limit
        applied. They are read once the handshake is answered (:meth:`_release_early_data`); one
        read's worth at most is held.
        """
        self._early_data += data
        self.transport.pause_reading()

    def _release_early_data(self, protocol: asyncio.BaseProtocol) -> None:
        """The handshake is answered: ``protocol`` (this one, or the splice's) reads the held bytes first."""
        data, self._early_data = bytes(self._early_data), bytearray()
        if not data:
            return
        if not self.transport.is_closing():
            self.transport.resume_reading()  # before the bytes: a protocol that pauses for them stays paused
        protocol.data_received(data)  # type: ignore[attr-defined]

    # -- messages --

    def handle_text(self, event: Frame) -> None:
        self._first_fragment(event, "text")

    def handle_bytes(self, event: Frame) -> None:
        self._first_fragment(event, "bytes")

    def _first_fragment(self, event: Frame, kind: Literal["text", "bytes"]) -> None:
        self.curr_msg_data_type = kind
        if event.fin:
            self.frames = [bytes(event.data)]
            self.send_receive_event_to_app()
        else:
            # A fragmented message is joined as it comes, into one buffer: uvicorn kept an object per
            # fragment, ~40 bytes of memory per byte in 1-byte fragments, and empty fragments (which
            # the size limit never counts) grew a connection without bound.
            self._message = bytearray(event.data)

    def handle_cont(self, event: Frame) -> None:
        self._message += event.data
        if event.fin:
            self.frames, self._message = [bytes(self._message)], bytearray()
            self.send_receive_event_to_app()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text":
            super().send_receive_event_to_app()
            return
        # uvicorn's version logs invalid UTF-8 with a traceback; this one decodes once, as it does.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            if self.conn.state is not State.OPEN:
                # The client's close frame came later in the same read and websockets answered it while
                # parsing: that close ends the connection, and the message is dropped, as websockets drops
                # it (send_close raised InvalidState here, and the connection was dropped without a close).
                return
            self._log_fault(1007, "invalid UTF-8 in a text message")
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _log_fault(self, code: int, what: str) -> None:
        """One INFO line per connection for what the client did wrong: it must not flood the log."""
        if self._fault_logged:
            return
        self._fault_logged = True
        path = logged_path(self._path())
        self.logger.info('%s - "WebSocket %s" closed with %d: %s', self._client(), path, code, what)

    # -- the application's answer --

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "websocket.send" and not self.writable.is_set():
            await self.writable.wait()  # here: a close meanwhile (the shutdown's) is seen below
        if kind == ACCEPT and not self.handshake_complete and self.initial_response is None:
            await self._pass_through(message)
            return
        if self.close_sent and self.handshake_complete and kind in ("websocket.send", "websocket.close"):
            # This protocol closed the connection itself (a client's protocol error, say) while the
            # application was still talking: the client is gone, as ASGI says (an OSError), rather
            # than uvicorn's RuntimeError, which the application would log as its own failure.
            raise ClientDisconnected()
        if kind == "websocket.accept":
            if not self.handshake_complete and (self.disconnected or self.transport.is_closing()):
                # The client left (its FIN read: the transport closes) and connection_lost has not run
                # yet: uvicorn skipped the accept without a word, and the relay ran for nobody (its
                # access line a 101 the client never read). Gone, as the splice's hand-over says.
                raise ClientDisconnected()
            if type(message.get(MAX_SIZE)) is int:
                self.conn.lower_max_size(message[MAX_SIZE])
            if type(timeout := message.get(CLOSE_TIMEOUT)) in (int, float) and 0 < timeout < float("inf"):
                self.close_timeout = float(timeout)
            if PING_INTERVAL in message and PING_TIMEOUT in message:
                self._take_keepalive(message[PING_INTERVAL], message[PING_TIMEOUT])
            if callable(told := message.get(ON_SHUTDOWN)):
                self._told_at_shutdown = told
            if message.get(NO_COMPRESSION) is True and not self.handshake_complete:  # (the 101 not sent yet)
                self._without_compression()
        await super().send(message)
        if kind == "websocket.accept":
            self._release_early_data(self)
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True  # the refusal is complete: not "returned without completing"

    def _without_compression(self) -> None:
        """Answer the client without the permessage-deflate negotiated at its request: the 101 is not sent
        yet, and the parser and the framer read the extensions frame by frame. uvicorn's protocol negotiates
        it for every connection (``ws_per_message_deflate``); the application's accept says for this one.
        No extension but permessage-deflate is offered by the server: none is left."""
        if not self.conn.extensions:  # none negotiated (none offered: the plain upgrade's 101)
            return
        self.conn.extensions = []
        self.conn.inflating = None
        del self.response.headers["Sec-WebSocket-Extensions"]

    # -- log helpers --

    def _client(self) -> str:
        scope = getattr(self, "scope", None)
        if scope is not None:
            return get_client_addr(scope)
        return f"{self.client[0]}:{self.client[1]}" if self.client else ""

    def _path(self) -> str:
        scope = getattr(self, "scope", None)
        return scope["path"] if scope is not None else ""  # uvicorn puts the root path before it


__all__ = ["ClientLeg"]
