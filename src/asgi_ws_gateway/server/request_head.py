"""The upgrade request as uvicorn's HTTP protocol hands it to the gateway's WebSocket protocol.

Re-serialised for websockets' parser (:func:`serialised_request`), or, when that parser would take
those bytes as they are, the :class:`~websockets.http11.Request` it would make of them, built
directly (:func:`parsed_request`): the handshake skips a second parse of the head.
"""

from __future__ import annotations

import re

from websockets import http11
from websockets.datastructures import Headers
from websockets.http11 import Request

from ..bounded import remember
from ..upstream.checks import valid_value

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # websockets.http11's header name (RFC 9110 token)
_TARGET = re.compile(rb"[\x21-\x7e]+")  # printable ASCII, no space: one request-line field
_FRAMING = (b"content-length", b"transfer-encoding")

_PLAIN_NAMES: dict[bytes, bool] = {}
"""Header names :func:`parsed_request` found to be tokens other than the framing headers' (a client's
few names repeat from one handshake to the next); bounded as the redaction's stores are."""
_PLAIN_NAMES_LIMIT = 256
_PLAIN_NAME_LENGTH = 64


def serialised_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request head as uvicorn's HTTP protocol hands it to a WebSocket protocol."""
    output = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        output += [name, b": ", value, b"\r\n"]
    output.append(b"\r\n")
    return b"".join(output)


def parsed_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Request | None:
    """The :class:`Request` websockets' parser makes of :func:`serialised_request`'s bytes, or None.

    None whenever that parser might refuse them or read them otherwise: a line at or over its length
    limit, too many headers, a method, target, header name or value it would not take as they are,
    ``Transfer-Encoding`` or ``Content-Length`` (it judges those). The caller then has it parse them.
    """
    if len(method) + len(target) + 12 >= http11.MAX_LINE_LENGTH or len(headers) >= http11.MAX_NUM_HEADERS:
        return None
    if not ((method == b"GET" or _TOKEN.fullmatch(method)) and _TARGET.fullmatch(target)):
        return None
    # Headers() runs MutableMapping.update for no arguments, a sixth of this function's cost: an
    # instance emptied by its own clear() is the same empty Headers.
    parsed = Headers.__new__(Headers)
    parsed.clear()
    for name, value in headers:
        # The line websockets reads is "name: value\r\n"; it strips spaces and tabs around the value.
        if len(name) + len(value) + 4 >= http11.MAX_LINE_LENGTH:
            return None
        if name not in _PLAIN_NAMES and not _plain_name(name):
            return None
        text = value.strip(b" \t").decode("latin-1")
        if not valid_value(text):
            return None
        parsed.set_insecure(name.decode("ascii"), text)
    return Request(target.decode("ascii"), parsed, method.decode("ascii"), "HTTP/1.1")


def _plain_name(name: bytes) -> bool:
    """Whether websockets' parser takes a header so named as it is: a token, not a framing header."""
    if not _TOKEN.fullmatch(name) or name.lower() in _FRAMING:
        return False
    if len(name) <= _PLAIN_NAME_LENGTH:
        remember(_PLAIN_NAMES, name, True, _PLAIN_NAMES_LIMIT)
    return True


__all__ = ["parsed_request", "serialised_request"]
