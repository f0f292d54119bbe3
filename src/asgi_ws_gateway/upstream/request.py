"""The upstream request, Sans-I/O: which headers cross the gateway, URL templates, the request a connector opens."""

from __future__ import annotations

from urllib.parse import quote

from .._types import Headers, Scope
from ..bounded import remember
from ..config import ApiConfig, UpstreamConfig
from ..errors import HandshakeDenied
from ..routing import split_path
from .base import UpstreamRequest

HOP_BY_HOP = frozenset(
    {
        "host", "connection", "upgrade", "keep-alive", "proxy-connection", "te", "trailer",
        "transfer-encoding", "proxy-authenticate", "proxy-authorization", "content-length", "http2-settings",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
        "sec-websocket-protocol", "sec-websocket-accept", "sec-websocket-origin", "expect",
    }
)  # fmt: skip
"""Headers that describe one hop of the connection and never cross the gateway, in either direction.

They are the only headers dropped as hop-by-hop: the names a client's ``Connection`` header lists
are not (RFC 9110 §7.6.1 would drop them), so a client cannot make the gateway forward less than
its policies checked (``Connection: Authorization`` took a checked token away from an upstream that
then read an unchecked cookie). ``Sec-WebSocket-Origin`` is the draft protocols' Origin (hybi-07 to
-10): an upstream reading it would take an origin no ``check-origin`` saw. ``Expect`` asks each hop
about request content, which a handshake has none of (RFC 9110 §10.1.1): forwarded, ``Expect:
100-continue`` made an nginx upstream answer ``100 Continue`` before its 101, a failed backend to
the gateway, so three such handshakes put a healthy backend into cooldown."""

_RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}


PROXY_SET = frozenset(
    {
        "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip", "fastly-client-ip",
        "x-cluster-client-ip", "x-originating-ip", "x-remote-ip", "x-remote-addr", "x-original-forwarded-for",
        "x-host", "x-original-host", "x-original-url", "x-rewrite-url",
    }
)  # fmt: skip
"""Headers a proxy or CDN sets that upstream frameworks believe: the client's address
(``True-Client-IP``...), the host, or the URL to route by (``X-Original-URL`` and ``X-Rewrite-URL``
override the request path in some frameworks: past the gateway's routing and policies)."""


VIA_RECEIVED_BY = "asgi-ws-gateway"
"""How the gateway names itself in the ``Via`` entry it appends to every upstream request (a pseudonym,
RFC 9110 §7.6.3: no host name or version leaks); ``handshake.forwarding_loop`` counts these."""
_VIA_ENTRY = f"1.1 {VIA_RECEIVED_BY}"  # a WebSocket handshake is HTTP/1.1 (RFC 6455 §4.1)


def upstream_headers(scope: Scope, *, trust_forwarded: bool = False) -> list[tuple[str, str]]:
    """End-to-end request headers plus ``X-Forwarded-For/Proto/Host`` and the gateway's ``Via`` entry
    (after the client's own) for the upstream handshake.

    The client's own ``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP`` and the other headers a proxy
    sets (:data:`PROXY_SET`) go upstream only when ``trust_forwarded`` (the TCP peer is one of
    ``trusted_proxies``): from anyone else they are forgeries, and an upstream that reads them would
    believe them.
    """
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    kept: list[tuple[str, str]] = []
    crossing = _CROSSING[trust_forwarded]
    for name_b, value_b in raw:
        sent = crossing.get(name_b)
        if sent is None:
            sent = _crossing(name_b, trust_forwarded)
        if sent:
            kept.append((sent[0], value_b.decode("latin-1")))
    kept += forwarding_headers(scope, trust_forwarded=trust_forwarded)
    kept.append(("via", _VIA_ENTRY))
    return kept


_CROSSING: tuple[dict[bytes, tuple[str, ...]], dict[bytes, tuple[str, ...]]] = ({}, {})
"""By ``trust_forwarded``: :func:`_crossing` of the client's header names seen (a client's few names
repeat from one handshake to the next; bounded as the redaction's stores are)."""
_CROSSING_LIMIT = 256
_CROSSING_LENGTH = 64


def _crossing(name_b: bytes, trust_forwarded: bool) -> tuple[str, ...]:
    """``(name,)``: the client's header ``name_b`` goes upstream so named (lower case); ``()``: it does not."""
    name = name_b.decode("latin-1").lower()
    sent = () if name in HOP_BY_HOP or replaced_forwarding_header(name, trust_forwarded=trust_forwarded) else (name,)
    if len(name_b) <= _CROSSING_LENGTH:
        remember(_CROSSING[trust_forwarded], name_b, sent, _CROSSING_LIMIT)
    return sent


def replaced_forwarding_header(name: str, *, trust_forwarded: bool) -> bool:
    """Whether the client's header ``name`` (lower case) is replaced by the gateway's own value
    (``X-Forwarded-*``, :func:`forwarding_headers`) or, from a peer that is not a trusted proxy,
    dropped (:data:`PROXY_SET`): what the upstream is sent under that name is never the client's."""
    return name.startswith("x-forwarded-") or (not trust_forwarded and name in PROXY_SET)


def forwarding_headers(scope: Scope, *, trust_forwarded: bool = False) -> list[tuple[str, str]]:
    """The ``X-Forwarded-For``, ``-Proto`` and ``-Host`` the gateway sends upstream: the client's
    forwarding chain plus the peer when the peer is a trusted proxy, else the peer alone; the
    connection's scheme; the ``Host`` header. Policies read these, not the client's."""
    forwarded_for: list[str] = []
    host = ""
    for name_b, value_b in scope.get("headers", []):
        name = name_b.lower()
        if name == b"host":
            host = value_b.decode("latin-1")
        elif name == b"x-forwarded-for" and trust_forwarded:
            forwarded_for.append(value_b.decode("latin-1"))
    client = scope.get("client")
    if client:
        forwarded_for.append(client[0])
    headers: list[tuple[str, str]] = []
    if forwarded_for:
        headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
    headers.append(("x-forwarded-proto", "https" if scope.get("scheme") == "wss" else "http"))
    if host:
        headers.append(("x-forwarded-host", host))
    return headers


# What stays as is in a path segment and in a query string; everything else is percent-encoded.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
_QUERY_SAFE = "-._~!$&'()*+,=:@/?%"
"""A query's safe characters: not ``;``, which the gateway reads as part of a value (``parse_qsl``)
and some upstream parsers as a separator (Rack 2, Go before 1.17, Python before 3.10): encoded, a
``?x=1;access_token=...`` is one parameter to every reader, as the gateway's policies saw it."""


def fill_template(template: str, params: dict[str, str]) -> str:
    """Substitute ``{name}`` placeholders with percent-encoded path parameter values.

    Every character that could end the segment (``/``, ``?``, ``#``, ``%``, ``\\``) is encoded;
    values that would be a dot segment are refused earlier (``request_checks.check_path_params``).
    """
    for name, value in params.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def with_query(url: str, query: bytes) -> str:
    """``url`` with the client's query string appended; bytes a URL cannot carry are percent-encoded."""
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{quote(query, safe=_QUERY_SAFE)}"


def request_path(scope: Scope) -> str:
    """The client's path, percent-encoded segment by segment as it was split for routing."""
    return "/" + "/".join(quote(part, safe=_SEGMENT_SAFE) for part in split_path(scope["path"], scope.get("raw_path")))


def build_request(
    api: ApiConfig, upstream: UpstreamConfig, scope: Scope, params: dict[str, str], *, trust_forwarded: bool = False
) -> UpstreamRequest:
    query = scope.get("query_string", b"") if api.forward_query else b""
    if upstream.kind == "asgi":
        url = with_query(fill_template(upstream.path or request_path(scope), params), query)
    else:
        url = with_query(fill_template(upstream.url, params), query)
    return UpstreamRequest(
        url=url,
        headers=upstream_headers(scope, trust_forwarded=trust_forwarded),
        subprotocols=list(scope.get("subprotocols") or ()),
        scope=scope,
        path_params=params,
    )


def kept_response_headers(headers: list[tuple[str, str]]) -> Headers:
    """The upstream's response headers worth passing to the client, as ASGI raw headers."""
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in _RESPONSE_DROP
    ]


def bad_request(detail: str) -> HandshakeDenied:
    """A 400 for an upstream request the client's values made unsendable (never a backend failure)."""
    return HandshakeDenied(400, detail, reason="bad_request")


__all__ = [
    "HOP_BY_HOP",
    "PROXY_SET",
    "VIA_RECEIVED_BY",
    "bad_request",
    "build_request",
    "forwarding_headers",
    "replaced_forwarding_header",
    "upstream_headers",
]
