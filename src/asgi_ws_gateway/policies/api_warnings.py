"""What the policies an API runs make of it that is valid but probably not meant: start-up warnings.

A token read from a cookie needs an Origin check. A browser sends a site's cookies with a WebSocket
handshake whatever page opens it, and WebSockets are not held to the same-origin policy: a page on any
site can open a connection as the signed-in user (cross-site WebSocket hijacking). docs/policies.md
says a cookie token must be combined with ``check-origin``; an API that did not was valid and silent
(an attack pass: 101 for ``Origin: https://evil.example`` and for ``Origin: null``, with the victim's
cookie).

A ``set-backend-service`` to ``ws://`` on an API whose upstreams are ``wss://`` sends the handshake, and
whatever the policies put in it (a credential header), in clear text: the URL decides (upstream/tls.py),
so it is what the file says, but rarely what was meant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..handshake.pipeline import Policy
from .auth import ValidateJwt
from .control import Choose
from .network import CheckOrigin
from .transform import SetBackendService


def cookie_token_warning(order: Sequence[Policy]) -> str | None:
    """Why the policies an API runs (``order``) admit cross-site connections, if they do: a
    ``validate-jwt`` that may read a cookie, and no ``check-origin`` that always runs."""
    if any(isinstance(policy, CheckOrigin) for policy in order):
        return None
    for policy in _every(order):
        if isinstance(policy, ValidateJwt):
            places = [
                source.cookie or "Cookie" for source, header, _ in policy.sources if source.cookie or header == "cookie"
            ]
            if places:
                return (
                    f"validate-jwt '{policy.name}' reads its token from a cookie ({', '.join(places)}) and no "
                    "check-origin always runs for this API: a page on any site can open a connection with the "
                    "user's cookie (cross-site WebSocket hijacking); add check-origin"
                )
    return None


def plain_backend_warning(order: Sequence[Policy], upstream_urls: Sequence[str]) -> str | None:
    """Why an API whose upstreams are all ``wss://`` may send its handshakes in clear text, if it may."""
    if not upstream_urls or not all(url.startswith("wss://") for url in upstream_urls):
        return None
    for policy in _every(order):
        if isinstance(policy, SetBackendService) and policy.base_url.source.lower().startswith("ws://"):
            return (
                f"set-backend-service sends this API's handshakes to {policy.base_url.source.split('/')[2]!r} over "
                "ws://, in clear text (with every header the policies set), where its upstreams use wss://"
            )
    return None


def _every(policies: Sequence[Policy]) -> Iterator[Policy]:
    """``policies`` and those inside their ``choose`` branches (which may run)."""
    for policy in policies:
        yield policy
        if isinstance(policy, Choose):
            for _, branch in policy.branches:
                yield from _every(branch)
            yield from _every(policy.otherwise)


__all__ = ["cookie_token_warning", "plain_backend_warning"]
