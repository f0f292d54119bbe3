"""What a client may put into the upstream request, checked before any backend is contacted.

Client-controlled values reach the upstream request through path parameters, templates
(``set-header``, ``set-query-parameter``, ``rewrite-uri``, ``set-backend-service``) and the
forwarded query string. A request built from them that no upstream could be sent, or that would
change the shape of the upstream URL, is the client's error: the handshake is refused with 400
before the first connect, so it never counts against a backend's health. So is a request larger than
an upstream reads: a header value over :data:`MAX_UPSTREAM_HEADER`, a header line over
:data:`MAX_UPSTREAM_LINE` or a head over :data:`MAX_UPSTREAM_HEAD` (431), a URL over
:data:`MAX_UPSTREAM_URL` or a request line over :data:`MAX_UPSTREAM_LINE` (400). A template may write
one client value many times: its callers render it with these as the limit, so the text is never built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from ..bounded import may_carry_credential, remember
from ..config.checks import UrlProblem, url_problem
from ..config.fields import is_token
from ..errors import HandshakeDenied
from ..routing import param_problem
from .head_limits import DEFAULT_HEAD
from .request import bad_request

MAX_UPSTREAM_URL = 8192
"""Characters an upstream URL may have once templates and the forwarded query are in it."""

MAX_UPSTREAM_HEADER = 8192
"""Characters a header value the gateway renders for the upstream may have (``set-header``): the
value's own configured limit. Its line, with the name, is held to :data:`MAX_UPSTREAM_LINE` too
(:func:`header_value_room`: 8,185 characters for ``X-A``)."""

MAX_UPSTREAM_LINE = 8192
"""Bytes a line the gateway writes to an upstream may take with its CRLF: the request line
(``GET target HTTP/1.1``) and each header line (``name: value``), as ``websockets`` servers read
them (``http11.MAX_LINE_LENGTH``: a longer header line is their 431, a longer request line their
414), as do most servers' defaults (8 KiB). A ``set-header`` value of 8,192 characters made a line of
8,200 bytes and the upstream's 431 was relayed as its refusal; now no line the gateway would write
passes it (:func:`check_upstream_request`)."""

MAX_UPSTREAM_HEAD = DEFAULT_HEAD
"""Bytes the upstream request head may take (its URL, and each header's name, value and 4 bytes of
separators) under the default ``handshake_limits`` (32 KiB of headers and 8 KiB target, with room for
what the policies add); more when they allow the client more
(:func:`~asgi_ws_gateway.upstream.head_limits.head_limit`)."""

_SEPARATORS = 4  # ": " and CRLF, as on the wire
# Field-value characters (no CR, LF, NUL or other controls); names are RFC 9110 tokens (is_token).
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def check_path_params(params: Mapping[str, str]) -> None:
    """Refuse (400) a path parameter that would not stay one segment of an upstream path."""
    for name, value in params.items():
        problem = param_problem(value)
        if problem is not None:
            raise bad_request(f"path parameter '{name}' {problem}")


def check_upstream_request(
    url: str,
    headers: list[tuple[str, str]],
    *,
    in_process: bool,
    max_head: int = MAX_UPSTREAM_HEAD,
    subprotocols: Sequence[str] = (),
) -> None:
    """Refuse (400; 431 for a head over ``max_head`` bytes or a header line over :data:`MAX_UPSTREAM_LINE`)
    an upstream request that cannot be sent as built.

    ``url`` is ``ws[s]://host[:port]/path?query`` (network upstreams) or ``/path?query`` (in-process);
    ``max_head`` is :func:`~asgi_ws_gateway.upstream.head_limits.head_limit` of the gateway's
    ``handshake_limits`` (default :data:`MAX_UPSTREAM_HEAD`, the defaults' figure); ``subprotocols``
    the offer every connector writes as one ``Sec-WebSocket-Protocol`` line.
    """
    size = head_size(url, headers)
    if size > max_head:
        raise head_too_large(f"the upstream request head would take {size} bytes; at most {max_head} are sent")
    # An in-process app is handed the request: no line is written. A head smaller than one line
    # (nearly every one) has no line over it: the lines are looked at one by one only past that.
    if not in_process and size + (sum(map(len, subprotocols)) + 2 * len(subprotocols) if subprotocols else 0) > _SMALL:
        check_line_bounds(url, headers, subprotocols)
    if may_carry_credential(url):  # checked, never kept
        _check_url.__wrapped__(url, in_process)
    else:
        _check_url(url, in_process)
    for name, value in headers:
        if not valid_header(name, value):
            if not is_token(name):
                raise bad_request("an upstream header name is not a valid HTTP token")
            raise bad_request(f"the upstream header '{name}' would carry a character HTTP cannot send")


def check_line_bounds(url: str, headers: list[tuple[str, str]], subprotocols: Sequence[str] = ()) -> None:
    """Refuse a request with a line over :data:`MAX_UPSTREAM_LINE` bytes (CRLF included) as every connector
    writes it (the relay's ``websockets`` client and the splice's own): the request line (400, as a URL
    over its bound is), ``Host``, each header, the one ``Sec-WebSocket-Protocol`` line the offer is joined
    into (431, ``headers_too_large``).

    A client's own lines are within it unless its server reads longer ones; the gateway's were not:
    ``set-header`` (8,192 characters of value), ``X-Forwarded-For`` joined from a proxy's lines,
    ``X-Forwarded-Host`` (a longer name than ``Host``'s), the subprotocols joined from the client's lines.
    """
    after_scheme = url.find("://") + 3 if url.startswith(("ws://", "wss://")) else 0
    authority_end = _authority_end(url, after_scheme)
    target = len(url) - authority_end + (0 if url.startswith("/", authority_end) else 1)  # no path: "/"
    if target + _REQUEST_LINE > MAX_UPSTREAM_LINE:
        raise bad_request(
            f"the upstream request line would take {target + _REQUEST_LINE} bytes; at most {MAX_UPSTREAM_LINE} are sent"
        )
    host = authority_end - after_scheme
    if host and host + len("host") + _SEPARATORS > MAX_UPSTREAM_LINE:  # never for a valid host name: checked anyway
        raise line_too_long("host", host + len("host") + _SEPARATORS)
    for name, value in headers:
        if len(name) + len(value) > _LINE_ROOM:
            raise line_too_long(name, len(name) + len(value) + _SEPARATORS)
    if subprotocols:
        size = len("sec-websocket-protocol") + _SEPARATORS + sum(map(len, subprotocols)) + 2 * (len(subprotocols) - 1)
        if size > MAX_UPSTREAM_LINE:
            raise line_too_long("sec-websocket-protocol", size)


_REQUEST_LINE = len("GET  HTTP/1.1\r\n")
"""The request line's bytes besides its target."""
_LINE_ROOM = MAX_UPSTREAM_LINE - _SEPARATORS
"""A header line's name and value together, at most."""
_SMALL = MAX_UPSTREAM_LINE - len("sec-websocket-protocol") - _REQUEST_LINE - _SEPARATORS
"""A head of at most this many bytes (:func:`head_size`, and the subprotocols' offer) holds no line over
:data:`MAX_UPSTREAM_LINE`: every line is shorter than the whole, plus the request line's or the offer's
own bytes."""


def _authority_end(url: str, start: int) -> int:
    """Where the authority that begins at ``start`` ends (``start`` itself for an in-process path)."""
    if start == 0:
        return 0
    ends = [at for at in (url.find("/", start), url.find("?", start)) if at != -1]
    return min(ends, default=len(url))


def line_too_long(name: str, size: int) -> HandshakeDenied:
    """A 431 for an upstream header line of ``size`` bytes, past :data:`MAX_UPSTREAM_LINE`."""
    return head_too_large(
        f"the upstream header '{name}' would make a line of {size} bytes; at most {MAX_UPSTREAM_LINE} are sent"
    )


def header_value_room(name: str) -> int:
    """The characters a value of header ``name`` may have: its line within :data:`MAX_UPSTREAM_LINE`
    and the value within :data:`MAX_UPSTREAM_HEADER`."""
    return min(MAX_UPSTREAM_HEADER, MAX_UPSTREAM_LINE - len(name) - _SEPARATORS)


def head_size(url: str, headers: list[tuple[str, str]]) -> int:
    """The bytes of a request head as :data:`MAX_UPSTREAM_HEAD` counts them (a value's characters are
    its Latin-1 bytes; a character past Latin-1 is refused by :func:`valid_header`)."""
    return len(url) + sum(len(name) + len(value) + _SEPARATORS for name, value in headers)


def head_too_large(detail: str) -> HandshakeDenied:
    """A 431 for an upstream request head the client's values made larger than an upstream reads."""
    return HandshakeDenied(431, detail, reason="headers_too_large")


def header_too_large(name: str) -> HandshakeDenied:
    """A 431 for a header value a template would render past :func:`header_value_room`."""
    return head_too_large(
        f"the upstream header '{name}' would be longer than {header_value_room(name)} characters "
        f"(its line at most {MAX_UPSTREAM_LINE} bytes)"
    )


def url_too_long() -> HandshakeDenied:
    """A 400 for an upstream URL (or a value in it) past :data:`MAX_UPSTREAM_URL`, as :func:`_check_url` refuses it."""
    return bad_request(f"the upstream URL would be longer than {MAX_UPSTREAM_URL} characters")


def valid_header(name: str, value: str) -> bool:
    """Whether a header can be written as is: its name a token, its value free of CR, LF and the
    other control characters (a tab aside). Request headers here; an in-process app's response ones too."""
    if name not in _TOKENS:
        if is_token(name) is None:
            return False
        if len(name) <= _TOKEN_LENGTH:  # remembered: the names a handshake sends repeat
            remember(_TOKENS, name, True, _TOKENS_LIMIT)
    return valid_value(value)


def valid_value(value: str) -> bool:
    """Whether a header value (as decoded from Latin-1) is free of CR, LF and the other control
    characters, a tab aside (RFC 9110 §5.5). Printable ASCII passes without the pattern."""
    return (value.isascii() and value.isprintable()) or _VALUE.fullmatch(value) is not None


_TOKENS: dict[str, bool] = {}
"""Header names found to be tokens (bounded as the redaction's stores are: names come from clients)."""
_TOKENS_LIMIT = 256
_TOKEN_LENGTH = 64


@functools.lru_cache(maxsize=256)
def _check_url(url: str, in_process: bool) -> None:
    """The URL's checks; a URL without a query that passed once (most are a configured upstream's,
    unchanged) is not checked again. Only passes are remembered (a refusal raises, which the cache
    does not keep). The rules are :func:`~asgi_ws_gateway.config.checks.url_problem`, which the
    configured URLs follow too."""
    if len(url) > MAX_UPSTREAM_URL:
        raise url_too_long()
    problem = url_problem(url, in_process=in_process)
    if problem is not None:
        raise bad_request(_REFUSALS[problem])


_REFUSALS: dict[UrlProblem, str] = {
    "invalid": "the upstream URL would not be a valid URL",
    "fragment": "the upstream URL would have a fragment",
    "not_a_path": "the upstream path is not a path",
    "scheme": "the upstream URL's scheme would not be ws or wss",
    "port": "the upstream URL's port would not be a port number",
    "address": "the upstream URL's host would not be a valid address",
    "host": "the upstream URL's host would not be a valid host name",
    "numeric": "the upstream URL's host would be a number that is not an IPv4 address",
    "path": "the upstream path has characters a URL cannot carry",
    "segment": "the upstream path would have a dot segment, an encoded separator or a control character",
    "query": "the upstream query string has characters a URL cannot carry",
    "control": "the upstream URL would carry a space or a control character",
}


__all__ = [
    "MAX_UPSTREAM_HEAD",
    "MAX_UPSTREAM_HEADER",
    "MAX_UPSTREAM_LINE",
    "MAX_UPSTREAM_URL",
    "bad_request",
    "check_line_bounds",
    "check_path_params",
    "check_upstream_request",
    "head_size",
    "head_too_large",
    "header_too_large",
    "header_value_room",
    "line_too_long",
    "url_too_long",
    "valid_header",
]
