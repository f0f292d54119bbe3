"""The gateway's own uvicorn protocols: what ``asgi-ws-gateway run`` serves with.

Under ``uvicorn app:app`` the same behaviour takes two flags::

    uvicorn app:app --ws asgi_ws_gateway.server:GatewayWebSocketProtocol \\
                    --http asgi_ws_gateway.server:GatewayHTTPProtocol

``GatewayWebSocketProtocol`` is uvicorn's ``websockets-sansio`` implementation with the fixes a
gateway needs on its edge:

* an upgrade request the parser refuses (request line over 8 KiB: 414; a header line over 8 KiB or
  more than 128 headers: 431; anything malformed: 400) gets its response and the connection is
  closed, instead of hanging with the response unsent;
* a refusal (``websocket.http.response`` or ``websocket.close`` before accept) is one INFO line, not
  ``ERROR: ASGI callable returned without completing handshake.``;
* a misbehaving client (invalid UTF-8, a protocol error, an oversized message) is one INFO line with
  the close code, never a traceback; it gets its close frame and what it still sends is read and
  dropped until it closes (``close_timeout`` at most), where uvicorn reset a client still sending;
* the application may lower the largest message the server reads from one client (and so how far
  it inflates a compressed one): ``"asgi_ws_gateway.max_size": <bytes>`` in its ``websocket.accept``
  (the gateway sends its API's ``max_message_size``); a message over it closes the client with 1009
  and tells the application so (``"asgi_ws_gateway.too_big": True`` in the ``websocket.disconnect``);
  and how long to wait for the client's close frame after its own (``"asgi_ws_gateway.close_timeout":
  <seconds>``, the API's ``close_timeout``; uvicorn waited 10 s whatever it was); and the client's
  keepalive and stall window (``"asgi_ws_gateway.ping_interval"`` and ``"asgi_ws_gateway.ping_timeout"``,
  both or neither: seconds, or None for off; the API's, as the splice takes them), in place of uvicorn's
  ``ws_ping_interval`` and ``ws_ping_timeout``, which still serve every other connection;
* each fragment of a message but its last counts 64 bytes at least toward the message limit
  (``FRAGMENT_FLOOR``), as on the splice and the frame relay, which refuse the same messages: uvicorn
  counted only their bytes: a message of the limit's size in one-byte fragments passed, and one of empty
  fragments never ended, at ~20 µs of the event loop a frame;
* what a client sends before its handshake is answered (it did not wait for the 101) is held, unread,
  and read first once the application accepts or splices (uvicorn parsed it before the application
  decided, and a splice lost it with the parser);
* at shutdown (SIGTERM), a client whose handshake is not answered yet gets the gateway's 503
  draining refusal (``Retry-After``, ``Connection: close``): its task is cancelled with
  ``SHUTDOWN_REFUSAL``, which the gateway answers (another application gets the same 503 from this
  protocol), where uvicorn sent a bare 500 and left the handshake running; an accepted client gets
  1012 and what it still sends is read and dropped until its close, as for a protocol error (uvicorn
  reset a client still sending: 1006), and a client that reads nothing is dropped ``close_timeout``
  (and a second) later, within half of uvicorn's ``timeout_graceful_shutdown`` when that is set:
  uvicorn's close waited for its unread data to drain, and the shutdown never ended;
* a client that takes in nothing of what is queued to it for ``ping_timeout`` (the application's, above,
  else uvicorn's ``ws_ping_timeout``; never when the application's ``ping_interval`` or ``ping_timeout``
  is None) while the writes to it are paused is dropped (aborted, no close frame; the application gets
  1006), by the splice's stall probe (:mod:`..passthrough.progress`), and a pong late behind bytes still
  on their way to it is judged by their progress too: uvicorn's keepalive never dropped a client that
  reads nothing (its close waited for the buffer to drain), and failed one reading slowly with 1011;
  no keepalive ping is written while those writes are paused (without a ``ping_timeout`` uvicorn wrote
  one every ``ping_interval`` behind the rest, without bound);
* as on the splice, a client that sent bytes since a keepalive ping is alive, whether the gateway read
  them or not (Linux's TCP_INFO says what its TCP delivered: :mod:`..passthrough.progress`), and its
  round ends as if it had answered: uvicorn failed with 1011 a client whose pong waited behind a large
  message it was still sending (a browser on a slow uplink), or waited unread while the application
  did not read it. One that sent nothing and did not answer gets 1011 ``keepalive ping timeout``, read
  or not, unless what it sent before fills the window the gateway announced to it (backpressure: its
  silence is nobody's; the upstream leg's keepalive judges the other side; where the kernel does not
  tell, a client not read is not charged). Before, a client not read was never pinged, and a dead one,
  its message unread, stayed open for ever;
* a bad ``Sec-WebSocket-Version`` answers 400 with ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.4);
* a client that pings while it reads nothing is owed one pong, not one per ping (:mod:`..held_pings`);
* its log lines carry the path but never the query string (credentials travel there);
* uvicorn's own line per connection (``"WebSocket /path" [accepted]``, or the refusal's status) is
  written at DEBUG, not INFO, for a connection the gateway writes an access-log line for (one line
  per connection, as nginx and Envoy log); other connections keep it at INFO;
* the ``asgi_ws_gateway.passthrough`` scope extension: instead of ``websocket.accept`` the
  application may send::

    {"type": "asgi_ws_gateway.passthrough.accept", "subprotocol": ..., "headers": [...],
     "extensions": "<Sec-WebSocket-Extensions value or None>", "protocol": <asyncio.Protocol>,
     "on_started": <callable>, "on_shutdown": <callable>}

  The extension's value is ``{"max_size": <the server's ws_max_size>}``. The server answers 101
  with those headers (the extensions it negotiated itself are dropped: the application negotiated
  them end to end), stops parsing, and hands the transport to ``protocol``;
  ``on_started()`` follows at once, ``on_shutdown()`` when the server shuts down. The application's
  call must not return before the connection is over, and must not call ``receive`` or ``send``
  again: the server keeps nothing of the connection but the transport it handed over.

``GatewayHTTPProtocol`` (see :mod:`asgi_ws_gateway.server.head_deadline`) closes a client that does not
send a complete request head in time, which the WebSocket protocol cannot see: uvicorn parses the
upgrade request in its HTTP protocol before handing the connection over.

``PassthroughWebSocketProtocol`` is the former name of ``GatewayWebSocketProtocol``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote

from uvicorn._types import ASGIReceiveEvent
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.utils import ClientDisconnected, get_client_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidHeader, PayloadTooBig
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ..held_pings import HeldPings
from ..loop_watch import BYTES_PER_TURN, ReadShares
from ..passthrough.asgi_extension import ACCEPT, CLOSE_TIMEOUT, EXTENSION, MAX_SIZE, PING_INTERVAL, PING_TIMEOUT
from ..passthrough.progress import may_send, received, taken_in, undelivered
from ..relay.close_codes import CLIENT_STALLED, SERVER_SHUTDOWN, SHUTDOWN_REFUSAL, TOO_BIG
from ..upstream.websockets_protocol import FragmentFloor, UnlinkedParserFailure
from .head_deadline import HEADER_TIMEOUT_ENV
from .http import GatewayH11Protocol, GatewayHTTPProtocol
from .log_lines import ACCEPTED, PATH_ONLY, QUIET, UVICORN_ERROR, PathOnly, connection_line_level, logged_path
from .request_head import parsed_request, serialised_request

SUPPORTED_VERSION = "13"
SHUTDOWN_REASON = "server shutting down"
"""The close reason with the 1012 an accepted client gets at shutdown (the splice sends the same)."""
ABORT_MARGIN = 1.0
"""Seconds past ``close_timeout`` after which a connection still open at shutdown is dropped (a
quarter of uvicorn's ``timeout_graceful_shutdown`` at most)."""
logger = logging.getLogger(__name__)
_REFUSED = {400: "malformed request", 414: "request line too long", 431: "request headers too large"}


class _ServerProtocol(UnlinkedParserFailure, FragmentFloor, HeldPings, ServerProtocol):
    """websockets' handshake, plus the version header RFC 6455 §4.2.2 asks for on a version mismatch,
    one pong for the pings a client sends while it reads nothing (:mod:`..held_pings`), tiny fragments
    counted at ``FRAGMENT_FLOOR`` bytes as on the splice and the frame relay (:class:`FragmentFloor`), and
    no reference cycle left once the connection is over (:class:`UnlinkedParserFailure`)."""

    def accept(self, request: Request) -> Response:
        response = super().accept(request)
        exc = self.handshake_exc
        if isinstance(exc, InvalidHeader) and exc.name.lower() == "sec-websocket-version":
            response.headers["Sec-WebSocket-Version"] = SUPPORTED_VERSION
        return response


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the gateway's edge fixes (see the module docstring)."""

    conn: _ServerProtocol
    passed_through = False
    _on_shutdown: Callable[[], None] | None = None
    _fault_logged = False
    _eof_written = False
    _task: asyncio.Task[None] | None = None  # the application's, from its first step
    _refusing = False  # the server shuts down before the handshake was answered: 503
    _abort_timer: asyncio.TimerHandle | None = None
    _stall_due: asyncio.TimerHandle | None = None  # bytes wait for the client: dropped unless it takes some in
    _progress = 0  # what the client had taken in at the last look (``taken_in``)
    _stall_window: float | None  # seconds the client gets to take some of that in (``_watch_progress``)
    _heard = False  # the protocol got bytes from the client since the last keepalive ping
    _received_at_ping: int | None = None  # what the client's TCP had delivered then, read or not (``received``)

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

    # -- the request head --

    def adopt_connection(
        self, transport: asyncio.Transport, server: tuple[str, int | None] | None, client: tuple[str, int] | None,
        scheme: Literal["ws", "wss"],
    ) -> None:  # fmt: skip
        """``connection_made`` with the addresses the HTTP protocol already read from the socket."""
        self.connections.add(self)
        self.transport = transport
        self.server, self.client, self.scheme = server, client, scheme
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{client[0]}:{client[1]} - " if client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection made", prefix)

    def receive_parsed_request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The upgrade request as uvicorn's HTTP protocol parsed it (``GatewayHTTPProtocol``).

        websockets would parse it again from uvicorn's re-serialisation of it; a head that its parser
        takes as it is (:func:`parsed_request`) skips that, and every other head takes that way, so
        its refusals (414, 431, 400) and their lines stay websockets' and this protocol's own.
        """
        request = None if self.conn.debug else parsed_request(method, target, headers)
        if request is None:
            self.data_received(serialised_request(method, target, headers))
            return
        conn = self.conn
        # What websockets' ServerProtocol.parse does after it parsed a request: frames from now on.
        conn.parser = super(ServerProtocol, conn).parse()
        next(conn.parser)
        conn.events.append(request)
        self.handle_events()

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
            self._parse_frames(data)
            return
        self.conn.receive_data(data)
        if self.conn.handshake_exc is not None:  # the request head itself was refused
            self._refuse_request()
            return
        self.handle_events()

    def _parse_frames(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.parser_exc is not None:
            self._log_fault(self.conn.close_sent.code if self.conn.close_sent else 1002, str(self.conn.parser_exc))

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

    def _refuse_request(self) -> None:
        """Send the parser's 414/431 (or a 400 when it only gave up) and close: it would hang otherwise."""
        output = b"".join(self.conn.data_to_send())
        if not output:  # websockets sends nothing for a malformed request: only EOF
            output = self.conn.reject(HTTPStatus.BAD_REQUEST, "Invalid WebSocket handshake request.\n").serialize()
        status = int(output.split(b" ", 2)[1]) if output.startswith(b"HTTP/") else 400
        # A fixed description: the parser's message may quote the offending line, credentials and all.
        self.logger.info('%s - "WebSocket handshake" %d (%s)', self._client(), status, _REFUSED.get(status, "?"))
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(output)
        self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101:  # refused by websockets' own checks, before the app ran
            path = logged_path(unquote(event.path.partition("?")[0]))  # decoded: "/Bearer%20abc" is caught
            exc = self.conn.handshake_exc  # its message may quote a header's value: name the header only
            what = f"invalid {exc.name} header" if isinstance(exc, InvalidHeader) else type(exc).__name__
            self.logger.info('%s - "WebSocket %s" %d (%s)', self._client(), path, self.response.status_code, what)
            return
        scope = getattr(self, "scope", None)
        if scope is not None and not self.handshake_complete:  # set before the ASGI task first runs
            # The server's own message limit (--ws-max-size) still applies to a spliced connection.
            scope["extensions"][EXTENSION] = {"max_size": self.config.ws_max_size}

    # -- misbehaving clients --

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
            self._log_fault(1007, "invalid UTF-8 in a text message")
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_parser_exception(self) -> None:
        """The client broke the protocol (or sent more than the limit): tell the application, send the
        close frame, then read and drop what the client still sends until it closes (or
        ``close_timeout``). uvicorn closed the socket at once, and a client still sending (the rest
        of an oversize message) had its connection reset: it saw 1006, never the close code."""
        if self.close_sent:  # closing already: the application's close, or called again for a later read
            self._end_failed_closing()
            return
        close = self.conn.close_sent
        assert close is not None  # websockets failed the connection with this frame
        disconnect = {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        if isinstance(self.conn.parser_exc, PayloadTooBig):
            disconnect[TOO_BIG] = True  # over the application's limit (MAX_SIZE): its refusal, not the client's close
        self.queue.put_nowait(disconnect)  # type: ignore[arg-type]  # uvicorn's disconnect event, one key more
        self.transport.write(b"".join(self.conn.data_to_send()))  # the close frame
        self.close_sent = True
        self._end_failed_closing()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()  # the parser discards what comes: read it out
        self.close_timer = asyncio.get_running_loop().call_later(self.close_timeout, self.transport.close)

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
            if type(message.get(MAX_SIZE)) is int:
                self._lower_max_size(message[MAX_SIZE])
            if type(timeout := message.get(CLOSE_TIMEOUT)) in (int, float) and 0 < timeout < float("inf"):
                self.close_timeout = float(timeout)
            if PING_INTERVAL in message and PING_TIMEOUT in message:
                self._take_keepalive(message[PING_INTERVAL], message[PING_TIMEOUT])
        await super().send(message)
        if kind == "websocket.accept":
            self._release_early_data(self)
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True  # the refusal is complete: not "returned without completing"

    def _lower_max_size(self, limit: int) -> None:
        """Read no message larger than ``limit`` from this client (nor inflate a compressed one
        further), when that is below the server's ``ws_max_size``."""
        # The parser's limit: max_message_size in recent websockets releases, max_size before.
        name = "max_message_size" if hasattr(self.conn, "max_message_size") else "max_size"
        current = getattr(self.conn, name, None)
        if limit > 0 and (current is None or limit < current):
            setattr(self.conn, name, limit)

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

    async def _pass_through(self, message: Any) -> None:
        if self.disconnected or self.transport.is_closing():
            raise ClientDisconnected()
        # Checked before its level is decided and its arguments built: both cost more than the check.
        if UVICORN_ERROR.isEnabledFor(logging.INFO) and UVICORN_ERROR.isEnabledFor(level := connection_line_level()):
            # uvicorn's line, without the query string (as PathOnly writes it), straight to the logger.
            scope = self.scope
            UVICORN_ERROR.log(level, ACCEPTED, get_client_addr(scope), logged_path(scope["path"]))
        response = self.response
        del response.headers["Date"]
        if "Sec-WebSocket-Extensions" in response.headers:
            del response.headers["Sec-WebSocket-Extensions"]  # negotiated end to end instead
        for name, value in self.default_headers + list(message.get("headers", [])):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
        if message.get("extensions"):
            response.headers["Sec-WebSocket-Extensions"] = message["extensions"]
        self.handshake_complete = True
        self.passed_through = True
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        protocol = message["protocol"]
        self._on_shutdown = message.get("on_shutdown")
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        message["on_started"]()
        self._release_early_data(protocol)
        # The connection is the application's protocol's now. What parsed and answered the handshake
        # (websockets' protocol with the parsed request and response, the receive queue) would stay
        # allocated for the connection's whole life: idle spliced connections are many.
        del self.conn, self.request, self.response, self.queue, self.writable

    # -- a client that reads nothing --

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
        whether the gateway read them or not (:func:`..passthrough.progress.received`: its TCP delivered
        them). uvicorn failed it with 1011 while its pong waited behind a large message it was still
        sending (a browser on a slow uplink), and, with its reading paused (the application not reading,
        backpressure), for a pong it left unread; never pinging such a client, the gateway kept a dead
        one for ever. Such a client's round ends as if it had answered: the next ping follows.

        Nor is a client charged for a pong while bytes written before the ping are still on their way to
        it (MBs, for a client reading slowly): it is judged by how they drain instead (the stall rule).
        Nor while it is not read and could not send: what it sent fills the window the gateway announced
        to it (:func:`..passthrough.progress.may_send`), its silence nobody's (the upstream leg's keepalive
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

    # -- shutdown --

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
        if not self.close_sent:
            if self.handshake_complete and self.initial_response is None:
                self._close_at_shutdown(wait)
            elif self.initial_response is None:  # not answered yet; a refusal being sent is left to end
                self._refuse_at_shutdown()
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            margin = ABORT_MARGIN if grace is None else min(ABORT_MARGIN, grace / 4)
            self._abort_timer = self.loop.call_later(wait + margin, self._abort)

    def _close_at_shutdown(self, wait: float) -> None:
        """Send 1012, tell the application the server closed the client, then read and drop what the
        client still sends until its close (or ``wait`` seconds): the error-close path."""
        disconnect = {"type": "websocket.disconnect", "code": 1012, "reason": SHUTDOWN_REASON, SERVER_SHUTDOWN: True}
        self.queue.put_nowait(disconnect)  # type: ignore[arg-type]  # uvicorn's disconnect event, one key more
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
            task.cancel(SHUTDOWN_REFUSAL)
        elif task is None and not self.handshake_initiated:
            self.transport.close()  # no request yet: nothing to answer
        # A task created but not started refuses when it starts (run_asgi).

    def _abort(self) -> None:
        """Drop a connection still open ``close_timeout`` after the shutdown: its client reads nothing."""
        self._abort_timer = None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._abort_timer, self._stall_due):
            if timer is not None:
                timer.cancel()
        self._abort_timer = self._stall_due = None
        self._shares = None  # it points back at this protocol: a reference cycle, freed only by a full collection
        super().connection_lost(exc)
        self.conn.forget_parser()  # so does websockets' parser at its protocol

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
        """uvicorn's, but a handshake the shutdown stopped is answered 503 (see :meth:`shutdown`), and a
        cancelled task (the shutdown's, or a forced quit's) logs no traceback."""
        self._task = asyncio.current_task()
        try:
            if self._refusing:  # the shutdown came before this task's first step
                raise asyncio.CancelledError(SHUTDOWN_REFUSAL)
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            if not self._refusing:
                self._end_task()
                raise
            self.send_500_response()
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
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

    # -- log helpers --

    def _client(self) -> str:
        scope = getattr(self, "scope", None)
        if scope is not None:
            return get_client_addr(scope)
        return f"{self.client[0]}:{self.client[1]}" if self.client else ""

    def _path(self) -> str:
        scope = getattr(self, "scope", None)
        return scope["path"] if scope is not None else ""  # uvicorn puts the root path before it


def _seconds(value: object) -> float | None:
    """``value`` if it is a number of seconds (finite, above 0; a bool is none), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    return None


PassthroughWebSocketProtocol = GatewayWebSocketProtocol
"""The former name, kept importable: ``--ws asgi_ws_gateway.server:PassthroughWebSocketProtocol``."""

__all__ = [
    "ABORT_MARGIN",
    "HEADER_TIMEOUT_ENV",
    "SHUTDOWN_REASON",
    "SUPPORTED_VERSION",
    "GatewayH11Protocol",
    "GatewayHTTPProtocol",
    "GatewayWebSocketProtocol",
    "PassthroughWebSocketProtocol",
]
