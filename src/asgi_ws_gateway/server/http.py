"""uvicorn's HTTP protocols with the request-head deadline (:mod:`.head_deadline`), pipelining read
one answer at a time, and an upgrade's early data kept.

``GatewayHTTPProtocol`` (httptools) and ``GatewayH11Protocol`` (h11) give each request head a
deadline and a size limit (408, 431; see :mod:`.head_deadline`).

What follows an upgrade request's head in the same read (frames a client sent without waiting for the
101) goes to the WebSocket protocol with it; uvicorn dropped it.

Pipelined requests are read one answer at a time, as h11 reads them: what follows a request that is
being answered stays unparsed, reading paused, until its response is sent. uvicorn parsed every read
whole, queued each request in it, and read again after every response: a client that sent requests
without reading the answers grew a worker by gigabytes (see :class:`GatewayHTTPProtocol`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..passthrough.lingering_close import is_lingering
from .head_deadline import HeadDeadline
from .log_lines import NO_PARSER_WARNING, UVICORN_ERROR
from .upgrades import HttpToolsUpgrades, close_after_if_not_upgraded, hand_over_early_data, over_http11

_PARSE_SLICE = 2048  # bytes httptools is fed at a time: 128 requests at most (16 bytes the shortest)


class _ReadingGate(FlowControl):
    """uvicorn's flow control, with reading kept paused while the protocol holds bytes it read ahead.

    uvicorn resumes reading after every response and whenever an application calls ``receive()``,
    whatever is still queued; while :attr:`holding`, those calls do nothing, and the protocol
    resumes once it has parsed what it holds.
    """

    holding = False

    def hold(self) -> None:
        self.holding = True
        self.pause_reading()

    def release(self) -> None:
        self.holding = False

    def resume_reading(self) -> None:
        if not self.holding:
            super().resume_reading()


SHUTDOWN_RESPONSE_WAIT = 5.0
"""Seconds a response still being written may hold a shutdown when the server sets no bound of its own."""


class _BoundedShutdown(asyncio.Protocol):
    """At shutdown, a response still being written, or written whole but still in the transport's
    buffer, gets half of ``timeout_graceful_shutdown`` (or :data:`SHUTDOWN_RESPONSE_WAIT`), then its
    connection is dropped with one INFO line. uvicorn waited for either to drain: a client that
    pipelined requests and read nothing held a SIGTERM for the whole timeout, and the task cancelled
    then was logged as an application failure with its traceback; a response complete but unsent (a
    large body the client does not read) was closed, and the close waited for the client too, ended by
    the timeout's ``Cancel 0 running task(s)`` ERROR.

    What the kernel has already taken is not the protocol's: a connection whose answers all fit in its
    socket buffer closes once they are written (uvicorn's close, at once), and with requests still
    unread the kernel resets it, those answers lost. Nothing holds the shutdown then, and nothing is logged.

    A connection lingering after the gateway's refusal (``lingering_close``: the 400, 408, 414 or 431 and
    the response before it still on their way to a slow reader) is left to its linger, and dropped the
    same wait later if it still delivers: uvicorn's shutdown closed its transport outright, and the
    client's next bytes had the kernel reset it (4.9 of 8 MiB read, no 400).
    """

    # Provided by uvicorn's protocol class:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    config: Any
    logger: Any
    client: tuple[str, int] | None

    def shutdown(self) -> None:
        if is_lingering(self.transport):
            # A refusal's lingering close (the gateway's 400, 408, 414, 431) still delivering to a slow
            # reader: uvicorn's close here closed the transport outright, and the client's next bytes had
            # the kernel reset the connection, the rest of the response before it and the refusal lost.
            # The linger ends by its own bounds (the peer's FIN, 2 s taking in nothing); the shutdown's
            # drops one still delivering after the wait below, as a response still being written.
            grace = self.config.timeout_graceful_shutdown
            self.loop.call_later(SHUTDOWN_RESPONSE_WAIT if grace is None else grace / 2, self._drop_lingering)
            return
        super().shutdown()  # type: ignore[misc]  # uvicorn's: closes an idle connection, else ends keep-alive
        unfinished = self.cycle is not None and not self.cycle.response_complete
        # The close uvicorn just asked for waits for the transport's buffer: a client that reads nothing held it.
        if unfinished or self.transport.get_write_buffer_size():
            grace = self.config.timeout_graceful_shutdown
            wait = SHUTDOWN_RESPONSE_WAIT if grace is None else grace / 2
            self.loop.call_later(wait, self._drop_unfinished)

    def _drop_lingering(self) -> None:
        # (A linger that ended, or closes, leaves its protocol on a transport that is closing.)
        if is_lingering(self.transport) and not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            self.logger.info("%s - a refusal still being delivered at shutdown was dropped (the client reads slowly)",
                             client)  # fmt: skip
            self.transport.abort()

    def _drop_unfinished(self) -> None:
        unsent = self.transport.get_write_buffer_size()  # a response written but not read counts too
        if not unsent and (self.transport.is_closing() or self.cycle is None or self.cycle.response_complete):
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        self.logger.info(
            "%s - a response still being written at shutdown was dropped (the client reads nothing)", client
        )
        for cycle in self._cycles():
            # As connection_lost says of the newest, but of each, and before the abort resumes writing
            # (uvloop's does at once): a pending write must find the client gone, not a closed
            # transport (a RuntimeError, logged as the application's failure).
            cycle.disconnected = True
        self.transport.abort()

    def _cycles(self) -> list[Any]:
        """The requests of this connection being answered or waiting to be."""
        return [] if self.cycle is None else [self.cycle]


class GatewayHTTPProtocol(_BoundedShutdown, HeadDeadline, HttpToolsUpgrades):
    """uvicorn's ``HttpToolsProtocol`` that closes a connection whose request head is late or too large.

    An upgrade request goes to a WebSocket protocol with a ``receive_parsed_request`` method (the
    gateway's) as the head httptools parsed, instead of re-serialised for a second parse.

    Pipelined requests are parsed one answer at a time: once a request is read whole, what follows
    it is kept unparsed (one read at most, reading paused) until its response is sent, and
    httptools is fed a slice at a time, so no more than a slice's worth of requests is ever queued.
    uvicorn parsed each read whole, queued every request in it, and resumed reading after each
    response: a client that pipelined ``GET /healthz`` without reading the answers grew the worker
    by 1.1 GiB in 8 s, at 100% CPU.

    Attributes:
        header_timeout: seconds a client has to send a complete request head (request line and
            headers), counted from the connection or from the end of the previous response.
            Default 10, or ``$ASGI_WS_GATEWAY_HEADER_TIMEOUT``.
        max_head_bytes: bytes a request head may have (431 and closed beyond). Default 65536, or
            ``$ASGI_WS_GATEWAY_MAX_HEAD_BYTES``.
    """

    flow: _ReadingGate
    _unparsed: bytearray  # read behind a request being answered, not parsed yet (one read at most)
    _deferred_upgrade: bytearray | None = None  # an upgrade waiting for the responses before it: its early data
    _head_open = False  # httptools began a request head and has not finished it
    _body_open = False  # httptools finished a request head and has not finished its body
    _running: Any = None  # the request being answered (uvicorn's self.cycle is the newest one read)
    _parser_closed = False  # a request read asked to close (or is HTTP/1.0): nothing behind it is served

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _ReadingGate(transport)
        self._unparsed = bytearray()

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn tells the newest request read (self.cycle) that its client went; the one being answered
        # may be an earlier one, with requests queued behind it: its application waited on for http.disconnect,
        # or wrote to the closed transport (uvloop: a RuntimeError, logged with its traceback as its failure).
        for cycle in self._cycles():
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deferred_upgrade is not None:  # the client's first frames: the WebSocket protocol's
            self._deferred_upgrade += data
            self.flow.hold()
            return
        if self._parser_closed and not self._refused and self._answers_pending():
            # Behind a request that asked to close, nothing will be served: dropped, not held (held, it
            # paused the reads, and a client that left went unseen: an application waiting for
            # http.disconnect waited for as long as its response took; uvicorn's told it at once).
            self._drop_following()
        if self._refused:  # dropped, up to the linger's bound, then read on only by _read_on (head_deadline)
            super().data_received(data)
            return
        if self._unparsed:  # behind a request being answered: parsed once it is
            self._unparsed += data
            self.flow.hold()
            return
        if len(data) <= _PARSE_SLICE and self._may_parse():
            super().data_received(data)  # the common case: a slice, parsed at once
            return
        self._unparsed += data
        self._parse()

    def _may_parse(self) -> bool:
        """False once a request is read whole and not yet answered (or queued behind one), and once
        the connection is refused, closing or handed over."""
        if self._refused or self.transport.is_closing() or self.transport.get_protocol() is not self:
            return False
        cycle = self.cycle
        return not self.pipeline and (cycle is None or cycle.response_complete or cycle.more_body)

    def _parse(self) -> None:
        """Feed httptools what is held, a slice at a time, until a request read whole awaits its answer."""
        held = self._unparsed
        while held and self._may_parse():
            chunk = bytes(held[:_PARSE_SLICE])
            del held[:_PARSE_SLICE]  # from the front of a bytearray: the rest is not copied
            super().data_received(chunk)
        if not held:
            if self._deferred_upgrade is None and self._deferred_400 is None:
                self.flow.release()
        elif self._refused or self.transport.is_closing() or self.transport.get_protocol() is not self:
            held.clear()  # not to be read
        elif self._parser_closed and self._answers_pending():
            # Behind a request that asked to close, in the read that brought it: dropped as in a later read
            # (held, it paused the reads, and a client that left went unseen for as long as the response took).
            self._drop_following()
            self._dropped += len(held)
            held.clear()
            if self._deferred_upgrade is None and self._deferred_400 is None:
                self.flow.release()
        else:
            self.flow.hold()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._body_open = True
        queued = len(self.pipeline)
        super().on_headers_complete()
        if len(self.pipeline) == queued:  # answered at once, not queued behind another
            self._running = self.cycle

    def on_message_complete(self) -> None:
        # The body of a request answered already (most requests are not, and cost two checks here).
        cycle = self.cycle
        answered = self._body_open and cycle is not None and cycle.response_complete and self._waiting_for_head()
        self._body_open = False
        # uvicorn closes after the response to a request that asked to, and to any HTTP/1.0 one (llhttp keeps one
        # with Connection: keep-alive alive): from the first such request read, nothing behind is served.
        if not self.parser.should_keep_alive() or self.parser.get_http_version() == "1.0":
            self._parser_closed = True
        super().on_message_complete()
        if answered:
            self._answered_body_ended()

    def _reading_body(self) -> bool:
        return self._body_open

    def _cycles(self) -> list[Any]:
        # self.cycle is the newest request read, which may be queued; the one answered is another.
        found = [self._running, self.cycle, *(cycle for cycle, _ in self.pipeline)]
        return [cycle for cycle in dict.fromkeys(found) if cycle is not None]

    def handle_websocket_upgrade(self) -> None:
        # What followed the head: the rest of its slice, then what was held behind it.
        early = self._early_data + bytes(self._unparsed)
        self._early_data = b""
        self._unparsed.clear()
        if self._answering():
            # Pipelined behind requests still being answered: their responses go first, and the
            # connection becomes the WebSocket protocol's once they are sent. uvicorn handed it over
            # at once: a slow response came after the 101, inside the WebSocket stream, and the
            # keep-alive timer its end armed closed the WebSocket connection 5 s later.
            self._deferred_upgrade = bytearray(early)
            self.flow.hold()  # and nothing more is read meanwhile (uvicorn read on after each response)
            return
        self._upgrade(early)

    def _answering(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        following = self.pipeline[-1][0] if self.pipeline else None
        super().on_response_complete()  # the next queued request starts; the resume it asks for waits
        if following is not None and (not self.pipeline or self.pipeline[-1][0] is not following):
            self._running = following
        if self._deferred_400 is not None and self._send_deferred_400():
            self.flow.release()  # what the client still sends is read and dropped until the close
            self.flow.resume_reading()
        if self.transport.is_closing():
            return
        early = self._deferred_upgrade
        if early is not None:
            if self._answering():
                return
            self._deferred_upgrade = None
            self._unset_keepalive_if_required()  # armed by the response just completed
            self._disarm()  # and the next request's head deadline: there is no next request
            self._upgrade(bytes(early))
            return
        if self._head_open:
            # The next head began in the slice that ended the request just answered: it counts
            # towards max_head_bytes from its start (what httptools kept of it), not from here.
            self._head_started = True
            self._head_bytes = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            self._head_line_end = 0 if self.headers else -1  # a header was read: the request line ended
        if self._unparsed:
            self._parse()  # the requests read behind the one just answered
            if not self._unparsed and not self.pipeline:
                self.flow.resume_reading()  # as uvicorn did above, had nothing been held

    def _answers_pending(self) -> bool:
        return any(not cycle.response_complete and not cycle.disconnected for cycle in self._cycles())

    def _may_write_400(self) -> bool:
        # A bad chunk in the rest of the body of a request answered already (the application did not read
        # it) is no request of its own: closed without a second answer, as under h11 and as that body's
        # rest past the head's bounds (_end_answered_body). A 400 followed the request's own answer.
        cycle = self.cycle
        return not (self._body_open and cycle is not None and cycle.response_complete)

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        if self._deferred_400 is not None:
            self.flow.hold()  # nothing more is read until the 400 is written

    def _upgrade(self, early: bytes) -> None:
        """Hand the connection to the WebSocket protocol, with the bytes that followed the request head."""
        self.flow.release()
        self.flow.resume_reading()  # paused while they were held: the WebSocket protocol pauses for itself
        receiver = getattr(self.ws_protocol_class, "receive_parsed_request", None)
        if receiver is None:  # another WebSocket implementation: uvicorn's way
            super().handle_websocket_upgrade()
            del self.parser  # as below
            hand_over_early_data(self.transport, early)
            return
        # uvicorn's handle_websocket_upgrade, but the head goes over as parsed, not as bytes.
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sUpgrading to WebSocket", prefix)
        self.connections.discard(self)
        protocol: Any = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )  # (the loop given, as uvicorn does not: asyncio.get_event_loop() is a getpid() call on Python 3.11)
        scheme = "wss" if self.scheme == "https" else "ws"  # as uvicorn's connection_made reads it
        # The transport is the WebSocket protocol's before it reads the request: a refusal there lingers
        # (passthrough/lingering_close.py) by making the linger the transport's protocol, which a
        # set_protocol after would undo (the refused client's bytes then read until the linger's 2 s, unbounded).
        self.transport.set_protocol(protocol)
        protocol.adopt_connection(self.transport, self.server, self.client, scheme)
        protocol.receive_parsed_request(self.scope["method"].encode(), self.url, self.scope["headers"])
        # This protocol gets no more callbacks; its parser holds its bound methods, a cycle only the
        # garbage collector would free.
        del self.parser
        hand_over_early_data(self.transport, early)


class GatewayH11Protocol(_BoundedShutdown, HeadDeadline, H11Protocol):
    """The same deadline and size limit on uvicorn's pure-Python ``H11Protocol``.

    Use it with ``--http asgi_ws_gateway.server:GatewayH11Protocol`` where httptools is not installed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.logger is UVICORN_ERROR:  # uvicorn's (a later uvicorn setting another keeps it as it is)
            self.logger = NO_PARSER_WARNING
        if self.config.h11_max_incomplete_event_size is None:
            # h11's default 16 KiB buffer refused a longer head with 400, but only a head that came in
            # two reads or more (one read whole passes at any size): a 20 KiB head was served over
            # loopback and refused over a network. The head limit (431 past max_head_bytes) decides.
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)

    def data_received(self, data: bytes) -> None:
        # The rest of the body of a request answered already and the next request head may share a read (a
        # 62 kB upload and a 6 kB head: one read of 68 kB under asyncio's loop): the whole read counted toward
        # that head, which was refused. Fed a slice at a time while in that body, as httptools is, the head
        # counts from the body's end (to a slice).
        start = 0
        while len(data) - start > _PARSE_SLICE and self._reading_body() and self._waiting_for_head():
            super().data_received(data[start : start + _PARSE_SLICE])
            start += _PARSE_SLICE
        super().data_received(data[start:] if start else data)

    def _should_upgrade(self) -> bool:
        return over_http11(self.scope) and super()._should_upgrade()

    def _reading_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    def _unsupported_upgrade_warning(self) -> None:
        self.logger.info("Unsupported upgrade request: answered as HTTP.")  # as HttpToolsUpgrades

    def handle_events(self) -> None:
        answered = self._reading_body() and self._waiting_for_head()  # the body of a request answered already
        super().handle_events()
        if answered and not self._reading_body():
            self._answered_body_ended()
        # h11 reads one request at a time: a new cycle is the request just read, being answered as HTTP.
        if self.transport.get_protocol() is self and self.cycle is not None and not self.cycle.response_complete:
            close_after_if_not_upgraded(self.cycle)

    def on_response_complete(self) -> None:
        # h11 parses a request pipelined behind this one from its buffer, with no read for the head
        # limit to count (the read that brought it was counted toward the answered request's head):
        # its head is held to the limit here, whole or begun.
        if not self.transport.is_closing() and self.conn.their_state is h11.DONE:
            if self._held_head_too_large(self.conn.trailing_data[0]):
                self.server_state.total_requests += 1  # uvicorn's count (--limit-max-requests), as it would
                return
            super().on_response_complete()
            if self._waiting_for_head() and (held := self.conn.trailing_data[0]):
                self._count_held_head(held)  # begun, not complete: later reads add to it
            return
        super().on_response_complete()

    def _may_write_400(self) -> bool:
        # A request's response complete before its body was read whole: the bytes refused are the rest of
        # that body, and h11 takes no second response to it (uvicorn's raised out of data_received, a
        # "Fatal error on transport" traceback). The connection ends after that response instead.
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        super().handle_websocket_upgrade(event)
        # What followed the request head in h11's buffer: the client's first frames (uvicorn dropped them).
        early, _ = self.conn.trailing_data
        hand_over_early_data(self.transport, early)


__all__ = ["GatewayH11Protocol", "GatewayHTTPProtocol"]
