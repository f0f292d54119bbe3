"""The ``ws://``/``wss://`` connector: the ``websockets`` asyncio client, redirects refused, a fast send path."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Protocol

import websockets.exceptions
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import is_valid_header_value
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHeader,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    WebSocketException,
)
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.typing import Subprotocol

from .._types import Data
from ..bounded import may_carry_credential, split_url
from ..config.apis import ApiConfig, UpstreamConfig
from ..errors import UpstreamTimeout, UpstreamUnreachable, local_shortage, upstream_refusal
from ..redact import redact_text
from .address_guard import AddressGuard
from .base import UpstreamClosed, UpstreamConnection, UpstreamRequest, UpstreamStalled
from .headers import kept_response_headers
from .request import bad_request
from .resolver import RESOLVER, host_and_port
from .response_head import MAX_HEAD
from .tls import UpstreamTls, checked
from .websockets_protocol import GatewayClientConnection, MalformedAnswer

# (all of ``_FastSend``, checked with websockets 14 to 17); a connection without them takes
# ``Connection.send`` every time.
_FAST_SEND_ATTRIBUTES = (
    "protocol", "paused", "send_in_progress", "send_data", "drain", "transport", "connection_lost_waiter",
)  # fmt: skip
# Response headers of the upstream's handshake that describe it rather than the application.


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
    """Opens ``ws://``/``wss://`` upstream connections with the ``websockets`` asyncio client.

    Args:
        api: the API whose connections it opens.
        upstream: the upstream it connects to.
        max_head: bytes of the upstream's answer head read at most, interim responses included
            (:func:`~asgi_ws_gateway.upstream.head_limits.head_limit` of ``handshake_limits``; default
            :data:`~asgi_ws_gateway.upstream.response_head.MAX_HEAD`); past it, a 502.
        guard: the addresses its connections may reach (``upstream_networks``); None: any.
    """

    def __init__(
        self, api: ApiConfig, upstream: UpstreamConfig, *, max_head: int = MAX_HEAD, guard: AddressGuard | None = None
    ) -> None:
        self.api = api
        self.guard = guard
        self.label = upstream.label
        self.tls = UpstreamTls(upstream)
        self._connection = GatewayClientConnection.reading_heads_of(max_head)

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
                create_connection=self._connection,
            )

        try:
            async with asyncio.timeout(api.connect_timeout):  # the name's lookup too
                guard = self.guard.picked if self.guard is not None and request.picked_host else self.guard
                ws = await RESOLVER.connect(host, port, open_at, api.dns_ttl, api.connect_timeout, guard)
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
        except MalformedAnswer as exc:  # the head rule every connector reads the answer by: the splice's words
            raise UpstreamUnreachable(f"{label} {exc.problem}") from None
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
        # Whether the upstream agreed to permessage-deflate: the client leg is compressed only if it did.
        self.compressed = any(isinstance(ext, PerMessageDeflate) for ext in ws.protocol.extensions)
        self.response_headers = kept_response_headers(
            list(ws.response.headers.raw_items()) if ws.response is not None else []
        )
        # websockets' own: done at the upstream's close frame (GatewayClientConnection hands the socket over then).
        self.ended: asyncio.Future[None] | None = getattr(ws, "connection_lost_waiter", None)
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
            try:
                raise closed from None
            finally:
                del closed  # this frame is in its traceback: a reference cycle, the connection kept with it

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


_TOO_MANY_FRAGMENTS: Any = getattr(websockets.exceptions, "TooManyFragments", ())


def _closed(exc: ConnectionClosed, ws: ClientConnection) -> UpstreamClosed:
    if isinstance(ws, GatewayClientConnection) and ws.keepalive_failed:
        # Its 1011 "keepalive ping timeout" is the gateway's: recorded as the splice records the same
        # silence (it was 1006 with no reason either way, the stall counted against the backend): a stall
        # is the gateway's close, passive health does not count it; a ping unanswered is the upstream's 1006.
        return UpstreamStalled() if ws.stalled else UpstreamClosed(1006, "did not answer a ping", by_peer=False)
    # recv() failed a message (not UTF-8, too many fragments) that came before the upstream's close:
    # the gateway's failure, even when that close was already in and answered (its 1000 said nothing
    # of the message the client lost; the splice and the frame relay report the failure). Too many
    # fragments is websockets' own Assembler's rule: a GatewayClientConnection joins them as they come
    # (its parser refuses them past max_size by the fragment floor, with 1009, before any close).
    failure = exc.__cause__
    if isinstance(failure, UnicodeDecodeError):
        return UpstreamClosed(1007, f"{failure.reason} at position {failure.start}", by_peer=False)
    if isinstance(failure, _TOO_MANY_FRAGMENTS):
        return UpstreamClosed(1009, "too many fragments", by_peer=False)
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return UpstreamClosed(exc.rcvd.code, exc.rcvd.reason, by_peer=True)
    if exc.sent is not None:
        return UpstreamClosed(exc.sent.code, exc.sent.reason, by_peer=False)
    return UpstreamClosed(1006, "", by_peer=False)


__all__ = ["WebSocketsConnector"]
