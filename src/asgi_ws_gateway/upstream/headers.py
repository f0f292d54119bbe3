"""Which headers cross the gateway, Sans-I/O: the client's toward the upstream (hop-by-hop and proxy
headers dropped, the gateway's own ``X-Forwarded-*`` and ``Via`` added), the upstream's answer's toward
the client (hop-by-hop and origin-wide ones dropped)."""

from __future__ import annotations

from typing import Literal

from .._types import Headers, Scope
from ..bounded import remember
from ..forwarded import UNKNOWN_CLIENT, Networks, forwarded_chain, parse_ip, peer_client, trusted_hops
from .proxy_headers import is_proxy_header, is_vouched_header

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

ORIGIN_WIDE = frozenset(
    {
        "strict-transport-security", "public-key-pins", "public-key-pins-report-only", "expect-ct",
        "clear-site-data", "alt-svc", "nel", "report-to", "reporting-endpoints", "refresh", "location",
        "content-location",
    }
)  # fmt: skip
"""Response headers a browser applies to the whole origin (or that point it elsewhere), which no
upstream's answer passes to the client: the gateway's origin is shared by every API it serves, so one
backend's ``Strict-Transport-Security: ...; includeSubDomains; preload``, ``Clear-Site-Data: "*"``
(the origin's storage and cookies wiped), ``Alt-Svc`` (the origin's traffic sent to another
endpoint) or ``NEL``/``Report-To`` (the origin's failed requests reported to a URL of its choosing)
acted on every API and page under that origin. ``Refresh``, ``Location`` and ``Content-Location``
mean nothing on a 101 or a refusal the gateway relays. ``Set-Cookie`` passes, but for a cookie the
policies read (``upstream.set_cookies``, docs/security.md)."""

FRONT_PROXY = frozenset({"x-sendfile", "x-lighttpd-send-file"})
FRONT_PROXY_PREFIXES = ("x-accel-", "x-envoy-", "x-litespeed-")
"""Response headers (by name, and by prefix) that a proxy in front of the gateway acts on, which no
upstream's answer passes on: to that proxy the gateway is the application, and it obeys them as the
gateway's own. nginx's ``X-Accel-Redirect`` (``X-Accel-*``) serves another URI in the answer's
place, an ``internal`` location's too; ``X-Sendfile`` (Apache's mod_xsendfile, lighttpd) and
``X-LiteSpeed-Location`` a file; Envoy's router takes ``x-envoy-immediate-health-check-fail`` from the
host it routed to (the gateway) as the host failing its health checks, and ``x-envoy-*`` are its own
names. Through a gateway behind nginx, one upstream's 101 or refusal with ``X-Accel-Redirect:
/internal/secret.txt`` had nginx answer the client with that file, a location no client may
request."""

_RESPONSE_DROP = HOP_BY_HOP | ORIGIN_WIDE | FRONT_PROXY | {"date", "server"}

ForwardedHeader = Literal["x-forwarded-for", "forwarded"]


VIA_RECEIVED_BY = "asgi-ws-gateway"
"""How the gateway names itself in the ``Via`` entry it appends to every upstream request (a pseudonym,
RFC 9110 §7.6.3: no host name or version leaks); ``handshake.forwarding_loop`` counts these."""
_VIA_ENTRY = f"1.1 {VIA_RECEIVED_BY}"  # a WebSocket handshake is HTTP/1.1 (RFC 6455 §4.1)


def upstream_headers(
    scope: Scope,
    *,
    trust_forwarded: bool = False,
    trusted_proxies: Networks | None = None,
    forwarded_header: ForwardedHeader = "x-forwarded-for",
) -> list[tuple[str, str]]:
    """End-to-end request headers plus ``X-Forwarded-For/Proto/Host`` and the gateway's ``Via`` entry
    (after the client's own) for the upstream handshake.

    The peer's own ``Forwarded``, ``X-Real-IP``, ``X-Scheme`` and every other header naming the
    client's address, the host, the URL or the scheme never go upstream, whoever the peer is: the
    upstream learns them from the gateway's ``X-Forwarded-For``, ``-Proto`` and ``-Host`` only
    (:func:`forwarding_headers`), which carry what the trusted proxies vouched for in
    ``forwarded_header`` and nothing else (a proxy that appends to ``X-Forwarded-For`` passes its
    client's ``X-Real-IP`` on). The user or client certificate a proxy vouched for
    (:func:`is_vouched_header`) goes on when ``trust_forwarded`` (the peer is one of
    ``trusted_proxies``), and from anyone else is a forgery (:func:`replaced_forwarding_header`).
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
    kept += forwarding_headers(
        scope, trust_forwarded=trust_forwarded, trusted_proxies=trusted_proxies, forwarded_header=forwarded_header
    )
    kept.append(("via", _VIA_ENTRY))
    return kept


_CROSSING: tuple[dict[bytes, tuple[str, ...]], dict[bytes, tuple[str, ...]]] = ({}, {})
"""By ``trust_forwarded``: :func:`_crossing` of the client's header names seen (a client's few names
repeat from one handshake to the next; bounded as the redaction's stores are)."""
_REPLACED: tuple[dict[str, bool], dict[str, bool]] = ({}, {})
"""By ``trust_forwarded``: :func:`replaced_forwarding_header` of the names asked (policies' reads and
the header table's)."""
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
    """Whether the peer's header ``name`` (lower case) is replaced by the gateway's own value
    (``X-Forwarded-*``, :func:`forwarding_headers`) or dropped (:func:`is_proxy_header`): what the
    upstream and the policies get under that name is never the peer's.

    The client's address, the host, the URL and the scheme are dropped from every peer, a trusted
    proxy too; the user and client certificate a proxy vouched for (:func:`is_vouched_header`) only
    when the peer is not a trusted proxy (``trust_forwarded`` false)."""
    cache = _REPLACED[trust_forwarded]
    replaced = cache.get(name)
    if replaced is None:
        replaced = (name.startswith("x-forwarded-") or is_proxy_header(name)) and not (
            trust_forwarded and is_vouched_header(name)
        )
        if len(name) <= _CROSSING_LENGTH:
            remember(cache, name, replaced, _CROSSING_LIMIT)
    return replaced


def forwarding_headers(
    scope: Scope,
    *,
    trust_forwarded: bool = False,
    trusted_proxies: Networks | None = None,
    forwarded_header: ForwardedHeader = "x-forwarded-for",
) -> list[tuple[str, str]]:
    """The ``X-Forwarded-For``, ``-Proto`` and ``-Host`` the gateway sends upstream: the hops its
    trusted proxies vouch for in ``forwarded_header`` (the client first, as the gateway resolved it:
    :func:`~..forwarded.trusted_hops`) plus the peer when the peer is a trusted proxy, else the peer
    alone; the connection's scheme; the ``Host`` header as sent (one host with an optional port, as
    ``handshake.host_header`` checked it: never a list, ``a,b``, whose first element Express reads and
    whose last Werkzeug's ``ProxyFix``). Policies read these, not the client's.

    Never a header the configuration does not believe, nor what a client wrote left of itself: under
    ``forwarded_header: forwarded`` the upstream was sent the client's own ``X-Forwarded-For`` (a
    client admitted as 203.0.113.9 reached it as ``6.6.6.6, 127.0.0.1``), and a forged leftmost
    entry is what most frameworks read as the client. Without ``trusted_proxies`` (an older caller)
    the peer's whole ``X-Forwarded-For`` is kept, as before.
    """
    chain: list[str] = []
    host = ""
    wanted = forwarded_header.encode("latin-1")
    for name_b, value_b in scope.get("headers", []):
        name = name_b.lower()
        if name == b"host":
            host = value_b.decode("latin-1")
        elif name == wanted and trust_forwarded:
            chain.append(value_b.decode("latin-1"))
    client = scope.get("client")
    # The TCP peer as an address, or "unknown": a server rewriting it from X-Forwarded-For put text there,
    # which went upstream as the peer (and a bytes host was a 500).
    peer = (peer_client(client[0]) if isinstance(client[0], str) else UNKNOWN_CLIENT) if client else ""
    forwarded_for = _vouched_for(peer, chain, trusted_proxies, forwarded_header)
    if peer:
        forwarded_for.append(peer)
    headers: list[tuple[str, str]] = []
    if forwarded_for:
        headers.append(("x-forwarded-for", ", ".join(forwarded_for)))
    headers.append(("x-forwarded-proto", "https" if scope.get("scheme") == "wss" else "http"))
    if host:
        headers.append(("x-forwarded-host", host))
    return headers


def _vouched_for(
    peer: str, values: list[str], trusted_proxies: Networks | None, forwarded_header: ForwardedHeader
) -> list[str]:
    """The hops of the trusted peer's ``values`` of ``forwarded_header`` that go upstream, client first."""
    if not values:
        return []
    peer_ip = parse_ip(peer) if peer else None
    if trusted_proxies is None or (peer_ip is None and peer):
        return values if forwarded_header == "x-forwarded-for" else []
    # No peer address: values come only from a trusted Unix socket's peer (trusted_hops' None).
    return trusted_hops(peer_ip, forwarded_chain(values, forwarded_header), trusted_proxies)


def kept_response_headers(headers: list[tuple[str, str]]) -> Headers:
    """The upstream's response headers worth passing to the client, as ASGI raw headers: not the
    hop-by-hop ones, ``Date`` and ``Server`` (the gateway's own), nor :data:`ORIGIN_WIDE` or
    :data:`FRONT_PROXY` (and its prefixes)."""
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _RESPONSE_DROP and not lowered.startswith(FRONT_PROXY_PREFIXES):
            kept.append((lowered.encode("latin-1"), value.encode("latin-1")))
    return kept


__all__ = [
    "FRONT_PROXY",
    "FRONT_PROXY_PREFIXES",
    "HOP_BY_HOP",
    "ORIGIN_WIDE",
    "VIA_RECEIVED_BY",
    "forwarding_headers",
    "replaced_forwarding_header",
    "upstream_headers",
]
