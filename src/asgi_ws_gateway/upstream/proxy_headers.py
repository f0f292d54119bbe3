"""Which request headers are a proxy's, Sans-I/O: the names a proxy, CDN or authenticating proxy sets and
upstreams believe, found by the parts of names platforms use, so no client can pass one off as its own."""

from __future__ import annotations

import re

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
    # the verified token's claims a gateway passes on (Google ESP and API Gateway's X-Endpoint-API-Userinfo,
    # X-Apigateway-Api-Userinfo, kong-oidc's X-Userinfo and X-ID-Token, Envoy's X-JWT-Payload, X-JWT-Claim-*);
    # not X-Access-Token, a credential clients send for their upstream to check (X-Userinfo and
    # X-ID-Token: _VOUCHED_SEGMENTS)
    "jwt-payload", "jwt-claim",
)  # fmt: skip
_VOUCHED_PREFIXES = (
    "remote-", "x-remote-extra-", "x-amzn-oidc-", "x-ms-token-", "x-goog-iap-", "cf-access-", "x-pomerium-",
    "x-vouch-", "x-authentik-", "tailscale-", "x-endpoint-api-",
    # Apache mod_auth_openidc's claims and tokens (OIDC_CLAIM_email, OIDC_access_token: a CGI, WSGI or
    # PHP upstream reads Oidc-Claim-Email as the same HTTP_OIDC_CLAIM_EMAIL)
    "oidc-",
    # what a CDN or platform in front says of the client or of itself: Cloudflare's CF-IPCountry and
    # CF-Visitor, CloudFront-Viewer-Country, X-Azure-FDID (which backends check to admit only their
    # Front Door's traffic), Vercel's, Fly's, Fastly's and Akamai's
    "cf-", "cloudfront-", "x-azure-", "x-vercel-", "fly-", "fastly-", "akamai-", "x-akamai-",
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
    # API Gateway's request context and its authorizer's claims, as serverless adapters pass them (AWS
    # Lambda Web Adapter, aws-serverless-express, serverless-http)
    "x-amzn-request-context", "x-apigateway-event", "x-apigateway-context",
)  # fmt: skip
_VOUCHED_SEGMENTS = ("webauth",)  # Grafana's X-WEBAUTH-USER (not X-WebAuthn-Challenge)
_VOUCHED_LAST_SEGMENTS = ("userinfo", "id-token")
"""The verified token's claims Google's ESP (X-Endpoint-API-Userinfo) and kong-oidc (X-Userinfo,
X-ID-Token) pass on, as the name's last segments: not a client's X-Paid-Token or X-Userinfo-Cache
(as parts anywhere, they dropped those)."""
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
_VOUCHED = _rule(_VOUCHED_PARTS, _VOUCHED_PREFIXES, _VOUCHED_NAMES, _VOUCHED_SEGMENTS, _VOUCHED_LAST_SEGMENTS).search
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
      ``Tailscale-*``, ``X-Endpoint-API-*``, ``Oidc-*``, a verified token's claims passed on (a
      last segment ``userinfo`` or ``id-token``, ``jwt-payload``, ``jwt-claim``, API Gateway's request
      context as serverless adapters pass it), what a CDN or platform says (``CF-*``,
      ``CloudFront-*``, ``X-Azure-*``, ``X-Vercel-*``, ``Fly-*``, ``Fastly-*``, ``Akamai-*``), and the
      names Kong (``X-Consumer-ID``, ``X-Credential-Identifier``, ``X-Anonymous-Consumer``...),
      Kubernetes' proxy (``X-Remote-Group``...) and Keycloak Gatekeeper
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


__all__ = ["PROXY_SET", "is_proxy_header", "is_vouched_header"]
