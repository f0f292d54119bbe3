"""websockets' ``ServerProtocol`` as the gateway runs it on the client leg (swapped in per connection)."""

from __future__ import annotations

from collections.abc import Generator
from http import HTTPStatus
from typing import cast

from websockets.exceptions import InvalidHeader
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ..held_pings import HeldPings
from ..turn_frames import FramesPerTurn
from ..upstream.deflate_streams import ServerDeflate
from ..upstream.header_lists import TOO_MANY, crowded_list
from ..upstream.websockets_protocol import FragmentFloor, RulesBeforeSize, UnlinkedParserFailure
from .plain_accept import plain_accept

SUPPORTED_VERSION = "13"


class _ServerProtocol(UnlinkedParserFailure, RulesBeforeSize, FramesPerTurn, FragmentFloor, HeldPings, ServerDeflate):
    """websockets' handshake, plus the version header RFC 6455 §4.2.2 asks for on a version mismatch,
    ``FRAMES_PER_TURN`` frames parsed a turn at most (:mod:`..turn_frames`), one pong for the pings a client
    sends while it reads nothing, and one a read (:mod:`..held_pings`), tiny fragments
    counted at ``FRAGMENT_FLOOR`` bytes as on the splice and the frame relay (:class:`FragmentFloor`),
    a header that breaks a framing rule a protocol error however long, as there (:class:`RulesBeforeSize`), and no
    reference cycle left once the connection is over (:class:`UnlinkedParserFailure`)."""

    def accept(self, request: Request) -> Response:
        response = plain_accept(self, request)  # a plain upgrade request's 101, without the general parsers
        if response is not None:
            return response
        crowded = crowded_list(request.headers.get_all)
        if crowded is not None:  # refused before websockets' parsers read it item by item
            return self._refuse(request, InvalidHeader(crowded, TOO_MANY))
        response = super().accept(request)
        exc = self.handshake_exc
        if isinstance(exc, InvalidHeader) and exc.name.lower() == "sec-websocket-version":
            response.headers["Sec-WebSocket-Version"] = SUPPORTED_VERSION
        return _fixed_body(response, exc) if exc is not None else response

    def _refuse(self, request: Request, exc: InvalidHeader) -> Response:
        """The 400 websockets' ``accept`` answers a header it finds invalid, left as it leaves it."""
        self.accept_called = True
        request._exception = exc
        self.handshake_exc = exc
        return self.reject(HTTPStatus.BAD_REQUEST, f"Failed to open a WebSocket connection: {exc}.\n")

    def lower_max_size(self, limit: int) -> None:
        """Read no message larger than ``limit`` from this client (nor inflate a compressed one
        further), when that is below the server's ``ws_max_size``."""
        # The parser's limit: max_message_size in recent websockets releases, max_size before.
        name = "max_message_size" if hasattr(self, "max_message_size") else "max_size"
        current = getattr(self, name, None)
        if limit > 0 and (current is None or limit < current):
            setattr(self, name, limit)


def _fixed_body(response: Response, exc: Exception) -> Response:
    """A refusal whose body is the gateway's own words: the header it refused, by name, never its value.

    websockets writes the value it could not parse into the body (``invalid Sec-WebSocket-Extensions
    header: expected comma at 28 in permessage-deflate; <client's text>=``): the client's text, markup or
    a token included, served back as the server's answer (redacting credentials left the rest of it).
    """
    name = exc.name if isinstance(exc, InvalidHeader) else None
    shown = _HEADER_NAMES.get(name.lower()) if name is not None else None
    response.body = (f"Failed to open a WebSocket connection: invalid {shown} header.\n" if shown is not None
                     else "Failed to open a WebSocket connection.\n").encode()  # fmt: skip
    del response.headers["Content-Length"]
    response.headers["Content-Length"] = str(len(response.body))
    return response


_HEADER_NAMES = {name.lower(): name for name in (
    "Connection", "Upgrade", "Host", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol",
)}  # fmt: skip
"""The headers a refusal may name (websockets names them, never a client): as spelled here."""


class _FramesLater:
    """The parser of a protocol whose request was handed over parsed (``receive_parsed_request``), until
    its first bytes of frames start websockets' frame parser (:func:`start_frames`). Started at the
    handover, that parser (a generator holding its protocol) was never used on a spliced connection:
    it kept the protocol in a reference cycle, and the collection that freed it closed it (~10 k
    instructions a handshake). Holds nothing: one for all. Resumed by another caller (none does), it leaves
    the bytes in the reader, for the parser started later."""

    __slots__ = ()
    gi_code = gi_yieldfrom = None  # (``fail_at_waiting_header`` finds no frame waiting)

    def __iter__(self) -> _FramesLater:
        return self

    def __next__(self) -> None:
        return None

    def send(self, value: object) -> None:
        return None


FRAMES_LATER = cast("Generator[None, None, None]", _FramesLater())  # (websockets types the parser so)


def start_frames(conn: ServerProtocol) -> None:
    """Start ``conn``'s frame parser if it is still :data:`FRAMES_LATER`: what websockets'
    ``ServerProtocol.parse`` does once it has parsed a request."""
    if conn.parser is FRAMES_LATER:
        conn.parser = super(ServerProtocol, conn).parse()
        next(conn.parser)


__all__ = ["FRAMES_LATER", "SUPPORTED_VERSION", "_ServerProtocol", "start_frames"]
