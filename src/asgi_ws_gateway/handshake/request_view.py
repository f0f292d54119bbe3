"""The client's upgrade request as policies read it (:class:`RequestView`): its headers as the upstream
is sent them, the query, the cookies as servers read them and the client's address, each parsed on first
use; :class:`AmbiguousValue`, the refusal of a value sent more than once with different values."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload
from urllib.parse import parse_qsl

from .._types import Scope
from ..errors import HandshakeDenied
from ..forwarded import (
    UNKNOWN_CLIENT,
    Networks,
    client_address,
    forwarded_chain,
    parse_ip,
    peer_client,
    unix_socket_peer,
)
from ..param_names import fold_cookie_name, fold_name, spelled_as
from ..upstream.headers import forwarding_headers, replaced_forwarding_header
from ..upstream.request import offered_subprotocols
from . import host_header
from .open_socket import warn_if_open

V = TypeVar("V")


class _Memoized(Generic[V]):
    """``functools.cached_property`` without the lock Python 3.11 takes at each first read (one lock
    for every instance; ~60 interpreter steps a property, each handshake; 3.12 dropped it): a request
    is read on its connection's task only. The first read stores the value in the instance, which
    then shadows this."""

    def __init__(self, function: Callable[[Any], V]) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _Memoized[V]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> V: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> V | _Memoized[V]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.function(instance)
        return value


class AmbiguousValue(HandshakeDenied):
    """A header, query parameter or cookie a template reads came more than once with different values:
    the gateway would key, check or route on one copy while the upstream may read another."""

    def __init__(self, kind: str, name: str, detail: str = "") -> None:
        detail = detail or "is sent more than once with different values: send one"
        super().__init__(400, f"the {kind} '{name}' {detail}", reason="ambiguous_value")


_SURROGATE = re.compile("[\udc80-\udcff]")
"""A byte of the query that is not UTF-8, as ``surrogateescape`` keeps it."""


def _replaced(text: str) -> str:
    """``text`` with the bytes ``surrogateescape`` kept read as U+FFFD (what ``parse_qsl`` gives by default)."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_PYTHON_COOKIE = re.compile(
    r'(?<![^ \t\n\r\f\v;])([^ \t\n\r\f\v=;]++)[ \t\n\r\f\v]*+=[ \t\n\r\f\v]*+("(?:[^"\\]|\\.)*+"|[^ \t\n\r\f\v;]*+)',
    re.DOTALL,
)
"""A ``name=value`` pair as ``http.cookies`` and aiohttp find one in a Cookie header: after a ``;`` or
whitespace, blanks around ``=``, a value quoted (to its closing quote, ``;`` and blanks included) or
up to a blank. Linear in the header: runs are possessive and a pair starts only at a boundary, and
a quoted value that never closes is scanned once (a later value's opening quote would close it)."""
_PYTHON_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))", re.DOTALL)


def _python_unquote(value: str) -> str:
    """A cookie value as ``http.cookies._unquote`` reads it: a quoted one unquoted and unescaped."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _PYTHON_ESCAPE.sub(lambda m: chr(int(m[1], 8)) if m[1] else m[2], value[1:-1])


def _by_folded_name(pairs: list[tuple[str, str]], fold: Callable[[str], str]) -> dict[str, list[str]]:
    folded: dict[str, list[str]] = {}
    for name, value in pairs:
        folded.setdefault(fold(name), []).append(value)
    return folded


def _as_sent(name: str) -> bytes:
    """``name``'s bytes when its values may be read from the request as sent (``b""`` when not), kept."""
    # replaced for an untrusted peer: every proxy's header, so every name that depends on the peer falls through
    if name.isascii() and not replaced_forwarding_header(name, trust_forwarded=False):
        # An ASCII name: a raw name's bytes.lower() equals it exactly when its Latin-1 text lowered does.
        wanted = name.encode("ascii")
    else:
        wanted = b""
    if len(_AS_SENT) < 256:  # the names policies and templates read: a few, from the configuration
        _AS_SENT[name] = wanted
    return wanted


_AS_SENT: dict[str, bytes] = {}
""":func:`_as_sent` by name: one look-up a read instead of the checks (~2 k instructions)."""


@dataclass(frozen=True)
class ClientAddress:
    """The client: ``ip`` after trusted-proxy resolution, ``peer`` the TCP peer's address."""

    ip: str
    port: int | None
    peer: str


MAX_COOKIES = 180
"""Cookies a request may carry where a policy reads one: Chrome sends at most 180 a site, Firefox 150.
Each is parsed in two readings and folded by name: 24 KiB of ``a=b;`` took 12 ms of the event loop."""
MAX_QUERY_PARAMETERS = 1000
"""Query parameters a request may carry where a policy reads one (PHP's ``max_input_vars``)."""
_MANY_VALUES = 64
"""Query parameters and cookies together past which their parses are dropped after the handshake."""
_VALUE_PARSES = ("query", "_query_pairs", "_folded_query", "cookie_values", "_cookie_pairs", "_folded_cookies",
                 "_cookie_pairs_python_reads", "cookies")  # fmt: skip


class RequestView:
    """The client's upgrade request, read-only; every field is parsed on first use."""

    method = "GET"

    def __init__(
        self,
        scope: Scope,
        path_params: Mapping[str, str],
        trusted_proxies: Networks | None = None,
        forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        self.scope = scope
        self.path: str = scope["path"]
        self.path_params = path_params
        self._trusted = trusted_proxies
        self._forwarded_header = forwarded_header

    @_Memoized
    def headers(self) -> dict[str, list[str]]:
        """Lower-case header names to their values, in arrival order, as the upstream is sent them.

        ``X-Forwarded-For``, ``-Proto`` and ``-Host`` are the gateway's own (what the upstream gets),
        every other ``X-Forwarded-*`` is absent, and so are ``X-Real-IP``, ``Forwarded``, ``X-Scheme``
        and every other header naming the client's address, the host, the URL or the scheme, from any
        peer, a trusted proxy too: a policy must not read a forwarding header the gateway itself does
        not believe (a client's ``X-Forwarded-Proto: https`` passed a check the upstream, sent
        ``http``, never saw). The user or client certificate a proxy vouched for (``Remote-User``,
        ``Ssl-Client-Cert``: ``upstream.proxy_headers.is_vouched_header``) is here when the peer is a
        trusted proxy, and absent otherwise."""
        headers: dict[str, list[str]] = {}
        trusted = self.peer_is_trusted_proxy
        for name, value in self.scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            if not replaced_forwarding_header(key, trust_forwarded=trusted):
                headers.setdefault(key, []).append(value.decode("latin-1"))
        for key, own in forwarding_headers(self.scope, trust_forwarded=trusted, trusted_proxies=self._trusted,
                                           forwarded_header=self._forwarded_header):  # fmt: skip
            headers[key] = [own]
        return headers

    @property
    def trusted_proxies(self) -> Networks | None:
        """The configuration's ``trusted_proxies`` (None: none configured)."""
        return self._trusted

    @property
    def forwarded_header(self) -> Literal["x-forwarded-for", "forwarded"]:
        """The header trusted proxies name the client in (the configuration's ``forwarded_header``)."""
        return self._forwarded_header

    @_Memoized
    def _forwarding_chain(self) -> list[str]:
        """The values of ``forwarded_header`` as the peer sent them (the client's when it is the peer)."""
        name = self._forwarded_header.encode("latin-1")
        return [value.decode("latin-1") for key, value in self.scope.get("headers", ()) if key.lower() == name]

    def header_values(self, name: str) -> list[str]:
        """The values of the header ``name`` (lower case) as :attr:`headers` has them, in arrival order.

        A policy reads one or two headers per handshake (``validate-jwt`` its ``Authorization``):
        one the gateway forwards as sent from any peer (not ``X-Forwarded-*`` nor a proxy's header,
        :func:`~..upstream.proxy_headers.is_proxy_header`, whose presence may depend on the peer) is found in
        the request as sent, without building :attr:`headers` (its forwarding headers and every name
        decoded: ~600 interpreter steps a handshake)."""
        headers = self.__dict__.get("headers")
        if headers is None:
            wanted = _AS_SENT.get(name)
            if wanted is None:
                wanted = _as_sent(name)
            if wanted:
                sent = self.scope.get("headers", ())
                # The length first: most names differ in it, and are not lowered (a new bytes each) to be compared.
                size = len(wanted)
                return [value.decode("latin-1") for key, value in sent if len(key) == size and key.lower() == wanted]
        return (headers if headers is not None else self.headers).get(name, [])

    def header(self, name: str) -> str | None:
        """A header's values joined with ``", "`` (``Cookie`` with ``"; "``), or None."""
        name = name.lower()
        values = self.header_values(name)
        if not values:
            return None
        return ("; " if name == "cookie" else ", ").join(values)

    @_Memoized
    def query(self) -> dict[str, list[str]]:
        """Query parameters to their values (blank values kept), names percent-decoded as sent; bytes
        that are not UTF-8 read as U+FFFD."""
        query: dict[str, list[str]] = {}
        for name, value in self._query_pairs:
            query.setdefault(_replaced(name), []).append(_replaced(value))
        return query

    @_Memoized
    def _query_pairs(self) -> list[tuple[str, str]]:
        # Bytes that are not UTF-8 kept apart as surrogates (query_copies refuses them): read as U+FFFD,
        # %ff and %fe were one value, one limit key, while PHP, Go and Rack read two different bytes.
        query = self.scope.get("query_string", b"").decode("latin-1")
        if query.count("&") >= MAX_QUERY_PARAMETERS:
            raise HandshakeDenied(414, f"the query has more than {MAX_QUERY_PARAMETERS} parameters",
                                  reason="target_too_large")  # fmt: skip
        return parse_qsl(query, keep_blank_values=True, errors="surrogateescape")

    def query_copies(self, name: str) -> list[str]:
        """Every value sent under ``name`` in any spelling a server may read as it (for ``access_token``:
        ``ACCESS_TOKEN``, ``%61ccess_token`` (decoded once), ``access.token``; see :mod:`.names`), in order.

        What a policy checks: the upstream gets the query as sent, and may read any of these.

        Raises:
            AmbiguousValue: a copy is not UTF-8 once decoded (``%ff``): servers read it as U+FFFD, as
                the byte itself, or as Latin-1, so no value of it is the one the upstream reads.
        """
        if not self.scope.get("query_string"):  # none sent (validate-jwt asks for access_token every time)
            return []
        if "[" in name:  # a name with its own array key (page[size]): that key's spellings only
            spelling = spelled_as(name)
            values = [value for sent, value in self._query_pairs if spelling(sent)]
        else:
            values = self._folded_query.get(fold_name(name), [])
        if any(not value.isascii() and _SURROGATE.search(value) for value in values):
            raise AmbiguousValue("query parameter", name, "is not UTF-8 once percent-decoded")
        return values

    @_Memoized
    def _folded_query(self) -> dict[str, list[str]]:
        return _by_folded_name(self._query_pairs, fold_name)  # names decoded once, by parse_qsl

    @_Memoized
    def cookie_values(self) -> dict[str, list[str]]:
        """Cookie names to every value sent under them, in order (a name may come more than once).

        Read as most servers read a ``Cookie`` header (Go, Node's ``cookie``, Starlette): split at
        every ``;``, name and value trimmed, one pair of double quotes around the value removed.
        """
        cookies: dict[str, list[str]] = {}
        for name, value in self._cookie_pairs:
            cookies.setdefault(name, []).append(value)
        return cookies

    def cookie_copies(self, name: str) -> list[str]:
        """Every value of the cookie ``name`` in any spelling a server may read as it (for ``jwt``:
        ``JWT``, ``%6Awt``), in order, across every ``Cookie`` header: what a policy checks."""
        return self._folded_cookies.get(fold_name(name), [])

    @_Memoized
    def _cookie_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for header in self._cookie_headers:
            for part in header.split(";"):
                name, equals, value = part.partition("=")
                name, value = name.strip(), value.strip()
                if equals and name:
                    pairs.append((name, value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value))
        return pairs

    @_Memoized
    def _folded_cookies(self) -> dict[str, list[str]]:
        # Names as sent; the copies are those of every reading: a server reads one or another. (PHP and
        # Node also percent-decode a value: a limit key reads cookies as templates.canonical_cookie.)
        return _by_folded_name(self._cookie_pairs + self._cookie_pairs_python_reads, fold_cookie_name)

    @_Memoized
    def _cookie_pairs_python_reads(self) -> list[tuple[str, str]]:
        """The cookies a Python server finds (``http.cookies``' grammar: aiohttp's ``request.cookies``,
        Bottle, CherryPy): an unquoted value ends at whitespace, where another ``name=value`` may
        start; a quoted one may hold ``;`` and is unescaped (``"\\141cme"`` is ``acme``). To them
        ``jwt=VALID; theme=dark jwt=FORGED`` holds a second ``jwt``, the last, which they read."""
        return [(name, _python_unquote(value)) for header in self._cookie_headers
                for name, value in _PYTHON_COOKIE.findall(header)]  # fmt: skip

    @_Memoized
    def _cookie_headers(self) -> list[str]:
        """The ``Cookie`` headers, refused when they hold more cookies than a browser sends."""
        headers = self.headers.get("cookie", [])
        # Each header's cookies as the larger reading finds them: split at ";", or at whitespace too
        # (a Python server's: "a=b a=b a=b" is one cookie to the first, thousands to the second).
        if sum(max(header.count(";") + 1, len(header.split())) for header in headers) > MAX_COOKIES:
            raise HandshakeDenied(431, f"the request has more than {MAX_COOKIES} cookies", reason="headers_too_large")
        return headers

    def forget_many_values(self) -> None:
        """Drop the query's and the cookies' parses when they hold many values (read again if asked).

        A connection keeps its request view open for its whole life: an attack pass sent 8 KiB of
        ``a=&`` and 24 KiB of ``a=b;`` to an API whose ``set-header`` read ``{query.room}`` and
        ``{cookie.theme}``, and each idle connection kept ~1 MB of parsed pairs (1,000 of them took
        the worker from 103 MB to 1.1 GB). A usual request's few values stay parsed."""
        kept = self.__dict__
        parsed = (len(kept.get(name, ())) for name in ("_query_pairs", "_cookie_pairs", "_cookie_pairs_python_reads"))
        if sum(parsed) > _MANY_VALUES:
            for name in _VALUE_PARSES:
                kept.pop(name, None)

    @_Memoized
    def cookies(self) -> dict[str, str]:
        """Cookie names to their value (the last one sent, for a name that came more than once)."""
        return {name: values[-1] for name, values in self.cookie_values.items()}

    @_Memoized
    def client(self) -> ClientAddress:
        """The client: ``ip`` is the TCP peer's address, or what trusted proxies report; ``unknown``
        (:data:`~..forwarded.UNKNOWN_CLIENT`) when the scope's client is text that is no address, as a
        server that rewrites it from ``X-Forwarded-For`` leaves it (:func:`~..forwarded.peer_client`);
        ``""`` when the connection has no peer address (a Unix socket's) and no trusted proxy named it."""
        peer = self.scope.get("client") or ("", None)
        text = peer[0] if type(peer[0]) is str else (UNKNOWN_CLIENT if peer[0] else "")
        if self._trusted:
            chain = forwarded_chain(self._forwarding_chain, self._forwarded_header)
            unix_socket = not text and unix_socket_peer(self.scope)
            if unix_socket and self._trusted.unix_socket:
                warn_if_open(self.scope)
            ip = client_address(text, chain, self._trusted, unix_socket=unix_socket)
        else:
            ip = peer_client(text)
        return ClientAddress(ip=ip, port=peer[1], peer=text)

    @_Memoized
    def peer_is_trusted_proxy(self) -> bool:
        """Whether the TCP peer is one of ``trusted_proxies`` (its forwarding headers may go upstream)."""
        if not self._trusted:  # none configured: no address to parse
            return False
        peer_address = (self.scope.get("client") or ("", None))[0]
        if not peer_address:  # a Unix socket's peer is trusted when trusted_proxies lists "unix:"
            if self._trusted.unix_socket and unix_socket_peer(self.scope):
                warn_if_open(self.scope)
                return True
            return False
        peer = parse_ip(peer_address) if type(peer_address) is str else None
        return peer is not None and peer in self._trusted

    @_Memoized
    def subprotocols(self) -> list[str]:
        """The subprotocols offered, as every connector's upstream request has them before the policies'
        edits: empty elements ignored, each once (``upstream.request.offered_subprotocols``).

        Raises:
            HandshakeDenied: 400 (``bad_request``) when an element is not a token, or the server's
                ``scope["subprotocols"]`` is not a list of strings (read without the header: ``[b"chat"]``
                was a 500 and a traceback, a string ``"chat"`` the offer ``c, h, a, t``).
        """
        listed = self.scope.get("subprotocols")
        if listed and (type(listed) not in (list, tuple) or any(type(value) is not str for value in listed)):
            raise HandshakeDenied(400, "the server's list of the subprotocols offered is not a list of strings",
                                  reason="bad_request")  # fmt: skip
        return offered_subprotocols(self.scope)

    @property
    def host(self) -> str:
        """The ``Host`` header as the client sent it (``Admin.Example.com:443``): ``{request.host}``."""
        return self.header("host") or ""

    @_Memoized
    def hostname(self) -> str:
        """The host the ``Host`` header names, spelled one way: lower case, without the port or a trailing
        dot, an IPv6 address in brackets (``{request.hostname}``; :func:`.host_header.hostname`). What a
        server routes by, so what a policy compares: ``ADMIN.example.com:443`` is ``admin.example.com``."""
        return host_header.hostname(self.host)

    @property
    def scheme(self) -> str:
        return "wss" if self.scope.get("scheme") == "wss" else "ws"


__all__ = [
    "AmbiguousValue",
    "ClientAddress",
    "RequestView",
]
