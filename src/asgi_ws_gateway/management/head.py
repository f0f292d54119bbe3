"""The numbers in a management request's head: ``Content-Length`` and the ``Host`` header's port.

The API reads both (a body's size before reading it; the Host to compare an ``Origin`` with), and
the ASGI server in front need not have checked them. Each is ASCII digits (``1*DIGIT``, RFC 9110),
boundedly many, or the request is a 400: ``int()`` would take ``+5``, `` 5``, ``1_0`` and ``٣``, and
raise (a 500) on ``²`` or on more than 4300 digits.
"""

from __future__ import annotations

from starlette.requests import Request

from ..wire_numbers import parse_digits, parse_port
from .errors import BadRequest

MAX_LENGTH_DIGITS = 19
"""Digits a ``Content-Length`` may have (2**63 has 19): far past any body the API takes."""


def content_length(request: Request) -> int | None:
    """The body's declared size in bytes, None when undeclared; :class:`BadRequest` when not a number."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    length = parse_digits(declared, MAX_LENGTH_DIGITS)
    if length is None:
        raise BadRequest(f"the Content-Length header is not a number of bytes (1 to {MAX_LENGTH_DIGITS} ASCII digits)")
    return length


def has_body(request: Request) -> bool:
    """Whether the request declares a body: a ``Content-Length`` above 0, or a ``Transfer-Encoding``."""
    return bool(content_length(request)) or "transfer-encoding" in request.headers


def check_head(request: Request) -> None:
    """Raise :class:`BadRequest` unless ``Content-Length`` and the ``Host`` header's port are numbers."""
    content_length(request)
    host = request.headers.get("host", "")
    if ":" in host and not host.endswith("]"):  # host:port or [v6]:port; [v6] alone has no port
        port = host.rpartition(":")[2]
        if port and parse_port(port) is None:  # "host:" (an empty port) is allowed: the default
            raise BadRequest("the Host header's port is not a port number (1 to 5 ASCII digits, at most 65535)")


__all__ = ["MAX_LENGTH_DIGITS", "check_head", "content_length", "has_body"]
