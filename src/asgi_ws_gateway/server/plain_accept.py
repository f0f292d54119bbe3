"""websockets' ``ServerProtocol.accept`` for the plain upgrade request, without its general parsers.

A handshake that offers no extension and no subprotocol, with ``Connection: Upgrade``, ``Upgrade:
websocket``, one well-formed key and version 13, is accepted by websockets' ``process_request``
after ~20 header parsers, list sums and lookups (~70 k instructions), and its 101 built one checked
header at a time (~32 k) with a ``Date`` formatted anew (~26 k) that every 101 of this server drops
for the server's own (uvicorn's accept and the splice's handover). :func:`plain_accept` gives the
same response and leaves the protocol as ``accept`` would, for that request only; any other, and
any protocol set up otherwise (origins, subprotocols, a ``select_subprotocol``), take websockets'
way (``None``). ``tests/test_cost13_shortcuts_2.py`` holds it to websockets' ``accept``.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from ..upstream.deflate_streams import ServerDeflate

_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")  # base64 of 16 bytes, as b64decode(validate=True) reads it
_NEGOTIATED = ("sec-websocket-extensions", "sec-websocket-protocol")
_KNOWN = {  # the methods of websockets' process_request that this stands in for, as written for them
    "process_request": (ServerProtocol.process_request,),
    "process_origin": (ServerProtocol.process_origin,),
    "process_extensions": (ServerProtocol.process_extensions, ServerDeflate.process_extensions),
    "process_subprotocol": (ServerProtocol.process_subprotocol,),
    "select_subprotocol": (ServerProtocol.select_subprotocol,),
}
_PLAIN_CLASSES: dict[type, bool] = {}  # whether a protocol class's methods are those
_date: tuple[int, str] = (-1, "")  # the whole second, and its HTTP date


def http_date(now: float) -> str:
    """``email.utils.formatdate(now, usegmt=True)``, formatted once per second. Within the last
    millisecond of a second it is formatted each time: the microseconds' rounding may carry into the
    next second there."""
    global _date
    second = int(now)
    if now - second >= 0.999 or now < 0:
        return formatdate(now, usegmt=True)
    if _date[0] != second:
        _date = (second, formatdate(now, usegmt=True))
    return _date[1]


def _known_methods(cls: type) -> bool:
    known = _PLAIN_CLASSES.get(cls)
    if known is None:
        known = _PLAIN_CLASSES[cls] = all(getattr(cls, name, None) in kept for name, kept in _KNOWN.items())
    return known


def plain_accept(conn: ServerProtocol, request: Request) -> Response | None:
    """``conn.accept(request)``'s 101 for a plain upgrade request, or None for websockets' way."""
    if (
        request.method != "GET"
        or request.protocol != "HTTP/1.1"
        or conn.origins is not None
        or conn.available_subprotocols
        or not _known_methods(type(conn))
        or "select_subprotocol" in vars(conn)  # ServerProtocol(select_subprotocol=...)
    ):
        return None
    by_name = request.headers._dict
    connection = by_name.get("connection")
    upgrade = by_name.get("upgrade")
    key = by_name.get("sec-websocket-key")
    origin = by_name.get("origin", ())
    if (
        connection is None
        or upgrade is None
        or key is None
        or len(connection) != 1
        or len(upgrade) != 1
        or len(key) != 1
        or len(origin) > 1
        or by_name.get("sec-websocket-version") != ["13"]
        or _NEGOTIATED[0] in by_name
        or _NEGOTIATED[1] in by_name
        or connection[0].lower() != "upgrade"
        or upgrade[0].lower() != "websocket"
        or not (connection[0] + upgrade[0]).isascii()  # (str.lower maps some non-ASCII letters to ASCII ones)
        or _KEY.fullmatch(key[0]) is None
    ):
        return None
    # What accept and process_request leave behind them.
    conn.accept_called = True
    conn.origin = origin[0] if origin else None  # type: ignore[assignment]
    conn.extensions = []
    conn.subprotocol = None
    answer = accept_key(key[0])
    date = http_date(time.time())
    headers = Headers.__new__(Headers)  # the values are known to be valid: set without a check each
    headers._dict = {
        "date": [date],
        "upgrade": ["websocket"],
        "connection": ["Upgrade"],
        "sec-websocket-accept": [answer],
    }
    headers._list = [
        ("Date", date),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", answer),
    ]
    return Response(101, "Switching Protocols", headers)


__all__ = ["http_date", "plain_accept"]
