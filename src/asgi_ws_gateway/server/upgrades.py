"""Which requests uvicorn's HTTP protocols upgrade, and what goes over with them.

uvicorn upgrades any request with ``Upgrade: websocket`` and ``Connection: Upgrade``, re-written as
HTTP/1.1, hands the WebSocket protocol the request head only, and keeps the connection alive after
a request that asked to switch and was answered as HTTP. The gateway's HTTP protocols
(:mod:`asgi_ws_gateway.server.http`) use these pieces instead:

* an upgrade over HTTP/1.1 only (RFC 9110 §7.8: ``Upgrade`` in an HTTP/1.0 request is ignored);
* what followed the request head in the same read (frames a client sent without waiting for the
  101) goes to the WebSocket protocol with it;
* a request that asked to switch protocols and is answered as HTTP closes its connection after the
  answer (a proxy that took it for a switch would tunnel the client's next bytes there);
* under httptools, such a request's content still reaches the application (httptools skips the
  content of any request that asks to switch), and what the client sends after it is dropped, not
  parsed as a request (it was a 400 that cut the answer off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import h11
import httptools
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl


def close_after_if_not_upgraded(cycle: Any) -> None:
    """A request that asked to switch protocols and is answered as HTTP instead (h2c, an upgrade
    over HTTP/1.0 or without ``Connection: Upgrade``) closes the connection after its response.

    A proxy in front that took the request for a switch would tunnel what the client sends next
    into this connection, where it was read as requests of their own (the management API's
    included), past the proxy's rules: WebSocket smuggling. uvicorn kept the connection alive.
    """
    if cycle is not None and cycle.keep_alive and any(name == b"upgrade" for name, _ in cycle.scope["headers"]):
        cycle.keep_alive = False


def local_address(transport: asyncio.Transport) -> tuple[str, int | None] | None:
    """uvicorn's ``get_local_addr``, read from what the event loop kept of the socket when it took the
    connection (its ``sockname``). uvicorn asks the socket object: on uvloop, a ``getsockname`` each
    time plus one more to make a socket object of the descriptor."""
    info = transport.get_extra_info("sockname")
    if isinstance(info, tuple):
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return get_local_addr(transport)  # not kept (or not as uvicorn reads it): uvicorn's own way


def remote_address(transport: asyncio.Transport) -> tuple[str, int] | None:
    """uvicorn's ``get_remote_addr``, read from the ``peername`` the event loop kept (as above)."""
    info = transport.get_extra_info("peername")
    if isinstance(info, tuple):
        return (str(info[0]), int(info[1]))
    return get_remote_addr(transport)  # (a Unix socket's peer, a transport that keeps none: uvicorn's way)


def over_http11(scope: Any) -> bool:
    """RFC 9110 §7.8: a server MUST ignore ``Upgrade`` in an HTTP/1.0 request, which an HTTP/1.0
    proxy may have forwarded without knowing what it asks for (it would take what follows a 101 for
    an HTTP response). uvicorn re-wrote such a request as HTTP/1.1 and upgraded it."""
    return bool(scope.get("http_version") == "1.1")


class HttpToolsUpgrades(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` that upgrades HTTP/1.1 requests only, and keeps what followed an
    upgrade request in the same read.

    A client that sends its first frames without waiting for the 101 has them in the read that
    ends the request head; uvicorn dropped the rest of that read (httptools reports where the head
    ends, uvicorn did not ask), so those frames were lost and, when the read ended inside a frame,
    the next bytes were read as a frame header of the client's choosing.
    """

    _early_data = b""
    _answered_as_http = False  # the request asked to switch and is answered as HTTP: httptools reads no more
    _content: h11.Connection | None = None  # that request's content, read without httptools

    _upgrade_decided: tuple[object, bool] | None = None  # (the request's header list, the answer)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's, the addresses read without a system call (:func:`local_address`,
        :func:`remote_address`): four a connection fewer on uvloop (three ``getsockname``, one
        ``getpeername``), and no socket object made twice."""
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = local_address(transport)
        self.client = remote_address(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)

    def _should_upgrade(self) -> bool:
        # Asked four times a request (uvicorn's head, body and upgrade steps, and on_message_complete
        # here), each reading every header again: once per request is enough (~150 opcodes a handshake).
        decided = self._upgrade_decided
        if decided is not None and decided[0] is self.headers:
            return decided[1]
        answer = over_http11(self.scope) and super()._should_upgrade()
        self._upgrade_decided = (self.headers, answer)
        return answer

    def _unsupported_upgrade_warning(self) -> None:
        # The client's choice (h2c, an HTTP/1.0 upgrade): answered as plain HTTP, an INFO line.
        self.logger.info("Unsupported upgrade request: answered as HTTP.")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # a request answered as HTTP
            close_after_if_not_upgraded(self.cycle)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade() and not self._should_upgrade() and self.cycle is not None:
            content = _content_reader(self.scope["headers"])
            if content is not None:
                # httptools skipped the content of a request that asks to switch (its "message" ends
                # with the head): the application got an empty body, whatever Content-Length said, and
                # the content was dropped. It is read after the head instead (_read_content).
                self._content = content
                return
        super().on_message_complete()

    def _read_content(self, data: bytes) -> None:
        """Bytes after the head of a request answered as HTTP: its content, if it has one; what follows
        is dropped (the connection closes after the answer)."""
        content = self._content
        if content is None or self.cycle is None or not data:  # h11 takes b"" for the end of the stream
            return
        try:
            content.receive_data(data)
            while (event := content.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Request):
                    continue  # the stand-in head of _content_reader
                if isinstance(event, h11.Data):
                    self.on_body(bytes(event.data))  # uvicorn's: buffered for the application, flow control
                elif isinstance(event, h11.EndOfMessage):
                    self._content = None
                    super().on_message_complete()
                    return
        except h11.RemoteProtocolError:
            self._content = None
            self.send_400_response("Invalid HTTP request received.")  # its INFO line there (head_deadline)

    def data_received(self, data: bytes) -> None:
        if self._answered_as_http:
            self._read_content(data)
            return
        # uvicorn's data_received, keeping the upgrade's offset.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            # Any client can send one: an INFO line naming it, written by send_400_response (head_deadline)
            # once it knows what the client is told (uvicorn's WARNING named nobody, and a flood of bad
            # requests was a flood of warnings for the operator).
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self._early_data = data[upgrade.args[0] :]
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
                # The parser stops at an upgrade: later bytes were parsed as an error, a 400 sent and
                # the connection closed before the request's own answer.
                self._answered_as_http = True
                self._read_content(data[upgrade.args[0] :])


def _content_reader(headers: Iterable[tuple[bytes, bytes]]) -> h11.Connection | None:
    """A decoder of the content the request ``headers`` declare (chunked, or Content-Length bytes), or
    None when they declare none. h11 decodes it: it reads the framing that httptools would have."""
    framing = [(name, value) for name, value in headers if name.lower() in (b"content-length", b"transfer-encoding")]
    if not framing or framing == [(framing[0][0], b"0")]:
        return None
    reader = h11.Connection(h11.SERVER)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in framing)
    reader.receive_data(b"POST / HTTP/1.1\r\nHost: content\r\n" + head + b"\r\n")  # its framing, judged by h11
    return reader


def hand_over_early_data(transport: asyncio.Transport, data: bytes) -> None:
    """Give the WebSocket protocol now serving ``transport`` the bytes that came with the upgrade request."""
    if data:
        transport.get_protocol().data_received(data)  # type: ignore[attr-defined]


__all__ = [
    "HttpToolsUpgrades",
    "close_after_if_not_upgraded",
    "hand_over_early_data",
    "local_address",
    "over_http11",
    "remote_address",
]
