"""An upstream's refusal as the gateway relays it: never stored by a cache, never a page of the origin.

A refusal is one handshake's answer, relayed on the gateway's origin, which every API and the management
console share. Its caching headers passed as the upstream wrote them: a refusal with ``Cache-Control:
public, max-age=31536000`` (or ``Surrogate-Control``, ``CDN-Cache-Control``, ``Expires``) told a cache in
front of the gateway, whose key is the URL and not the ``Upgrade`` header, to keep it and serve it to a
browser that navigates to that URL: a ``text/html`` body of the upstream's choosing, as a page of the
gateway's origin. Now its caching headers are dropped for ``Cache-Control: no-store``, and it carries
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``, so that a browser that
renders it anyway renders it in an origin of its own, with no script and none of the origin's cookies
or storage (policies combine: the upstream's own CSP still applies).
"""

from __future__ import annotations

from .._types import Headers

CACHING = frozenset(
    {
        "cache-control", "expires", "pragma", "surrogate-control", "cdn-cache-control", "age", "etag",
        "last-modified", "x-content-type-options",
    }
)  # fmt: skip
"""The upstream's headers a relayed refusal goes without (replaced by the gateway's own)."""
_CACHING_SUFFIX = "-cdn-cache-control"  # a CDN's own (Cloudflare-CDN-Cache-Control)

REFUSAL_HEADERS: Headers = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox"),
]
"""What every relayed refusal carries."""


def relayed_refusal_headers(headers: Headers) -> Headers:
    """``headers`` (an upstream's refusal's, ASGI) as the client gets them: without :data:`CACHING`, with
    :data:`REFUSAL_HEADERS`."""
    kept = [
        (name, value)
        for name, value in headers
        if (lowered := name.decode("latin-1").lower()) not in CACHING and not lowered.endswith(_CACHING_SUFFIX)
    ]
    return kept + REFUSAL_HEADERS


__all__ = ["CACHING", "REFUSAL_HEADERS", "relayed_refusal_headers"]
