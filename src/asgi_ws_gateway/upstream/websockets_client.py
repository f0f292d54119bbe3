"""The ``ws://``/``wss://`` connector: the ``websockets`` asyncio client, redirects refused, a fast send path."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.datastructures import is_valid_header_value
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHeader,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    WebSocketException,
)
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.typing import Subprotocol

from .._types import Data
from ..bounded import may_carry_credential, split_url
from ..config.apis import ApiConfig, UpstreamConfig
from ..errors import UpstreamTimeout, UpstreamUnreachable, local_shortage, upstream_refusal
from ..held_pings import HeldPings
from ..loop_watch import BYTES_PER_TURN, ReadShares
from ..redact import redact_text
from .base import UpstreamClosed, UpstreamConnection, UpstreamRequest
from .interim import InterimResponses, UnreadableHead
from .refusal import HeldRefusal, is_refusal
from .request import bad_request, kept_response_headers
from .resolver import RESOLVER, host_and_port
from .tls import UpstreamTls, checked

logger = logging.getLogger(__name__)

# (all of ``_FastSend``, checked with websockets 14 to 17); a connection without them takes
# ``Connection.send`` every time.
_FAST_SEND_ATTRIBUTES = (
    "protocol", "paused", "send_in_progress", "send_data", "drain", "transport", "connection_lost_waiter",
)  # fmt: skip
# Response headers of the upstream's handshake that describe it rather than the application.


class _ClientProtocol(HeldPings, ClientProtocol):
    """websockets' client protocol, owing one pong to an upstream that pings while it reads nothing,
    and remembering that it failed the connection (whoever found the fault: the parser, ``recv()``'s
    UTF-8 check, the keepalive)."""

    failed = False

    def fail(self, code: int, reason: str = "") -> None:
        super().fail(code, reason)
        self.failed = True


_MAX_INTERIM_BYTES = 64 * 1024
"""Bytes of interim responses before the answer, over all of them (as the splice's head limit)."""


_LINGER_WITHOUT_TIMEOUT = 10.0
"""Seconds a finished upstream socket is kept for the upstream to close it when no close_timeout is set."""


class _Lingering(asyncio.Protocol):
    """The TCP connection of a WebSocket that is over, until the upstream closes it or the deadline passes.

    What the upstream still sends is discarded; at its EOF the transport is closed, at the deadline
    aborted. ``closed`` is done once the transport is.
    """

    def __init__(self, transport: asyncio.Transport, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        if deadline is None:  # close_timeout: None (wait for ever) would keep a socket per such upstream
            deadline = loop.time() + _LINGER_WITHOUT_TIMEOUT
        self._timer = loop.call_at(deadline, transport.abort)
        transport.set_protocol(self)
        transport.resume_reading()  # the client may have paused it (a full receive queue): EOF must get in

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)


class _ClientConnection(ClientConnection):
    """The asyncio client connection, with :class:`_ClientProtocol` told of the transport's flow control,
    and over when the WebSocket is, not when TCP is.

    websockets' client waits for the server to close TCP after the closing handshake (RFC 6455
    §7.1.1) or after failing the connection, and only then ends ``recv()``; its ``close_timeout``
    is enforced only while a ``send``/``close`` waits. An upstream that keeps the socket open
    would hold the relay (and the client, and a connection slot) until a keepalive ping failed, or
    for ever. So once the upstream's close frame arrived (and the echo went out), or the
    connection was failed (a protocol error: our close frame went out), the transport is handed
    to :class:`_Lingering` and the connection is reported lost: ``recv()`` ends (after the
    messages already received), ``send`` raises, and ``close`` waits for the TCP connection to end,
    by the upstream's hand or at ``close_timeout`` from the close.
    """

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        protocol.__class__ = _ClientProtocol  # only methods differ: the instance keeps its state
        super().__init__(protocol, **kwargs)
        self.lingering: _Lingering | None = None
        self._receiving = False
        # Until the answer's status line: websockets takes any status but 101 for a refusal, and an
        # interim response (100 Continue, 103 Early Hints) before the 101 made a healthy upstream a 502.
        self._interim: InterimResponses | None = InterimResponses(_MAX_INTERIM_BYTES)
        self._head = bytearray()
        # Then a refusal, held back until its body is in, cut as the splice cuts it: websockets failed
        # the handshake on a body over 1 MiB, a 502 counted against a backend that had answered 403.
        self._answering = True
        self._refusal: HeldRefusal | None = None
        self._shares: ReadShares | None = None  # a large read's frames, a share per loop turn
        self.keepalive_failed = False  # the upstream answered no ping in ping_timeout: it sent no close
        self._unread = False  # the relay left messages unread (reading paused) since the keepalive's last ping

    def data_received(self, data: bytes) -> None:
        if self._answering:  # the handshake's answer (one test per message after it)
            data = self._answer(data)
            if not data:
                return
        shares = self._shares
        if (shares is not None and shares.waiting) or len(data) > BYTES_PER_TURN:
            (shares or self._read_shares()).add(data)
            return
        self._parse(data)

    def _read_shares(self) -> ReadShares:
        """A large read's frames, parsed a share per loop turn (websockets parses a read whole: a hostile
        upstream's 256 KiB of tiny frames held every connection of the worker 0.25 s). Nothing after the
        close frame (or a failure) is read; reading resumes unless the relay has messages enough to take."""
        transport = self.transport

        def live() -> bool:
            return self.lingering is None and not transport.is_closing()

        self._shares = ReadShares(
            transport, self._parse, live=live, may_read=lambda: live() and not self.recv_messages.paused
        )
        return self._shares

    def _parse(self, data: bytes) -> None:
        self._receiving = True  # its send_data must not hand over before the frames are processed
        try:
            super().data_received(data)
        finally:
            self._receiving = False
        if self.protocol.handshake_exc is not None and not self.transport.is_closing():
            # The answer failed the handshake (a head or a refusal's body over websockets' limits, a
            # bad 101): websockets waited for the upstream's EOF to report it, and an upstream that
            # kept sending held the handshake to connect_timeout (a 504, not the 502 it is).
            self.transport.abort()
            return
        self._linger_if_over()

    def _answer(self, data: bytes) -> bytes:
        """What websockets may read of the answer so far: past its interim responses, a refusal whole."""
        if self._interim is not None:
            data = self._past_interim(data)
            if not data:
                return b""
        refusal = self._refusal
        if refusal is None:
            if not is_refusal(data):  # its status line is in: a 101, as most are, passes at once
                self._answering = False
                return data
            refusal = self._refusal = HeldRefusal()
        data = refusal.feed(data)
        self._answering = not refusal.settled
        return data

    def eof_received(self) -> None:
        if self._answering and self._refusal is not None and (held := self._refusal.eof()):
            self._answering = False
            self._parse(held)  # the refusal's body ended with the connection
        super().eof_received()

    def _past_interim(self, data: bytes) -> bytes:
        """What websockets may read of the answer so far: nothing while an interim response may lead
        it, then everything after the interim responses (dropped)."""
        head, interim = self._head, self._interim
        assert interim is not None
        head += data
        try:
            if not interim.skip(head):
                return b""
        except UnreadableHead:
            pass  # websockets reads the response that went over (or its bare LF) and fails the handshake: a 502
        self._interim, self._head = None, bytearray()
        return bytes(head)

    def send_data(self) -> None:
        super().send_data()
        # A failure found outside data_received: a text message that is not UTF-8 (recv() fails the
        # connection with 1007) or a keepalive timeout. websockets then waited close_timeout for the
        # upstream's TCP close inside recv(), and the client heard nothing until then.
        if not self._receiving:
            self._linger_if_over()

    def _linger_if_over(self) -> None:
        """Hand the transport over once the WebSocket is over: the upstream's close frame is in, or
        the connection was failed (our close frame is out)."""
        protocol = self.protocol
        if protocol.state is not State.CLOSING or self.lingering is not None:
            return  # open, as for every message: one test
        if protocol.close_rcvd is None and not cast(_ClientProtocol, protocol).failed:
            return
        if self.keepalive_task is not None and asyncio.current_task() is self.keepalive_task:
            # The keepalive failed the connection and waits for connection_lost(), which cancels it.
            # Lost from inside the task, the cancellation never landed: websockets' keepalive went on
            # to log "keepalive ping failed" at ERROR with an AssertionError's traceback, per connection.
            self.loop.call_soon(self._linger_if_over)
            return
        if self.connection_lost_waiter.done():
            return  # the transport ended meanwhile (a deferred hand-over)
        self.lingering = _Lingering(self.transport, self.close_deadline)
        self.connection_lost(None)  # the transport now reports to the lingering protocol only

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        messages = self.recv_messages
        pause = messages.pause

        def pause_and_note() -> None:
            self._unread = True
            pause()

        messages.pause = pause_and_note

    async def keepalive(self) -> None:
        """websockets' keepalive, charging the upstream only for silence it chose.

        websockets waited for the pong from when the ping was written, and wrote it only once the
        write buffer drained: an upstream that reads nothing (frozen, its socket open) was never found
        dead, and one the gateway did not read (the client reads slowly: the relay's queue is full)
        was failed with its pong unread. Here ``ping_timeout`` starts with the ping, its wait to be
        written included, and a round in which the gateway paused reading the upstream is not held
        against it.
        """
        assert self.ping_interval is not None
        timeout = self.ping_timeout
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                if timeout is None:
                    await self.ping()
                    continue
                try:
                    async with asyncio.timeout(timeout):  # a ping stuck behind unread writes counts
                        pong = await self.ping()
                except TimeoutError:
                    await self._fail_keepalive("read nothing (its ping could not be written)")
                    return
                while True:
                    self._unread = self.recv_messages.paused
                    try:
                        async with asyncio.timeout(timeout):
                            await asyncio.shield(pong)
                        break
                    except TimeoutError:
                        if not (self._unread or self.recv_messages.paused):
                            await self._fail_keepalive("did not answer a ping")
                            return
        except ConnectionClosed:
            pass  # closed meanwhile: recv() reports it
        except Exception:  # a bug, not a peer's fault (websockets' own safety net)
            self.logger.error("keepalive ping failed", exc_info=True)

    async def _fail_keepalive(self, why: str) -> None:
        """Fail the connection with 1011 "keepalive ping timeout" (the close frame may never leave a full
        buffer: it is not waited for), then wait to be cancelled by ``connection_lost``."""
        if self.protocol.state is State.OPEN:
            logger.info("relay: the upstream %s in %g s; dropping it", why, self.ping_timeout)
            self.keepalive_failed = True
            if self.close_timeout is not None:
                self.close_deadline = self.loop.time() + self.close_timeout
            self.protocol.fail(1011, "keepalive ping timeout")
            self.send_data()  # hands the transport over to _Lingering in the next loop turn
        await asyncio.shield(self.connection_lost_waiter)

    def start_keepalive(self) -> None:
        # A close frame (or a bad frame) in the same read as the 101 ends the connection before
        # connect() starts the keepalive: a task that pinged a dead connection ping_interval later
        # and logged "keepalive ping failed" with a traceback, at ERROR.
        if self.lingering is None:
            super().start_keepalive()

    async def send(self, message: Any, **kwargs: Any) -> None:
        if self.lingering is not None:  # websockets would abort the transport handed over
            raise self.protocol.close_exc
        await super().send(message, **kwargs)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.lingering is None:
            await super().close(code, reason)  # may end with the upstream's close frame: handed over
        if self.lingering is not None:
            await asyncio.shield(self.lingering.closed)

    def pause_writing(self) -> None:
        super().pause_writing()
        cast(_ClientProtocol, self.protocol).writes_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if cast(_ClientProtocol, self.protocol).writes_resumed():
            self.send_data()


class _NoRedirects(connect):
    """``websockets`` connect that never follows a redirect: a gateway must not wander off."""

    def __init__(self, uri: str, **kwargs: Any) -> None:
        # websockets parses the URL with urlparse, whose urlsplit keeps it (bounded.split_url says why
        # not): one that may carry a credential is given without its path and query, which are put
        # back as parse_uri reads them from an ASCII URL.
        if not may_carry_credential(uri) or not uri.isascii() or "#" in uri:
            super().__init__(uri, **kwargs)
            return
        parts = split_url(uri)
        super().__init__(f"{parts.scheme}://{parts.netloc}", **kwargs)
        self.uri, self.ws_uri = uri, dataclasses.replace(self.ws_uri, path=parts.path, query=parts.query)

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class WebSocketsConnector:
    """Opens ``ws://``/``wss://`` upstream connections with the ``websockets`` asyncio client."""

    def __init__(self, api: ApiConfig, upstream: UpstreamConfig) -> None:
        self.api = api
        self.label = upstream.label
        self.tls = UpstreamTls(upstream)

    async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
        api = self.api
        url = split_url(request.url)
        try:
            host, port = host_and_port(url)
        except ValueError:
            host = ""
        if not host:  # what websockets refuses as InvalidURI, before any connect
            raise bad_request("the upstream request cannot be sent (invalid URL)")
        # The URL connected decides TLS (set-backend-service may have changed its scheme and host):
        # the context was the configured upstream's, and websockets refused the other with a 500.
        label = self.tls.label(url.scheme, host, port)
        context = checked(label, url.scheme, self.tls.context(url.scheme, host, port))
        # What websockets would refuse to send (InvalidHeaderValue, once connected): refused here,
        # before any connect, so that its InvalidHeaderValue always means the upstream's answer.
        # The client learns only the kind of problem, not the value.
        values = [value for _, value in request.headers] + request.subprotocols
        if not all(is_valid_header_value(value) for value in values):
            raise bad_request("the upstream request cannot be sent (invalid header)")

        def open_at(address: str) -> _NoRedirects:  # TLS still checks the URL's host name (websockets' default)
            return _NoRedirects(
                request.url,
                host=address,
                additional_headers=request.headers,
                user_agent_header=None,  # the client's own User-Agent is forwarded instead
                subprotocols=[Subprotocol(p) for p in request.subprotocols] or None,
                compression=api.compression,
                proxy=None,
                open_timeout=None,  # the connect as a whole, lookup included, is timed below
                ping_interval=api.ping_interval,
                ping_timeout=api.ping_timeout,
                close_timeout=api.close_timeout,
                max_size=api.max_message_size,
                max_queue=4,
                ssl=context,
                create_connection=_ClientConnection,
            )

        try:
            async with asyncio.timeout(api.connect_timeout):  # the name's lookup too
                ws = await RESOLVER.connect(host, port, open_at, api.dns_ttl, api.connect_timeout)
        except InvalidStatus as exc:
            response = exc.response
            raise upstream_refusal(
                label,
                response.status_code,
                kept_response_headers(list(response.headers.raw_items())),
                bytes(response.body),
            ) from None
        except TimeoutError:
            raise UpstreamTimeout(f"{label} did not complete the handshake in {api.connect_timeout:g} s") from None
        except InvalidURI:
            # websockets refused the URL it was given before sending a byte: not the backend's fault.
            # The message names the URL: the client learns only the kind of problem.
            raise bad_request("the upstream request cannot be sent (invalid URL)") from None
        except (InvalidHeader, NegotiationError) as exc:
            # The upstream's 101 broke the protocol (a wrong Sec-WebSocket-Accept, a subprotocol or an
            # extension it was not offered, a malformed header): its fault, a 502 as on the splice.
            # The message quotes the upstream's header: cut and escaped (a 7 KB value, raw bytes).
            raise UpstreamUnreachable(
                f"{label} answered the handshake with an invalid 101: {_quoted(str(exc))}"
            ) from None
        except (OSError, WebSocketException) as exc:
            shortage = local_shortage(label, exc) if isinstance(exc, OSError) else None
            why = redact_text(str(exc)) or type(exc).__name__  # an SSLEOFError says nothing of itself
            raise shortage or UpstreamUnreachable(f"{label} is unreachable: {why}") from None
        return WebSocketsConnection(ws)


def _quoted(text: str, limit: int = 80) -> str:
    """An upstream's text for a log line or a detail: redacted, cut to ``limit`` characters, and
    quoted with every character outside printable ASCII escaped (``'x\\xff'``)."""
    return ascii(redact_text(text)[:limit])


class _FastSend(Protocol):
    """What the send hot path may touch of a ``websockets`` asyncio connection, and nothing more.

    The connection's own ``close_exc`` is not here: websockets 14 has it only on ``protocol``.
    """

    # Read-only here (properties), so that the connection's narrower attribute types conform.
    @property
    def protocol(self) -> WsProtocol: ...
    @property
    def paused(self) -> bool: ...
    @property
    def send_in_progress(self) -> object: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def connection_lost_waiter(self) -> asyncio.Future[None]: ...

    def send_data(self) -> None: ...

    async def drain(self) -> None: ...


class WebSocketsConnection:
    """Adapts a ``websockets`` client connection to :class:`UpstreamConnection`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        fast: _FastSend | None = ws if all(hasattr(ws, name) for name in _FAST_SEND_ATTRIBUTES) else None
        self._fast = fast
        self.subprotocol: str | None = ws.subprotocol
        self.response_headers = kept_response_headers(
            list(ws.response.headers.raw_items()) if ws.response is not None else []
        )
        self.sent = 0  # messages written while the connection was open (a send after its close frame raises)

    @property
    def _fast_send(self) -> bool:
        return self._fast is not None

    async def recv(self) -> Data:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            closed = _closed(exc, self._ws)
            closed.messages_sent = self.sent
            raise closed from None

    async def send(self, data: Data) -> None:
        ws = self._fast
        if ws is not None and ws.protocol.state is State.OPEN and ws.send_in_progress is None:
            # Hot path: what ``Connection.send`` does for one unfragmented message on an open
            # connection, without its per-message async context manager (measured: 5-18% less
            # gateway CPU per 64 B echo, ~10% per 16 KiB; docs/performance.md). Frame, write, and
            # wait while the transport's buffer is over its high-water mark, as ``send`` does.
            # Anything else (closing, a fragmented send in progress) takes the full path.
            if isinstance(data, str):
                ws.protocol.send_text(data.encode())
            else:
                ws.protocol.send_binary(data)
            ws.send_data()
            self.sent += 1
            if ws.paused:
                try:
                    await ws.drain()
                except Exception:  # the connection was lost while paused: end it as ``send`` does
                    ws.transport.abort()
                    await asyncio.shield(ws.connection_lost_waiter)  # the protocol is CLOSED after it
                    raise _closed(ws.protocol.close_exc, self._ws) from None
            return
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc, self._ws) from None
        self.sent += 1

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _closed(exc: ConnectionClosed, ws: ClientConnection) -> UpstreamClosed:
    if isinstance(ws, _ClientConnection) and ws.keepalive_failed:
        # Its 1011 "keepalive ping timeout" is the gateway's: the upstream sent nothing, as on the splice.
        return UpstreamClosed(1006, "", by_peer=False)
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return UpstreamClosed(exc.rcvd.code, exc.rcvd.reason, by_peer=True)
    if exc.sent is not None:
        return UpstreamClosed(exc.sent.code, exc.sent.reason, by_peer=False)
    return UpstreamClosed(1006, "", by_peer=False)


__all__ = ["WebSocketsConnector"]
