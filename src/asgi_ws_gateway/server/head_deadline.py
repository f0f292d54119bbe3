"""A deadline and a size limit for the request head (slowloris), and room made near the open-file limit.

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends its
request head a byte at a time (or not at all) keeps it for as long as it likes: every WebSocket
handshake passes through this stage, before the WebSocket protocol exists. :class:`HeadDeadline`,
mixed into the gateway's HTTP protocols (:mod:`.http`), gives each request head ``header_timeout``
seconds from the connection (or the previous response) on; a client that is late gets ``408 Request
Timeout`` (or, when it sent nothing, a plain close).

The deadline is ``$ASGI_WS_GATEWAY_HEADER_TIMEOUT`` seconds (default 10), read once at import; a
subclass may set ``header_timeout`` instead. A wrong value of either variable does not break the
import: ``run`` refuses to serve and the gateway fails its lifespan start-up, naming it.

The head is bounded in size too: httptools accepts a header of any size, so a client could make a
worker buffer hundreds of megabytes within the deadline. A head larger than ``max_head_bytes``
(``$ASGI_WS_GATEWAY_MAX_HEAD_BYTES``, default 64 KiB: above ``handshake_limits``' defaults of 32 KiB
of headers and an 8 KiB target) gets ``431`` and the connection is closed.

Within the deadline, connections that send nothing still hold a descriptor each: enough of them
use up the process's open-file limit, and then the event loop accepts each new connection only to
close it at once (libuv) or stops accepting (asyncio) — health checks included. So a connection
that lands near the limit makes room: the connections that have waited longest for a request head
(idle keep-alive ones included) are closed, a warning says how many, and an upgraded or in-flight
connection is never touched (see :class:`_HeadWaiters`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable
from itertools import islice
from typing import Any, Protocol, TypeVar

from ..config.fields import MIN_TIMEOUT
from ..handshake.capacity import RESERVED_DESCRIPTORS, SHED
from ..handshake.server_refusals import server_refused
from ..passthrough.lingering_close import LINGER_BYTES, LINGER_SECONDS, lingering
from ..startup import report_variable_problem
from .tls_close import TLS_CLOSES

if sys.platform != "win32":
    import resource

T = TypeVar("T")
logger = logging.getLogger(__name__)

HEADER_TIMEOUT_ENV = "ASGI_WS_GATEWAY_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0
MIN_HEADER_TIMEOUT = MIN_TIMEOUT
"""The shortest deadline, as the configuration's timeouts: 1e-300 s dropped every head sent in two packets."""
MAX_HEADER_TIMEOUT = 300.0
"""The longest, as ``handshake_limits.policy_timeout``: no client waits longer for its 101 (1e300 s: no deadline)."""
MAX_HEAD_BYTES_ENV = "ASGI_WS_GATEWAY_MAX_HEAD_BYTES"
DEFAULT_MAX_HEAD_BYTES = 64 * 1024
MAX_MAX_HEAD_BYTES = 1024 * 1024
"""The largest head limit taken: a head is buffered whole per connection before it is parsed, and at 10^20
the 431 was off (a client could make every connection hold what it sent)."""

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 26\r\nconnection: close\r\n\r\nrequest head not complete\n"
)


_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 23\r\nconnection: close\r\n\r\nrequest head too large\n"
)


_URI_TOO_LONG_RESPONSE = (
    b"HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 24\r\nconnection: close\r\n\r\nrequest target too long\n"
)
_MAX_REQUEST_LINE = 8192
_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # a decimal, exponent allowed


def _max_head_bytes_from_env() -> int:
    raw = os.environ.get(MAX_HEAD_BYTES_ENV, "")
    if not raw:
        return DEFAULT_MAX_HEAD_BYTES
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise ValueError(f"{MAX_HEAD_BYTES_ENV}: expected a positive number of bytes, got {raw!r}")
    if int(raw) > MAX_MAX_HEAD_BYTES:
        raise ValueError(f"{MAX_HEAD_BYTES_ENV}: expected at most {MAX_MAX_HEAD_BYTES} bytes (1 MiB), got {raw!r}")
    return int(raw)


def _header_timeout_from_env() -> float:
    raw = os.environ.get(HEADER_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_HEADER_TIMEOUT
    # ASCII digits only, as every other number the gateway reads: float() also takes "٣" (3), "1_0",
    # " 3 " and "nan", none of which an operator writes meaning a number of seconds.
    value = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{HEADER_TIMEOUT_ENV}: expected a positive number of seconds, got {raw!r}")
    if not MIN_HEADER_TIMEOUT <= value <= MAX_HEADER_TIMEOUT:
        raise ValueError(
            f"{HEADER_TIMEOUT_ENV}: expected seconds from {MIN_HEADER_TIMEOUT:g} to {MAX_HEADER_TIMEOUT:g}, got {raw!r}"
        )
    return value


def _from_env(read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` with the problem reported: ``run`` and the gateway's start-up refuse it."""
    try:
        return read()
    except ValueError as exc:
        report_variable_problem(str(exc))
        return default


SHED_MARGIN = RESERVED_DESCRIPTORS // 2
"""A connection whose descriptor lands this close to the open-file limit sheds waiting connections."""
_SHED_REPORT_INTERVAL = 10.0  # seconds between warnings while shedding goes on (the first is at once)


class Waiting(Protocol):
    """A connection that has sent no request head yet, and may be closed to make room."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop serving it (a transport is closed from its own loop)."""

    @property
    def transport(self) -> asyncio.BaseTransport:
        """Its connection's transport."""

    def shed(self) -> None:
        """Close the connection, to make room for new ones."""


class _HeadWaiters:
    """This process's connections waiting for a request head (or, over TLS, still in their handshake:
    :mod:`.tls_loop`), longest waiting first.

    Sockets get the lowest free descriptor number (POSIX), so a new connection's descriptor tells how
    full the table is without counting it. One that lands within :data:`SHED_MARGIN` of the
    open-file limit closes as many waiting connections as it is into the margin (one at least):
    bursts the loop accepts at once are made up for, and the table stays below the limit for as
    long as there are waiting connections to close. A client sends its head within milliseconds of
    connecting, so the longest waiting are the idle ones.
    """

    def __init__(self) -> None:
        self.waiting: dict[Waiting, None] = {}  # insertion-ordered: the longest waiting first
        self._limit: int | None = -1  # the soft open-file limit (None: unlimited), read at the first connection
        self._reported = 0  # SHED.value when the last warning was written
        self._last = (0, 0)  # the descriptor that last made room, and the limit then
        self._summary: asyncio.AbstractEventLoop | None = None  # the loop a summary line is due on

    def admitted(self, connection: Waiting, transport: asyncio.BaseTransport) -> None:
        """``connection`` has just been accepted: make room when its descriptor is near the limit."""
        sock = transport.get_extra_info("socket")
        if sock is None or self._over(sock.fileno()) <= 0:
            return
        over = self._over(sock.fileno(), reread=True)  # near the limit read first: is it still the limit?
        if over <= 0 or self._limit is None:
            return
        loop = connection.loop
        # This loop's connections only: a transport is closed from its own loop.
        for waiting in list(islice((waiting for waiting in self.waiting if waiting.loop is loop), over)):
            del self.waiting[waiting]
            waiting.shed()
            SHED.value += 1
        self._last = (sock.fileno(), self._limit)
        if self._summary is None or self._summary.is_closed():  # the first at once; then one line per interval
            self._report()
            self._summary = loop
            loop.call_later(_SHED_REPORT_INTERVAL, self._next_report)

    def _over(self, descriptor: int, reread: bool = False) -> int:
        """How far ``descriptor`` is into the margin below the soft open-file limit (<= 0: not in it)."""
        if sys.platform == "win32":
            return 0
        if self._limit == -1 or reread:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            self._limit = None if soft == resource.RLIM_INFINITY else soft
        return 0 if self._limit is None else descriptor - (self._limit - SHED_MARGIN) + 1

    def _next_report(self) -> None:
        if SHED.value == self._reported:
            self._summary = None
            return
        self._report()
        asyncio.get_running_loop().call_later(_SHED_REPORT_INTERVAL, self._next_report)

    def _report(self) -> None:
        logger.warning(
            "open-file limit nearly reached (descriptor %d of %d): closed %d connections that had not sent a "
            "request head (or finished their TLS handshake), the longest waiting first (raise the limit, ulimit -n, "
            "or look for a flood of idle connections)",
            *self._last, SHED.value - self._reported,
        )  # fmt: skip
        self._reported = SHED.value


HEAD_WAITERS = _HeadWaiters()
"""The process's connections waiting for a request head (one event loop per process serves them)."""


TLS_UNBOUNDED = (
    "this server ends TLS itself on an event loop that gives a TLS handshake 60 s, which "
    "the request-head deadline and the shedding near the open-file limit do not see: serve it with uvicorn's "
    "--loop asgi_ws_gateway.server:tls_bounded_loop, or end TLS at a proxy in front"
)
_tls_warned = False


def _tls_unbounded(loop: asyncio.AbstractEventLoop) -> None:
    """One WARNING per process at the first TLS connection on a loop that leaves its handshakes at 60 s
    (:mod:`.tls_loop` marks its loops ``bounds_tls``)."""
    global _tls_warned
    if not _tls_warned and not getattr(loop, "bounds_tls", False):
        _tls_warned = True
        logger.warning(TLS_UNBOUNDED)


class _Written:
    """Stands in for a transport while uvicorn writes an answer: keeps what it writes, ignores its close."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        return None


class HeadDeadline(asyncio.Protocol):
    """The request-head deadline, for either of uvicorn's HTTP protocols (mixed in before it)."""

    header_timeout: float = _from_env(_header_timeout_from_env, DEFAULT_HEADER_TIMEOUT)
    max_head_bytes: int = _from_env(_max_head_bytes_from_env, DEFAULT_MAX_HEAD_BYTES)
    _head_timer: asyncio.TimerHandle | None = None
    _head_started = False
    _head_bytes = 0
    _head_tail = b""  # the last bytes of the head so far: its blank line may span two reads
    _head_line_end = -1  # where the request line ends in the head (-1: not yet)
    _refused = False
    _deferred_400: str | None = None  # the message of a 400 waiting for the responses before it
    _dropped = 0  # bytes read and dropped since the refusal, while the connection is still this protocol's
    _peer_watch: asyncio.TimerHandle | None = None  # while a 400 waits: the next bytes dropped (_read_on)
    # Provided by uvicorn's protocol class:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    logger: logging.Logger
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        HEAD_WAITERS.admitted(self, transport)
        self._arm()
        if transport.get_extra_info("sslcontext") is not None:
            _tls_unbounded(self.loop)
            # uvicorn's own closes (after a response to a request that asked to close, HTTP/1.0's, a
            # keep-alive timeout) held to a lingering close's bounds too: closing, the TLS layer read on
            # what the client still sent, unseen, 12.7-13.1 GB in 20 s, where plain text resets it at once.
            self.transport = lingering(transport)
            # Watched as the protocols hold it (the WebSocket protocol takes it over): forgotten at their
            # connection_lost (this one's, ClientLeg's), not only at the look after.
            TLS_CLOSES.watch(self.transport, self.loop, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        TLS_CLOSES.forget(self.transport)
        self._disarm()
        if self._peer_watch is not None:
            self._peer_watch.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the answer is sent or waits (a 400 deferred): what still arrives is dropped
            # Up to the linger's bound, then not read: behind a request whose response was still being
            # written (under h11 any byte behind a Connection: close request) it was read for as long as
            # that response lasted, 2.5 GB in 2 s over loopback, a core busy for a stream's whole life.
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES and self.transport.get_protocol() is self:  # (a linger reads on)
                self.transport.pause_reading()  # until _read_on
            return
        if self._waiting_for_head():
            seen, tail = self._head_bytes, self._head_tail
            self._head_bytes += len(data)
            if self._head_line_end < 0 and (line_end := data.find(b"\n")) != -1:  # find: see routing.split_path
                self._head_line_end = seen + line_end
            self._head_tail = (tail + data)[-3:]
            if self._head_bytes > self.max_head_bytes and not self._head_ends_in_time(tail + data, seen - len(tail)):
                self._head_too_large()  # refused before the parser buffers any of it
                return
        super().data_received(data)
        if self._waiting_for_head():
            self._head_started = True
            self._arm()
        else:
            self._head_bytes, self._head_tail, self._head_line_end = 0, b"", -1
            self._disarm()

    def _held_head_too_large(self, held: bytes) -> bool:
        """A request head the parser already holds (pipelined behind the request just answered, read
        with it and counted as its head's bytes): refused, and True, when it is over the limit."""
        if len(held) <= self.max_head_bytes or self._head_ends_in_time(held, 0):
            return False
        self._head_line_end = held.find(b"\n")
        self._head_too_large()
        return True

    def _count_held_head(self, held: bytes) -> None:
        """The start of the next request head, held by the parser: what later reads add to."""
        self._head_started = True
        self._head_bytes, self._head_tail, self._head_line_end = len(held), held[-3:], held.find(b"\n")

    def _head_ends_in_time(self, window: bytes, offset: int) -> bool:
        """True when the blank line ending the head is in ``window`` (at ``offset``) within the limit."""
        end = window.find(b"\r\n\r\n")
        return end >= 0 and offset + end + 4 <= self.max_head_bytes

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._head_started = False
        self._head_bytes, self._head_tail, self._head_line_end = 0, b"", -1
        if self._waiting_for_head():  # the next request's head gets a fresh deadline
            self._disarm()
            self._arm()

    def timeout_keep_alive_handler(self) -> None:
        # Armed by the response before a refusal (a 400 that waited for it, a 408 for a head begun behind
        # it): the refusal closes lingering, a FIN with the transport not closing, and uvicorn's close here
        # cut it short while the linger still delivered to a slow reader; the client's next bytes met a
        # closed socket and the kernel reset it, the rest of the response and the refusal lost.
        if not self._refused:
            super().timeout_keep_alive_handler()  # type: ignore[misc]

    def _waiting_for_head(self) -> bool:
        """True while no request is being served and the connection was not handed to a WebSocket protocol."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return False
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
            HEAD_WAITERS.waiting[self] = None

    def _disarm(self) -> None:
        HEAD_WAITERS.waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def shed(self) -> None:
        """Closed to make room for new connections (the process is near its open-file limit)."""
        self._disarm()
        if self._waiting_for_head():
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        HEAD_WAITERS.waiting.pop(self, None)
        if not self._waiting_for_head():
            return
        if self._reading_body():
            self._end_answered_body(f"still arriving after {self.header_timeout:g}s")
            return
        if self._head_started:  # a client that sent nothing gets no response, as on a keep-alive timeout
            self.logger.info("%s - request head not complete after %gs: 408", self._client_text(), self.header_timeout)
            server_refused(408)
            self._refuse(_TIMEOUT_RESPONSE)
            return
        self.transport.close()

    def _head_too_large(self) -> None:
        if self._reading_body():
            self._disarm()
            self._end_answered_body(f"over {self.max_head_bytes} bytes")
            return
        client = self._client_text()
        # A request line over the server's 8 KiB is a 414 whatever follows it, as the parser says.
        line_only = self._head_line_end < 0 or self._head_line_end > _MAX_REQUEST_LINE
        self.logger.info("%s - request head larger than %d bytes: %d", client, self.max_head_bytes,
                         414 if line_only else 431)  # fmt: skip
        self._disarm()
        server_refused(414 if line_only else 431)
        self._refuse(_URI_TOO_LONG_RESPONSE if line_only else _TOO_LARGE_RESPONSE)

    def _client_text(self) -> str:
        """The client's ``address:port`` for a log line (empty when uvicorn has none)."""
        return f"{self.client[0]}:{self.client[1]}" if self.client else ""

    def _reading_body(self) -> bool:
        """Whether the parser is inside a request's body (the protocol class says; False if it cannot)."""
        return False

    def _answered_body_ended(self) -> None:
        """The body of a request answered already is all in: the next head counts, and is timed, from here
        (the body's bytes had counted toward it: a small head behind a 62 kB body got a 414)."""
        self._head_started = False
        self._head_bytes, self._head_tail, self._head_line_end = 0, b"", -1
        self._disarm()
        self._arm()

    def _end_answered_body(self, what: str) -> None:
        """The rest of the body of a request answered already (the application did not read it) went past
        the head's bounds, where the next head is awaited: closed, without a second answer. Taken for the
        next head, it got a 414 or a 408 written after the request's own answer."""
        client = self._client_text()
        self.logger.info("%s - the body of a request already answered went on, %s: closed", client, what)
        self._refused = True
        lingering(self.transport).close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request its parser refused, closed as :meth:`_refuse` closes: uvicorn closed the
        socket at once, and a client still sending was reset and lost the answer.

        A request whose body was refused is over for its application (``disconnected``, and woken if it
        waits in ``receive()``: it woke only at the close, 2 s on); a response after the 400 raised in h11
        (a traceback logged per bad request body). When its response has begun, no 400 follows it: the
        connection ends and the client reads that response cut short; when it is complete, none either (see
        ``_may_write_400``). A 400 for bytes behind a request read whole waits for the responses before it:
        uvicorn wrote it at once, inside a response still being written (httptools), or raised out of
        ``data_received`` with that response cut short (h11)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:  # the bytes refused are its body
            cycle.disconnected = True
            # No 100 Continue for a body refused: the application's first receive() wrote one to the
            # half-closed transport (a RuntimeError under uvloop, h11's LocalProtocolError) after the 400.
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()
            if cycle.response_started:
                self._invalid_request_line("closed, its response begun")
                self._refuse(b"")
                return
        if self._answers_pending():
            self._deferred_400 = msg  # its line once it is written (a request that closes the connection: never)
            self._drop_following()
            return
        if self.transport.is_closing():
            return
        if not self._may_write_400():
            self._invalid_request_line("closed, its request answered already")
            self._refuse(b"")
            return
        self._invalid_request_line("400")
        server_refused(400)
        transport, written = self.transport, _Written()
        self.transport = written  # type: ignore[assignment]
        try:
            super().send_400_response(msg)  # type: ignore[misc]  # writes the answer, then closes
        finally:
            self.transport = transport
        self._refuse(b"".join(written.parts))

    def _invalid_request_line(self, outcome: str) -> None:
        """The INFO line naming the client of a request the parser refused, and what it was told (uvicorn's
        WARNING named nobody; written before the outcome was known, it said 400 where none was sent)."""
        self.logger.info("%s - invalid HTTP request: %s", self._client_text(), outcome)

    def _answers_pending(self) -> bool:
        """Whether a response to a request read before the bytes being refused is still to be written whole.

        h11 reads a request only once the one before it is answered: the request being answered is the
        newest. It refuses bytes behind a request read whole only when that request asked to close the
        connection, which uvicorn closes after its response: a 400 deferred there is never written."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.disconnected

    def _may_write_400(self) -> bool:
        """False when the parser cannot write a 400 now (see :class:`~.http.GatewayH11Protocol`)."""
        return True

    def _send_deferred_400(self) -> bool:
        """The 400 that waited for the responses before it (:meth:`send_400_response`), once they are
        written; True when it was written now."""
        msg = self._deferred_400
        if msg is None or self._answers_pending() or self.transport.is_closing():
            return False
        self._deferred_400 = None
        self.send_400_response(msg)
        return True

    def _drop_following(self) -> None:
        """What still arrives is dropped while the responses before it are written (a 400 waiting behind
        them, or nothing more to serve), its client's close still seen (:meth:`_read_on`)."""
        self._refused = True
        if self._peer_watch is None:
            self._peer_watch = self.loop.call_later(LINGER_SECONDS, self._read_on)

    def _read_on(self) -> None:
        """While a 400 waits (or what follows a request that asked to close is dropped: :meth:`_drop_following`)
        the reads are paused (held by the protocol, or past the bytes dropped), and a
        client that closed behind its flood went unseen (its FIN queued behind bytes the socket would not
        take): an application waiting for ``http.disconnect`` waited on, the client gone. Up to
        :data:`LINGER_BYTES` more is read and dropped every :data:`LINGER_SECONDS` (0.5 MB/s at most): a
        client gone is drained to its end, which uvicorn tells the application of, in a few of those."""
        self._peer_watch = None
        if not self._answers_pending() or self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        self._dropped = 0
        self.transport.resume_reading()
        self._peer_watch = self.loop.call_later(LINGER_SECONDS, self._read_on)

    def _refuse(self, response: bytes) -> None:
        """Answer a client that may still be sending, and close without losing the answer."""
        self._refused = True
        self.transport.write(response)
        # Closing with the client's bytes still unread would reset the connection and lose the
        # answer (RFC 9112 §9.6): half-close, drop what still arrives, close at the client's FIN or at
        # the lingering close's bounds (2 s, 1 MiB). Its own 2 s timer here read all that came meanwhile:
        # 10-12 GB from one client over loopback, a core busy per refused connection.
        lingering(self.transport).close()


__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEAD_BYTES",
    "HEADER_TIMEOUT_ENV",
    "HEAD_WAITERS",
    "MAX_HEADER_TIMEOUT",
    "MAX_HEAD_BYTES_ENV",
    "MAX_MAX_HEAD_BYTES",
    "MIN_HEADER_TIMEOUT",
    "SHED_MARGIN",
    "TLS_UNBOUNDED",
    "HeadDeadline",
    "Waiting",
]
