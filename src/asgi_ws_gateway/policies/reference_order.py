"""Limits and ``choose`` conditions that read ``{jwt.*}`` before any policy can have set claims (or
``{subscription.*}`` on an API in no product): the value is missing for every client. And limits
keyed by ``{subscription.*}`` that a handshake without a subscription key runs (an open product's):
it is missing for every such client.

An API's handshake runs the global policies, then its products', then its own. A limit keyed by
``{jwt.sub}`` among the global or product policies, with ``validate-jwt`` among the API's, runs
before any token is read: the reference renders empty for every client, so every client counts on
one counter. Three handshakes without a token (each then refused 401) used up a product's
``rate-limit-by-key: {key: "{jwt.sub}", limit: 3}`` for every user. A ``choose`` branch on
``{ref: jwt.plan, equals: free}`` there never holds: every client took ``otherwise``, with its
limits or its backend, whatever its plan.

A message policy's shared key (``rate-limit-messages``' ``key``) is read once the handshake is
over: it is refused when no policy of the API's handshake can set claims (or the API is in no
product, for ``{subscription.*}``), since every connection would then share one budget.

An API in a product with ``subscription_required: false`` admits clients without a key, and
without a subscription: the global policies, the API's own and the open product's run for them
(a subscribing product's policies run only for its subscribers). A limit there keyed by
``{subscription.id}`` counted every keyless client on one counter: one client holding the 2
connections of ``limit-concurrency: {max: 2}`` refused every other with 429. (A ``choose``
condition on ``{subscription.*}`` there tells the two kinds of clients apart, and is accepted.)

Such a configuration is refused, by the policy's field path and the API's name. Claims may be set
once any ``validate-jwt``, or any policy that is not built in (a function, a plugin's type: it may
set ``context.claims``), came before, even inside a ``choose`` branch. A template reference with a
default (``{jwt.sub|anonymous}``) says that the missing value is expected, and is not refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from ..handshake.pipeline import Policy
from ..templates import Reference, Template
from .admissions import Admission
from .auth import ValidateJwt
from .base import Loc, loc_text
from .control import Choose
from .limits import LimitConcurrency, QuotaByKey, RateLimitByKey
from .message_rates import RateLimitMessages

_LIMITS = (RateLimitByKey, QuotaByKey, LimitConcurrency, RateLimitMessages)
_BUILT_IN = "asgi_ws_gateway.policies."


def unset_references(
    api: str,
    order: Iterable[Policy],
    locations: Mapping[int, Loc],
    *,
    has_subscription: bool,
    open_products: Collection[int] = (),
    messages: Iterable[object] = (),
) -> list[str]:
    """Problems for the policies in ``order`` (one run of an API's, as they run) that read ``{jwt.*}``
    before claims can exist, or ``{subscription.*}`` when the API has no subscription
    (``has_subscription``: it is in a product) or, for a limit, when a handshake may run it without one
    (``open_products``: the indexes in ``products`` of the API's products with
    ``subscription_required: false``); then for its ``messages`` policies, which run once the whole
    handshake has. An API in products runs differently for each kind of client: see
    :func:`unset_references_by_admission`."""
    problems: dict[Loc, str] = {}
    opened = frozenset(open_products)

    def keyless(loc: Loc) -> bool:
        # A product's policies that require a subscription run for its subscribers only.
        return bool(opened) and not (loc[0] == "products" and loc[1] not in opened)

    walk = _Walk("", f" (API '{api}')", locations, has_subscription, keyless, problems)
    claims_maybe = _scan(list(order), walk, claims_maybe=False)
    for policy in messages:
        walk.check(policy, claims_maybe)
    return [f"{loc_text(loc)}: {problem}" for loc, problem in problems.items()]


def unset_references_by_admission(
    api: str,
    ways: Sequence[tuple[Admission, Iterable[object]]],
    locations: Mapping[int, Loc],
) -> list[str]:
    """As :func:`unset_references`, for each way a client is admitted (each :class:`Admission` with the
    message policies its connections run): a policy that reads ``{jwt.*}`` is refused when, for some
    client that runs it, no policy that can set claims ran before. Over every product's policies at
    once, one product's ``validate-jwt`` passed the API's ``{jwt.sub}`` limit for another product's
    subscribers, for whom it is empty: one counter for all of them."""
    problems: dict[Loc, str] = {}  # a policy is reported once, for the first way (and API) it fails
    for way, messages in ways:
        who = f" for {way.describe()}" if len(ways) > 1 else ""
        keyless = _always(way.keyless_with_products)
        walk = _Walk(who, f" (API '{api}')", locations, bool(way.products), keyless, problems)
        claims_maybe = _scan(list(way.policies), walk, claims_maybe=False)
        for policy in messages:
            walk.check(policy, claims_maybe)
    return [f"{loc_text(loc)}: {problem}" for loc, problem in problems.items()]


def _always(keyless: bool) -> Callable[[Loc], bool]:
    """Whether a policy runs for clients without a subscription, the same for every policy of one admission."""
    return lambda loc: keyless


class _Walk:
    def __init__(
        self,
        who: str,
        api: str,
        locations: Mapping[int, Loc],
        has_subscription: bool,
        keyless: Callable[[Loc], bool],
        problems: dict[Loc, str],
    ):
        self.who = who  # " for clients with a subscription key of product 'free'" when clients differ; or ""
        self.api = api  # " (API 'chat')"
        self.locations = locations
        self.has_subscription = has_subscription
        self.keyless = keyless
        self.problems = problems

    def check(self, policy: object, claims_maybe: bool) -> None:
        loc = self.locations.get(id(policy))
        if loc is None:
            return
        keyless = self.keyless(loc)
        for field, refs in _reads(policy):
            for ref in refs:
                problem = self._problem(ref, claims_maybe, limit=isinstance(policy, _LIMITS), keyless=keyless)
                if problem is not None:
                    self.problems.setdefault((*loc, *field), f"{problem}{self.api}")
                    return

    def _problem(self, ref: Reference, claims_maybe: bool, *, limit: bool, keyless: bool) -> str | None:
        if ref.namespace == "jwt" and not claims_maybe:
            effect = ("every client would count on one counter, and a client without a token could use up "
                      "everyone's limit") if limit else "it is missing for every client"  # fmt: skip
            return (f"reads {{{ref}}}, which no policy has set yet when it runs{self.who} (global policies run "
                    f"first, then the product's, then the API's): {effect}. Put it after validate-jwt, or write "
                    f"{{{ref}|default}} in a template if the missing value is meant")  # fmt: skip
        if ref.namespace == "subscription" and not self.has_subscription:
            effect = "every client would count on one counter" if limit else "it is missing for every client"
            return f"reads {{{ref}}}, but the API is in no product, so no handshake has a subscription: {effect}"
        if ref.namespace == "subscription" and keyless and limit:
            return (f"reads {{{ref}}}, but the API is in a product with subscription_required: false, whose "
                    "clients without a subscription key have no subscription: they would all count on one "
                    "counter, and one of them could use up the limit of all. Key it by a value each client "
                    f"has ({{client.network}}, {{jwt.sub}} after validate-jwt), or write {{{ref}|default}} "
                    "in a template if one counter for them is meant")  # fmt: skip
        return None


def _scan(policies: Sequence[Policy], walk: _Walk, *, claims_maybe: bool) -> bool:
    """Walk ``policies`` in order; whether claims may be set after them."""
    for policy in policies:
        walk.check(policy, claims_maybe)
        if isinstance(policy, Choose):
            after = claims_maybe
            for _, branch in policy.branches:
                after |= _scan(branch, walk, claims_maybe=claims_maybe)
            after |= _scan(policy.otherwise, walk, claims_maybe=claims_maybe)
            claims_maybe = after
        elif isinstance(policy, ValidateJwt) or not _built_in(policy):
            claims_maybe = True
    return claims_maybe


def _reads(policy: object) -> list[tuple[tuple[str | int, ...], list[Reference]]]:
    """``(field, references)`` whose missing value changes what a built-in policy enforces: a limit's
    key (one counter for all), a ``choose`` condition (the branch taken). A rewrite that writes an
    empty value is the upstream's to notice, and is not refused."""
    if isinstance(policy, _LIMITS):
        return [(("key",), _bare(policy.key))] if policy.key is not None else []
    if isinstance(policy, Choose):
        return [(("when", i, "if"), [condition.ref for condition in conditions])
                for i, (conditions, _) in enumerate(policy.branches)]  # fmt: skip
    return []


def _bare(template: Template) -> list[Reference]:
    return template.references_without_default


def _built_in(policy: Any) -> bool:
    return type(policy).__module__.startswith(_BUILT_IN)


__all__ = ["unset_references", "unset_references_by_admission"]
