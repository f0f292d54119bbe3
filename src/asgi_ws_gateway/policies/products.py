"""Products and subscriptions: which subscription key admits a handshake, and which product's policies run.

Keys are stored as SHA-256 digests only. A presented key is hashed and looked up by its digest
(a lookup the client cannot steer: it does not control the digest), then the stored digest is
compared with ``hmac.compare_digest``. Subscription keys are random secrets, not passwords, so an
unsalted fast hash is the right tool: it only has to make the stored form useless to a reader.

| situation | status |
|---|---|
| two different keys (two headers, a header and the query, two spellings of the parameter) | 400 |
| no key where one is required, unknown key, key of a product without this API | 401 |
| subscription suspended or expired | 403 |
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from datetime import UTC

from ..config.gateway import GatewayConfig
from ..config.products import SubscriptionConfig
from ..errors import HandshakeDenied
from ..handshake.context import HandshakeContext, Subscription
from ..handshake.pipeline import SUBSCRIPTION
from ..upstream.headers import HOP_BY_HOP, replaced_forwarding_header

POLICY_NAME = SUBSCRIPTION


def hash_key(key: str) -> str:
    """The hex SHA-256 of a subscription key: what ``subscriptions[].key_sha256`` holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def expiry(subscription: SubscriptionConfig) -> float | None:
    """When ``subscription`` expires, in POSIX seconds (a time without a zone is UTC), or None."""
    expires = subscription.expires_at
    if expires is None:
        return None
    return (expires if expires.tzinfo is not None else expires.replace(tzinfo=UTC)).timestamp()


def key_header_problem(name: str) -> str | None:
    """Why the request header ``name`` cannot carry a subscription key (``subscription_key.headers``), or None.

    A key is a secret only the client sends, and its header is taken out of the upstream request. Refused:

    - a header of the connection or the WebSocket handshake (``Host``, ``Connection``, ``Upgrade``,
      ``Sec-WebSocket-Key``, ``Content-Length``, every name of ``upstream.headers.HOP_BY_HOP``):
      the protocol or the URL fixes its value, and never the upstream gets it; ``Host: gw.example``
      admitted every client of that host once some subscription's key was the host name;
    - ``Origin``: a browser sends it with every handshake, its value the page's site, the same for
      every visitor; and ``check-origin`` and the upstream's own origin check read it;
    - a header the gateway replaces or drops (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``, ...:
      ``replaced_forwarding_header``): the policies read the gateway's value (the client's address,
      the host) or nothing, never the client's.

    ``Cookie`` stays allowed (a browser's key in a cookie): the build warns that it admits
    cross-site connections without a ``check-origin`` (``api_warnings.cookie_token_warning``).
    ``Via`` is refused by the configuration itself (``config.products.SubscriptionKeyConfig``)."""
    folded = name.strip().lower()
    if folded in HOP_BY_HOP:
        return f"{name!r} belongs to the HTTP connection or the WebSocket handshake (the protocol sets its value; " \
               "it never reaches the upstream): it cannot carry a subscription key"  # fmt: skip
    if folded == "origin":
        return f"{name!r} is set by browsers to the page's site, the same for every visitor: it cannot carry a " \
               "subscription key"  # fmt: skip
    if replaced_forwarding_header(folded, trust_forwarded=False):
        return f"{name!r} is a proxy's header the gateway replaces or drops (policies never read the client's): " \
               "it cannot carry a subscription key"  # fmt: skip
    return None


def _denied(status: int, detail: str, reason: str) -> HandshakeDenied:
    return HandshakeDenied(status, detail, reason=reason, policy=POLICY_NAME)


class SubscriptionGate:
    """Checks the subscription key for one API and returns the products whose policies apply.

    Args:
        config: the gateway's configuration (products, subscriptions, where keys are read).
        api: the API's name; it belongs to at least one product.
        clock: seconds since the epoch (for ``expires_at``).
    """

    def __init__(self, config: GatewayConfig, api: str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        products = [p for p in config.products if api in p.apis]
        self.granting = {p.name for p in products}
        self.open_products = [p.name for p in products if not p.subscription_required]
        self.headers = [h.lower() for h in config.subscription_key.headers]
        self.query = config.subscription_key.query
        self._by_digest: dict[bytes, SubscriptionConfig] = {
            bytes.fromhex(s.key_sha256): s for s in config.subscriptions if s.product in self.granting
        }
        self._known_digests = {bytes.fromhex(s.key_sha256) for s in config.subscriptions}

    async def __call__(self, context: HandshakeContext) -> Sequence[str]:
        key = self._presented_key(context)
        if key is None:
            if self.open_products:
                return self.open_products
            raise _denied(401, "a subscription key is required", "subscription_key_missing")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        subscription = self._by_digest.get(digest)
        if subscription is None or not hmac.compare_digest(bytes.fromhex(subscription.key_sha256), digest):
            if digest in self._known_digests:
                raise _denied(401, "the subscription key does not grant this API", "subscription_wrong_product")
            raise _denied(401, "the subscription key is not valid", "subscription_key_invalid")
        state = subscription.state
        expires_at = expiry(subscription)
        if state == "active" and expires_at is not None and expires_at <= self.clock():
            state = "expired"
        if state != "active":
            raise _denied(403, f"the subscription is {state}", f"subscription_{state}")
        context.subscription = Subscription(
            id=subscription.id,
            product=subscription.product,
            name=subscription.name or subscription.id,
            key_sha256=subscription.key_sha256,
            expires_at=expires_at,
        )
        return [subscription.product]

    def _presented_key(self, context: HandshakeContext) -> str | None:
        """The key the request carries; every copy of it is taken out of the upstream request.

        Raises:
            HandshakeDenied: 400 when the request carries two different keys (two headers, a header
                and the query, two spellings of the query parameter): one would be checked, the other
                could reach whatever reads it.
        """
        request = context.request
        found: list[str] = []
        for header in self.headers:
            values = request.header_values(header)
            if values:
                context.upstream.remove_header(header)  # a key never travels upstream
                found += (value.strip() for value in values)
        if self.query is not None:
            values = request.query_copies(self.query)  # every spelling of the name (names.fold_name)
            if values:
                context.upstream.remove_query(self.query)
                found += values
        keys = list(dict.fromkeys(key for key in found if key))
        if len(keys) > 1:
            raise _denied(400, f"the request carries {len(keys)} different subscription keys: send one",
                          "subscription_key_ambiguous")  # fmt: skip
        return keys[0] if keys else None


def check_products(config: GatewayConfig) -> list[str]:
    """Unique names and ids, and references to APIs and products that exist."""
    problems: list[str] = []
    apis = {api.name for api in config.apis}
    products: dict[str, int] = {}
    for i, product in enumerate(config.products):
        if product.name in products:
            problems.append(f"products[{i}].name: duplicate product name '{product.name}'")
        products.setdefault(product.name, i)
        for j, api in enumerate(product.apis):
            if api not in apis:
                problems.append(f"products[{i}].apis[{j}]: unknown API '{api}'")
    ids: set[str] = set()
    digests: set[str] = set()
    for i, subscription in enumerate(config.subscriptions):
        if subscription.id in ids:
            problems.append(f"subscriptions[{i}].id: duplicate subscription id '{subscription.id}'")
        ids.add(subscription.id)
        if subscription.product not in products:
            problems.append(f"subscriptions[{i}].product: unknown product '{subscription.product}'")
        if subscription.key_sha256.lower() in digests:
            problems.append(f"subscriptions[{i}].key_sha256: the same key is used by another subscription")
        digests.add(subscription.key_sha256.lower())
    return problems


__all__ = ["SubscriptionGate", "check_products", "expiry", "hash_key", "key_header_problem"]
