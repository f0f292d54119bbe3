"""What a client may put into the upstream request, checked before any backend is contacted.

Client-controlled values reach the upstream request through path parameters, templates
(``set-header``, ``set-query-parameter``, ``rewrite-uri``, ``set-backend-service``) and the
forwarded query string. A request built from them that no upstream could be sent, or that would
change the shape of the upstream URL, is the client's error: the handshake is refused with 400
before the first connect, so it never counts against a backend's health. So is a request larger than
an upstream reads: a header value over :data:`MAX_UPSTREAM_HEADER` or a head over
:data:`MAX_UPSTREAM_HEAD` (431), a URL over :data:`MAX_UPSTREAM_URL` (400). A template may write one
client value many times: its callers render it with these as the limit, so the text is never built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

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
value's own configured limit, and a header line's under websockets and most servers (8 KiB)."""

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
    url: str, headers: list[tuple[str, str]], *, in_process: bool, max_head: int = MAX_UPSTREAM_HEAD
) -> None:
    """Refuse (400; 431 for a head over ``max_head`` bytes) an upstream request that cannot be sent as built.

    ``url`` is ``ws[s]://host[:port]/path?query`` (network upstreams) or ``/path?query`` (in-process);
    ``max_head`` is :func:`~asgi_ws_gateway.upstream.head_limits.head_limit` of the gateway's
    ``handshake_limits`` (default :data:`MAX_UPSTREAM_HEAD`, the defaults' figure).
    """
    size = head_size(url, headers)
    if size > max_head:
        raise head_too_large(f"the upstream request head would take {size} bytes; at most {max_head} are sent")
    if may_carry_credential(url):  # checked, never kept
        _check_url.__wrapped__(url, in_process)
    else:
        _check_url(url, in_process)
    for name, value in headers:
        if not valid_header(name, value):
            if not is_token(name):
                raise bad_request("an upstream header name is not a valid HTTP token")
            raise bad_request(f"the upstream header '{name}' would carry a character HTTP cannot send")


def head_size(url: str, headers: list[tuple[str, str]]) -> int:
    """The bytes of a request head as :data:`MAX_UPSTREAM_HEAD` counts them (a value's characters are
    its Latin-1 bytes; a character past Latin-1 is refused by :func:`valid_header`)."""
    return len(url) + sum(len(name) + len(value) + _SEPARATORS for name, value in headers)


def head_too_large(detail: str) -> HandshakeDenied:
    """A 431 for an upstream request head the client's values made larger than an upstream reads."""
    return HandshakeDenied(431, detail, reason="headers_too_large")


def header_too_large(name: str) -> HandshakeDenied:
    """A 431 for a header value a template would render past :data:`MAX_UPSTREAM_HEADER`."""
    return head_too_large(f"the upstream header '{name}' would be longer than {MAX_UPSTREAM_HEADER} characters")


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
    "path": "the upstream path has characters a URL cannot carry",
    "segment": "the upstream path would have a dot segment, an encoded separator or a control character",
    "query": "the upstream query string has characters a URL cannot carry",
    "control": "the upstream URL would carry a space or a control character",
}


__all__ = [
    "MAX_UPSTREAM_HEAD",
    "MAX_UPSTREAM_HEADER",
    "MAX_UPSTREAM_URL",
    "bad_request",
    "check_path_params",
    "check_upstream_request",
    "head_size",
    "head_too_large",
    "header_too_large",
    "url_too_long",
    "valid_header",
]
