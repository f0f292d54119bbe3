"""The upstream request, Sans-I/O: which headers cross the gateway, URL templates, the request a connector opens."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote_plus

from .._types import Headers, Scope
from ..bounded import remember
from ..config.apis import ApiConfig, UpstreamConfig
from ..config.fields import is_token
from ..errors import HandshakeDenied
from ..forwarded import Networks, forwarded_chain, parse_ip, trusted_hops
from ..param_names import spelled_as
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
mean nothing on a 101 or a refusal the gateway relays. ``Set-Cookie`` passes (docs/security.md)."""

_RESPONSE_DROP = HOP_BY_HOP | ORIGIN_WIDE | {"date", "server"}

ForwardedHeader = Literal["x-forwarded-for", "forwarded"]


PROXY_SET = frozenset(
    {
        "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip", "fastly-client-ip",
        "x-cluster-client-ip", "x-originating-ip", "x-remote-ip", "x-remote-addr", "x-original-forwarded-for",
        "x-host", "x-original-host", "x-original-url", "x-rewrite-url",
    }
)  # fmt: skip
"""Headers a proxy or CDN sets that upstream frameworks believe: the client's address
(``True-Client-IP``...), the host, or the URL to route by (``X-Original-URL`` and ``X-Rewrite-URL``
override the request path in some frameworks: past the gateway's routing and policies). Not the
whole rule: see :func:`is_proxy_header`."""

_ADDRESS_PARTS = (
    "client-ip", "clientip", "client-addr", "client-port", "real-ip", "real-port", "connecting-ip", "connection-ip",
    "user-ip", "remote-ip", "remote-addr", "remote-host", "remote-port", "originating-ip", "socket-ip", "socketip",
    "src-ip", "external-address",
)  # fmt: skip
"""The client's address: read before the other kinds (``Remote-Addr`` and ``X-Remote-IP`` are not a user)."""
_VOUCHED_PARTS = (
    # the client's certificate, as the proxy that ended TLS verified it (Ssl-Client-Cert, X-Client-Verify)
    "client-cert", "clientcert", "client-verify", "client-dn", "client-s-dn", "client-i-dn", "client-subject",
    "client-issuer", "client-serial", "client-fingerprint",
    # the user an authenticating proxy let in (oauth2-proxy, Azure Easy Auth, Google IAP, Authelia)
    "remote-user", "remoteuser", "authenticated", "auth-request-", "client-principal", "jwt-assertion",
)  # fmt: skip
_VOUCHED_PREFIXES = (
    "remote-", "x-remote-extra-", "x-amzn-oidc-", "x-ms-token-", "x-goog-iap-", "cf-access-", "x-pomerium-",
    "x-vouch-", "x-authentik-", "tailscale-",
    # the TLS session the proxy that ended it saw (X-SSL-Protocol, X-SSL-Cipher, Ssl-Client-*)
    "ssl-", "x-ssl-",
    # oauth2-proxy's --pass-user-headers
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
    "x-forwarded-access-token",
)  # fmt: skip
_VOUCHED_NAMES = (
    # Kong
    "x-consumer-id", "x-consumer-custom-id", "x-consumer-username", "x-consumer-groups", "x-credential-identifier",
    "x-credential-username", "x-anonymous-consumer", "x-anonymous-groups",
    # X-Remote-* names an authenticating proxy sets (Kubernetes' front proxy: X-Remote-User, X-Remote-Group)
    "x-remote-email", "x-remote-name", "x-remote-group", "x-remote-groups",
    # Keycloak Gatekeeper / Louketo (not X-Auth-Token: a credential OpenStack clients send themselves)
    "x-auth-username", "x-auth-userid", "x-auth-subject", "x-auth-email", "x-auth-groups", "x-auth-roles",
    "x-auth-audience", "x-auth-expiresin",
)  # fmt: skip
_VOUCHED_SEGMENTS = ("webauth",)  # Grafana's X-WEBAUTH-USER (not X-WebAuthn-Challenge)
_REPLACED_PARTS = (
    # the request's address, host or URL (X-Forwarded-Prefix, X-Script-Name: the root path)
    "forwarded", "script-name",
    # the scheme, its words run together (FrontEndHttps; the others: _REPLACED_LAST_SEGMENTS)
    "frontendhttps",
)  # fmt: skip
_REPLACED_PREFIXES = ("x-original-", "x-envoy-", "x-appengine-", "x-arr-")
_REPLACED_LAST_SEGMENTS = ("scheme", "https", "ssl")
"""The scheme the client used, as the name's last segment (X-Scheme, X-Url-Scheme, Front-End-Https,
X-Https, X-Arr-Ssl, X-Forwarded-Ssl): not anywhere in it (``X-Https-Redirect``, ``X-Api-Scheme-Version``,
``X-Classloader``), nor in a browser's client hint (``Sec-CH-Prefers-Color-Scheme``)."""
_CLIENT_HINTS = "sec-ch-"
"""Names browsers alone set (RFC 8942; a page's script cannot), which no proxy sets: never a proxy's."""


def _rule(
    parts: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = (),
    names: tuple[str, ...] = (),
    segments: tuple[str, ...] = (),
    last_segments: tuple[str, ...] = (),
) -> re.Pattern[str]:
    """One regular expression, searched once per name (after ``_`` → ``-``): any of ``parts`` anywhere,
    a name starting with one of ``prefixes`` or being one of ``names``, one of ``segments`` as a whole
    dash-separated segment, one of ``last_segments`` as the name's last segment."""

    def any_of(words: tuple[str, ...]) -> str:
        return "(?:" + "|".join(map(re.escape, words)) + ")"

    alternatives = [*map(re.escape, parts)]
    if prefixes:
        alternatives.append("^" + any_of(prefixes))
    if names:
        alternatives.append("^" + any_of(names) + "$")
    if segments:
        alternatives.append("(?<![^-])" + any_of(segments) + "(?![^-])")
    if last_segments:
        alternatives.append("(?<![^-])" + any_of(last_segments) + "$")
    return re.compile("|".join(alternatives))


_ADDRESS = _rule(_ADDRESS_PARTS).search
_VOUCHED = _rule(_VOUCHED_PARTS, _VOUCHED_PREFIXES, _VOUCHED_NAMES, _VOUCHED_SEGMENTS).search
_ALWAYS_REPLACED = _rule(_REPLACED_PARTS, _REPLACED_PREFIXES, last_segments=_REPLACED_LAST_SEGMENTS).search


def is_proxy_header(name: str) -> bool:
    """Whether the header ``name`` (lower case) is one a proxy, CDN, platform or authenticating proxy
    sets and its upstream believes; ``_`` is read as ``-``, as CGI-style servers read it.

    Four kinds, each by the parts of names that platforms and frameworks use, not by a list alone:

    - the client's address and the request's host or URL: :data:`PROXY_SET`, any name holding
      ``forwarded``, ``client-ip``, ``clientip``, ``client-addr``, ``client-port``, ``real-ip``,
      ``real-port``, ``connecting-ip``, ``connection-ip``, ``user-ip``, ``remote-ip``, ``remote-addr``,
      ``remote-host``, ``originating-ip``, ``socket-ip``, ``src-ip``, ``external-address`` or
      ``script-name`` (``X-Script-Name``, the root path, as ``X-Forwarded-Prefix``), any
      ``X-Original-*``, ``X-Envoy-*`` or ``X-Appengine-*``;
    - the scheme: any name whose last segment is ``scheme``, ``https`` or ``ssl`` (``X-Scheme``, which
      Tornado believes, ``X-Url-Scheme``, ``Front-End-Https``, ``X-Https``, ``X-Forwarded-Ssl``),
      ``FrontEndHttps``, ``X-Arr-*``;
    - the client certificate and TLS session a proxy verified: ``client-cert``, ``clientcert``,
      ``client-verify``, ``client-dn`` and the like, any ``Ssl-*`` or ``X-SSL-*`` (``Ssl-Client-Cert``,
      ``X-SSL-Client-Verify``, ``X-SSL-Protocol``, ``X-Client-Verify``);
    - the user an authenticating proxy let in: ``remote-user``, ``remoteuser``, ``authenticated``,
      ``auth-request-``, ``client-principal``, ``jwt-assertion``, the segment ``webauth``, any
      ``Remote-*`` (not an address), ``X-Remote-Extra-*``, ``X-Amzn-Oidc-*``, ``X-Ms-Token-*``,
      ``X-Goog-Iap-*``, ``Cf-Access-*``, ``X-Pomerium-*``, ``X-Vouch-*``, ``X-Authentik-*``,
      ``Tailscale-*``, and the names Kong (``X-Consumer-ID``, ``X-Credential-Identifier``,
      ``X-Anonymous-Consumer``...), Kubernetes' proxy (``X-Remote-Group``...) and Keycloak Gatekeeper
      (``X-Auth-Username``, ``X-Auth-Roles``...) set.

    The last two are :func:`is_vouched_header`: a trusted proxy's go on. A list alone missed the
    platforms' own names: ``Client-IP``, ``X-Forwarded`` (no dash), ``Forwarded-For``,
    ``X-Envoy-External-Address``, ``Fly-Client-IP``, ``X-Appengine-User-Ip``, ``X-Azure-ClientIP`` and
    ``X-ProxyUser-Ip`` reached the upstream from any client; so did ``X-Scheme: https`` (a Tornado
    upstream then reported https) and ``Remote-User``. Words matched anywhere in a name dropped
    clients' own headers instead (``X-Https-Redirect``, ``X-Classloader``, ``X-WebAuthn-Challenge``,
    ``X-Remote-Config``, ``X-Anonymous-Id``), and a browser's ``Sec-CH-Prefers-Color-Scheme``: a
    browser's client hint (``Sec-CH-*``) is never a proxy's header.
    """
    if name in PROXY_SET:
        return True
    name = name.replace("_", "-")
    if name.startswith(_CLIENT_HINTS):
        return False
    return _ADDRESS(name) is not None or _VOUCHED(name) is not None or _ALWAYS_REPLACED(name) is not None


def is_vouched_header(name: str) -> bool:
    """Whether the header ``name`` (lower case) is the client certificate a TLS-ending proxy verified
    or the user an authenticating proxy let in (:func:`is_proxy_header`'s last two kinds): only a
    proxy in front of the gateway can have done either, so a trusted proxy's go on (for policies and
    the upstream) and anyone else's are forgeries. A name that also names the client's address
    (``Remote-Addr``, ``X-Remote-IP``) is not one."""
    if name in PROXY_SET:
        return False
    name = name.replace("_", "-")
    return not name.startswith(_CLIENT_HINTS) and _ADDRESS(name) is None and _VOUCHED(name) is not None


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
    alone; the connection's scheme; the ``Host`` header. Policies read these, not the client's.

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
    forwarded_for = _vouched_for(client[0] if client else "", chain, trusted_proxies, forwarded_header)
    if client:
        forwarded_for.append(client[0])
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
    if trusted_proxies is None or peer_ip is None:
        return values if forwarded_header == "x-forwarded-for" else []
    return trusted_hops(peer_ip, forwarded_chain(values, forwarded_header), trusted_proxies)


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
    """``url`` with the client's query string appended; bytes a URL cannot carry are percent-encoded.

    A parameter ``url`` sets itself (``ws://chat/?room={room}``, ``?tenant=acme``) is the operator's:
    the client's copies of it, in every spelling a server reads as its name (:mod:`.param_names`:
    ``ROOM``, ``r%6Fom``, ``room[]``), are dropped, as ``set-query-parameter`` and ``rewrite-uri`` drop
    them. Appended after it, ``/ws/chat/lobby?room=staff`` reached the upstream as
    ``/chat?room=lobby&room=staff``, and frameworks that read the last copy read ``staff``, a room
    the policies, which saw the path parameter ``lobby``, never checked.
    """
    if not query:
        return url
    own = url.partition("?")[2]
    if own:
        spellings = [spelled_as(name) for name, _ in parse_qsl(own, keep_blank_values=True)]
        if spellings:
            sent = query.split(b"&")
            kept = [part for part in sent if not any(s(_sent_name(part)) for s in spellings)]
            if len(kept) != len(sent):
                query = b"&".join(part for part in kept if part)
                if not query:
                    return url
    return f"{url}{'&' if '?' in url else '?'}{quote(query, safe=_QUERY_SAFE)}"


def _sent_name(part: bytes) -> str:
    """A query parameter's name as servers read it: decoded once, ``+`` a space (as ``parse_qsl``)."""
    return unquote_plus(part.partition(b"=")[0].decode("latin-1"), errors="surrogateescape")


def request_path(scope: Scope) -> str:
    """The client's path, percent-encoded segment by segment as it was split for routing."""
    return "/" + "/".join(quote(part, safe=_SEGMENT_SAFE) for part in split_path(scope["path"], scope.get("raw_path")))


def build_request(
    api: ApiConfig,
    upstream: UpstreamConfig,
    scope: Scope,
    params: dict[str, str],
    *,
    trust_forwarded: bool = False,
    trusted_proxies: Networks | None = None,
    forwarded_header: ForwardedHeader = "x-forwarded-for",
    subprotocols: list[str] | None = None,
) -> UpstreamRequest:
    """The upstream request for ``upstream``, before the policies' edits.

    ``subprotocols`` is the client's offer as :func:`offered_subprotocols` read it (read from
    ``scope`` when None).

    Raises:
        HandshakeDenied: 400 (``bad_request``) for an offer that is not a list of tokens.
    """
    query = scope.get("query_string", b"") if api.forward_query else b""
    if upstream.kind == "asgi":
        url = with_query(fill_template(upstream.path or request_path(scope), params), query)
    else:
        url = with_query(fill_template(upstream.url, params), query)
    return UpstreamRequest(
        url=url,
        headers=upstream_headers(
            scope, trust_forwarded=trust_forwarded, trusted_proxies=trusted_proxies, forwarded_header=forwarded_header
        ),
        subprotocols=list(offered_subprotocols(scope) if subprotocols is None else subprotocols),
        scope=scope,
        path_params=params,
    )


_OWS = " \t"


def offered_subprotocols(scope: Scope) -> list[str]:
    """The subprotocols the client offers: the one reading of ``Sec-WebSocket-Protocol`` that the
    policies (``RequestView.subprotocols``) and every connector's upstream request share.

    The header is ``1#token`` (RFC 6455 §4.1): its lines' elements, in order, each without the blanks
    around it; an empty element is ignored (RFC 9110 §5.6.1: ``chat, ``, ``, chat``, ``chat,,v2``)
    and a repeated one kept once. Read from the header lines as sent (servers differ:
    uvicorn keeps the empty elements in ``scope["subprotocols"]``), else from ``scope["subprotocols"]``.

    Raises:
        HandshakeDenied: 400 (``bad_request``) for an element that is not a token (``v 2``,
            ``"x"``, a control character). Before, the relay's client library refused to send it: a
            500 and a traceback in the log for each such handshake; the splice sent it on.
    """
    listed = scope.get("subprotocols")
    if listed is not None and not listed:  # none offered: servers list every header line's elements
        return []
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == _PROTOCOL]
    offered: dict[str, None] = {}
    for value in values or listed or ():
        for element in value.split(","):
            element = element.strip(_OWS)
            if not element:
                continue
            if is_token(element) is None:
                raise bad_request(_not_a_token(element))
            offered[element] = None
    return list(offered)


_PROTOCOL = b"sec-websocket-protocol"


def _not_a_token(element: str) -> str:
    """What is wrong with ``element``, naming its first wrong character only (a token may be a credential)."""
    wrong = next(c for c in element if is_token(c) is None)
    return (f"Sec-WebSocket-Protocol offers a subprotocol with the character {wrong!a}: each subprotocol "
            "must be a token (RFC 6455 §4.1), no blanks, quotes, separators or control characters in it")  # fmt: skip


def kept_response_headers(headers: list[tuple[str, str]]) -> Headers:
    """The upstream's response headers worth passing to the client, as ASGI raw headers: not the
    hop-by-hop ones, ``Date`` and ``Server`` (the gateway's own), nor :data:`ORIGIN_WIDE`."""
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
    "is_proxy_header",
    "is_vouched_header",
    "offered_subprotocols",
    "replaced_forwarding_header",
    "upstream_headers",
]
