"""Limits keyed by a value no policy before them can have set: one counter for every client.

An API's handshake runs the global policies, then its products', then its own. A limit keyed by
``{jwt.sub}`` among the global or product policies, with ``validate-jwt`` among the API's, runs
before any token is read: the reference renders empty for every client, so every client counts on
one counter. Three handshakes without a token (each then refused 401) used up a product's
``rate-limit-by-key: {key: "{jwt.sub}", limit: 3}`` for every user; a ``limit-concurrency`` keyed so
admitted one connection of all users together. So is ``{subscription.*}`` on an API in no product.

Such a configuration is refused, by the limit's field path and the API's name. A limit runs after
claims may be set when any ``validate-jwt``, or any policy that is not built in (a function, a
plugin's type: it may set ``context.claims``), comes before it, even inside a ``choose`` branch. A
reference with a default (``{jwt.sub|anonymous}``) says that one counter for clients without the
value is meant, and is not refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..handshake.pipeline import Policy
from ..templates import Template
from .auth import ValidateJwt
from .base import Loc, loc_text
from .control import Choose
from .limits import LimitConcurrency, QuotaByKey, RateLimitByKey

_LIMITS = (RateLimitByKey, QuotaByKey, LimitConcurrency)
_BUILT_IN = "asgi_ws_gateway.policies."


def unkeyed_limits(
    api: str, order: Iterable[Policy], locations: Mapping[int, Loc], *, has_subscription: bool
) -> list[str]:
    """Problems for the limits in ``order`` (an API's policies, as they run) keyed by ``{jwt.*}``
    before claims can exist, or by ``{subscription.*}`` when the API has no subscription."""
    problems: dict[Loc, str] = {}  # a global policy is reported once, for the first API it fails
    _scan(list(order), api, locations, has_subscription, problems, claims_maybe=False)
    return [f"{loc_text((*loc, 'key'))}: {problem}" for loc, problem in problems.items()]


def _scan(
    policies: Sequence[Policy],
    api: str,
    locations: Mapping[int, Loc],
    has_subscription: bool,
    problems: dict[Loc, str],
    *,
    claims_maybe: bool,
) -> bool:
    """Walk ``policies`` in order; whether claims may be set after them."""
    for policy in policies:
        if isinstance(policy, _LIMITS):
            problem = _problem(policy.key, claims_maybe, has_subscription)
            loc = locations.get(id(policy))
            if problem is not None and loc is not None:
                problems.setdefault(loc, f"{problem} (API '{api}')")
        elif isinstance(policy, Choose):
            after = claims_maybe
            for _, branch in policy.branches:
                after |= _scan(branch, api, locations, has_subscription, problems, claims_maybe=claims_maybe)
            after |= _scan(policy.otherwise, api, locations, has_subscription, problems, claims_maybe=claims_maybe)
            claims_maybe = after
        elif isinstance(policy, ValidateJwt) or not _built_in(policy):
            claims_maybe = True
    return claims_maybe


def _problem(key: Template, claims_maybe: bool, has_subscription: bool) -> str | None:
    for ref in key.references_without_default:
        if ref.namespace == "jwt" and not claims_maybe:
            return (f"keyed by {{{ref}}}, which no policy has set yet when it runs (global policies run first, "
                    f"then the product's, then the API's): every client would count on one counter, and a client "
                    f"without a token could use up everyone's limit. Put it after validate-jwt, or write "
                    f"{{{ref}|anonymous}} if one counter for all is meant")  # fmt: skip
        if ref.namespace == "subscription" and not has_subscription:
            return (f"keyed by {{{ref}}}, but the API is in no product, so no handshake has a subscription: "
                    f"every client would count on one counter")  # fmt: skip
    return None


def _built_in(policy: Any) -> bool:
    return type(policy).__module__.startswith(_BUILT_IN)


__all__ = ["unkeyed_limits"]
