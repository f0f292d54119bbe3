"""The ``asgi_ws_gateway.passthrough`` scope extension's accept: the server answers 101 with the
application's headers and hands the transport to the application's protocol (the splice)."""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected, get_client_addr
from websockets.datastructures import Headers, is_valid_header_value

from .client_leg import ClientLeg
from .log_lines import ACCEPTED, UVICORN_ERROR, connection_line_level, logged_path
from .server_protocol import FRAMES_LATER


class PassthroughHandover(ClientLeg):
    """Answer the handshake for the application and give it the connection (see :mod:`.websocket`)."""

    async def _pass_through(self, message: Any) -> None:
        if self.disconnected or self.transport.is_closing():
            raise ClientDisconnected()
        # Checked before its level is decided and its arguments built: both cost more than the check.
        if UVICORN_ERROR.isEnabledFor(logging.INFO) and UVICORN_ERROR.isEnabledFor(level := connection_line_level()):
            # uvicorn's line, without the query string (as PathOnly writes it), straight to the logger.
            scope = self.scope
            UVICORN_ERROR.log(level, ACCEPTED, get_client_addr(scope), logged_path(scope["path"]))
        response = self.response
        # websockets' Date is the server's (in default_headers); Sec-WebSocket-Extensions is negotiated
        # end to end instead.
        without_replaced(response.headers)
        add_headers(response.headers, self.default_headers + list(message.get("headers", [])))
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
        if self.conn.parser is not FRAMES_LATER:  # websockets' parser read the request (a head
            # parsed_request leaves to it, or uvicorn's log level at debug): a generator holding its
            # protocol, a cycle only the collector would free (connection_lost, which ends it, is the splice's).
            self.conn.forget_parser()
        del self.conn, self.request, self.response, self.queue, self.writable


_REPLACED = frozenset(("date", "sec-websocket-extensions"))
_NAME, _VALUE = itemgetter(0), itemgetter(1)


def without_replaced(headers: Headers) -> None:
    """``del headers["Date"]`` (a KeyError without one), and ``Sec-WebSocket-Extensions`` if there: one
    pass over the headers, not one per name deleted."""
    by_name = headers._dict
    del by_name["date"]
    by_name.pop("sec-websocket-extensions", None)
    headers._list = [item for item in headers._list if item[0].lower() not in _REPLACED]


def add_headers(headers: Headers, added: list[tuple[bytes, bytes]]) -> None:
    """``headers[name] = value`` for each name and value of ``added`` (as Latin-1), in order: the values
    checked in one match and decoded at once (``Headers.__setitem__`` checks each with a call of its own,
    ~4,700 instructions a header). A value it would refuse (or one that is no bytes) takes that way, and
    its error."""
    if not added:
        return
    names: list[str] = []
    values: list[str] = []
    names_text = values_text = ""
    try:
        names_text = b"\n".join(map(_NAME, added)).decode("latin-1")
        values_text = b"\n".join(map(_VALUE, added)).decode("latin-1")
        names, values = names_text.split("\n"), values_text.split("\n")
    except TypeError:  # a name or value that is no bytes: each its own way below, and its error
        pass
    # (a line feed in a name or value makes more parts than headers: each its own way, refused)
    if len(names) == len(values) == len(added) and is_valid_header_value(values_text.replace("\n", "\t")):
        headers._list += zip(names, values, strict=True)
        by_name = headers._dict
        for key, value in zip(names_text.lower().split("\n"), values, strict=True):
            by_name.setdefault(key, []).append(value)
        return
    for raw_name, raw_value in added:
        headers[raw_name.decode("latin-1")] = raw_value.decode("latin-1")


__all__ = ["PassthroughHandover", "add_headers", "without_replaced"]
