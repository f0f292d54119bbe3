"""What a client may put into the upstream request, checked before any backend is contacted.

Client-controlled values reach the upstream request through path parameters, templates
(``set-header``, ``set-query-parameter``, ``rewrite-uri``, ``set-backend-service``) and the
forwarded query string. A request built from them that no upstream could be sent, or that would
change the shape of the upstream URL, is the client's error: the handshake is refused with 400
before the first connect, so it never counts against a backend's health.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping

from ..bounded import may_carry_credential, remember, split_url
from ..routing import decode_segment, param_problem
from ..wire_numbers import parse_port
from .request import bad_request

MAX_UPSTREAM_URL = 8192
"""Characters an upstream URL may have once templates and the forwarded query are in it."""

# RFC 9110 token (header names) and field-value characters (no CR, LF, NUL or other controls).
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Path and query: visible ASCII only (what an HTTP request line can carry), every '%' starting a
# two-digit escape. Stricter RFC 3986 rules would turn configured oddities into client errors.
_PATH = re.compile(r"(?:/(?:[!-$&-~]|%[0-9A-Fa-f]{2})*+)?")  # possessive: "/" is in the class (no 2^n splits)
_QUERY = re.compile(r"(?:[!-$&-~]|%[0-9A-Fa-f]{2})*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_path_params(params: Mapping[str, str]) -> None:
    """Refuse (400) a path parameter that would not stay one segment of an upstream path."""
    for name, value in params.items():
        problem = param_problem(value)
        if problem is not None:
            raise bad_request(f"path parameter '{name}' {problem}")


def check_upstream_request(url: str, headers: list[tuple[str, str]], *, in_process: bool) -> None:
    """Refuse (400) an upstream request that cannot be sent as built.

    ``url`` is ``ws[s]://host[:port]/path?query`` (network upstreams) or ``/path?query`` (in-process).
    """
    if may_carry_credential(url):  # checked, never kept
        _check_url.__wrapped__(url, in_process)
    else:
        _check_url(url, in_process)
    for name, value in headers:
        if not valid_header(name, value):
            if not _TOKEN.fullmatch(name):
                raise bad_request("an upstream header name is not a valid HTTP token")
            raise bad_request(f"the upstream header '{name}' would carry a character HTTP cannot send")


def valid_header(name: str, value: str) -> bool:
    """Whether a header can be written as is: its name a token, its value free of CR, LF and the
    other control characters (a tab aside). Request headers here; an in-process app's response ones too."""
    if name not in _TOKENS:
        if _TOKEN.fullmatch(name) is None:
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
    does not keep)."""
    if len(url) > MAX_UPSTREAM_URL:
        raise bad_request(f"the upstream URL would be longer than {MAX_UPSTREAM_URL} characters")
    try:
        parts = split_url(url)
    except ValueError:  # e.g. an unbalanced or invalid [IPv6] literal
        raise bad_request("the upstream URL would not be a valid URL") from None
    if parts.fragment or "#" in url:
        raise bad_request("the upstream URL would have a fragment")
    if in_process:
        if parts.scheme or parts.netloc:
            raise bad_request("the upstream path is not a path")
    else:
        _check_authority(parts.scheme, parts.netloc)
    if not _PATH.fullmatch(parts.path) or (parts.path and not parts.path.startswith("/")):
        raise bad_request("the upstream path has characters a URL cannot carry")
    for segment in parts.path.split("/")[1:]:
        if segment and param_problem(decode_segment(segment.encode("ascii"))) is not None:
            raise bad_request("the upstream path would have a dot segment, an encoded separator or a control character")
    if not _QUERY.fullmatch(parts.query):
        raise bad_request("the upstream query string has characters a URL cannot carry")


def _check_authority(scheme: str, netloc: str) -> None:
    if scheme not in ("ws", "wss"):
        raise bad_request("the upstream URL's scheme would not be ws or wss")
    host, _, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not host:
        host, port = netloc, ""
    if port and not parse_port(port):  # 0 too; int() raised past 4300 digits (the URL may have 8192)
        raise bad_request("the upstream URL's port would not be a port number")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad_request("the upstream URL's host would not be a valid address") from None
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise bad_request("the upstream URL's host would not be a valid host name")


__all__ = ["MAX_UPSTREAM_URL", "bad_request", "check_path_params", "check_upstream_request", "valid_header"]
