"""The opening handshake on the client leg: the request head handed over by the HTTP protocol, and
the refusals answered before the application runs (the parser's 414, 431, 400; websockets' own checks)."""

from __future__ import annotations

import asyncio
import weakref
from http import HTTPStatus
from typing import Literal
from urllib.parse import unquote

from uvicorn.logging import TRACE_LOG_LEVEL
from websockets.exceptions import InvalidHeader
from websockets.http11 import Request

from ..handshake.server_refusals import server_refused
from ..passthrough.asgi_extension import EXTENSION, TAKEN_IN
from ..passthrough.lingering_close import lingering
from .client_leg import ClientLeg
from .log_lines import logged_path
from .request_head import parsed_request, serialised_request
from .server_protocol import FRAMES_LATER

_REFUSED = {400: "malformed request", 414: "request line too long", 431: "request headers too large"}


class OpeningHandshake(ClientLeg):
    """The request head, from the HTTP protocol or the client, and the answers given before the application's."""

    def adopt_connection(
        self, transport: asyncio.Transport, server: tuple[str, int | None] | None, client: tuple[str, int] | None,
        scheme: Literal["ws", "wss"],
    ) -> None:  # fmt: skip
        """``connection_made`` with the addresses the HTTP protocol already read from the socket."""
        self.connections.add(self)
        self.transport = lingering(transport)  # closed with a FIN, never a reset (as connection_made has it)
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
        # What websockets' ServerProtocol.parse does after it parsed a request, frames from now on, is
        # done at the first bytes of frames (start_frames): a spliced connection's are the splice's.
        conn.parser = FRAMES_LATER
        conn.events.append(request)
        self.handle_events()

    def _refuse_request(self) -> None:
        """Send the parser's 414/431 (or a 400 when it only gave up) and close: it would hang otherwise."""
        output = b"".join(self.conn.data_to_send())
        if not output:  # websockets sends nothing for a malformed request: only EOF
            output = self.conn.reject(HTTPStatus.BAD_REQUEST, "Invalid WebSocket handshake request.\n").serialize()
        status = int(output.split(b" ", 2)[1]) if output.startswith(b"HTTP/") else 400
        # A fixed description: the parser's message may quote the offending line, credentials and all.
        self.logger.info('%s - "WebSocket handshake" %d (%s)', self._client(), status, _REFUSED.get(status, "?"))
        server_refused(status)
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
            server_refused(self.response.status_code)
            return
        scope = getattr(self, "scope", None)
        if scope is not None and not self.handshake_complete:  # set before the ASGI task first runs
            # The server's own message limit (--ws-max-size) still applies to a spliced connection.
            # And what the client has taken in so far, for the relay's close wait.
            scope["extensions"][EXTENSION] = {"max_size": self.config.ws_max_size, TAKEN_IN: _Weakly(self)}


class _Weakly:
    """The protocol's ``_taken_in`` without holding the protocol: the scope holds it, and the protocol the
    scope, a cycle the spliced and framed paths (whose protocol's ``connection_lost`` never runs: the
    splice takes the transport) left to the garbage collector, ~60 objects a connection. 0 once the
    protocol is gone (its client is gone too).

    A weak reference to the protocol: ``weakref.WeakMethod`` of the bound method (its ``__new__`` in
    Python, a closure of its own, two weak references) and a closure over it took ~9 k instructions a
    handshake to make, this ~2.8 k (counted in process with callgrind)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: ClientLeg) -> None:
        self._protocol = weakref.ref(protocol)

    def __call__(self) -> int:
        found = self._protocol()
        return found._taken_in() if found is not None else 0


__all__ = ["OpeningHandshake"]
