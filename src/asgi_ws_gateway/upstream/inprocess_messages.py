"""What the in-process app sends, checked as uvicorn checks it: a message no server could send raises in
the app (whose failure is the upstream's: 1011 to the client), never later in a relay pump."""

from __future__ import annotations

from websockets.frames import EXTERNAL_CLOSE_CODES

from .._types import Data, Message
from .checks import valid_header
from .response_head import MAX_HEAD, MAX_HEADER_LINES, MAX_LINE


def checked_payload(message: Message) -> Data:
    """A ``websocket.send``'s data: exactly one of ``text`` (a ``str`` UTF-8 can encode) or ``bytes``."""
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise TypeError("Expected exactly one of 'text' and 'bytes' in ASGI message 'websocket.send'")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"'websocket.send' text must be str, not {type(text).__name__}")
        if not text.isascii():
            text.encode()  # UnicodeEncodeError for a lone surrogate: no text frame carries one
        return text
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"'websocket.send' bytes must be bytes, not {type(data).__name__}")
    return data if type(data) is bytes else bytes(data)


def checked_close(message: Message) -> tuple[int, str]:
    """A ``websocket.close``'s code (an ``int`` a close frame may carry) and reason (a ``str`` UTF-8
    can encode in 123 bytes), checked as uvicorn's ``websockets`` checks them before writing the frame.

    A code no peer may send (1004-1006, 1015, under 1000, 1016-2999, 5000 and up) reached the client
    as 1011 or (1005) 1000 while the access line recorded it as sent, and a longer reason was cut."""
    code, reason = message.get("code", 1000), message.get("reason") or ""
    if type(code) is not int:
        raise TypeError(f"'websocket.close' code must be int, not {type(code).__name__}")
    if not isinstance(reason, str):
        raise TypeError(f"'websocket.close' reason must be str, not {type(reason).__name__}")
    if not (code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"'websocket.close' code {code} is not one a close frame may carry (RFC 6455 §7.4)")
    if len(reason.encode()) > 123:  # UnicodeEncodeError for a lone surrogate
        raise ValueError("'websocket.close' reason is over the 123 bytes a close frame holds")
    return code, reason


MALFORMED_HEADER = "in-process upstream sent a malformed response header"
NEGOTIATED_HEADERS = frozenset({"sec-websocket-protocol", "sec-websocket-extensions"})
"""Headers an accept may not carry: the gateway offered the app no extension, and its subprotocol
goes in the accept's ``subprotocol``."""


def checked_headers(message: Message) -> list[tuple[str, str]] | None:
    """An accept's or a refusal's headers, or None when one could not be written as sent (a name
    that is not a token, a value with CR, LF or another control character): a 502, as from a
    network upstream, instead of a response the server refuses to write or one of the app's making."""
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", [])]
    return headers if all(valid_header(n, v) for n, v in headers) else None


SERVER_LINES_OF_A_101 = 3
"""Lines of a 101 the server writes for the app, which a network upstream writes itself and
:data:`~.response_head.MAX_HEADER_LINES` counts: ``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``
(and ``Sec-WebSocket-Protocol`` when the app chose a subprotocol)."""


def head_problem(headers: list[tuple[str, str]], *, server_lines: int = 0, max_head: int = MAX_HEAD) -> str | None:
    """What makes the app's answer ``headers`` a head no network upstream's may be
    (``upstream.response_head``: a 502 there), or None: more than
    :data:`~.response_head.MAX_HEADER_LINES` lines with the ``server_lines`` written for it, a line
    over :data:`~.response_head.MAX_LINE` bytes, or more than ``max_head`` bytes of lines.

    They were written as the app gave them: 1,000 headers, or one of 200 KB, reached the client as a
    response no ``websockets`` client reads (128 lines of 8192 bytes), and no 502 said why."""
    if len(headers) + server_lines > MAX_HEADER_LINES:
        return f"in-process upstream sent more than {MAX_HEADER_LINES} response header lines"
    size = 0
    for name, value in headers:
        line = len(name) + len(value) + 4  # "name: value" and its CRLF, as a network upstream sends it
        if line > MAX_LINE:
            return f"in-process upstream sent a response head line over {MAX_LINE} bytes"
        size += line
    if size > max_head:
        return f"in-process upstream sent more than {max_head} bytes of response head"
    return None


__all__ = [
    "MALFORMED_HEADER",
    "NEGOTIATED_HEADERS",
    "SERVER_LINES_OF_A_101",
    "checked_close",
    "checked_headers",
    "checked_payload",
    "head_problem",
]
