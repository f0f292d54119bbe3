"""The ways a client is admitted to an API, each with the handshake policies it runs: what start-up checks reason over.

An API's handshake runs the global policies, then those of the products the client is admitted
under, then the API's own (handshake/pipeline.py). The subscription key picks the products
(policies/products.py): a key admits its one product, and only that product's policies run; a
handshake without a key, on an API in an open product (``subscription_required: false``), runs
every open product's. An API in no product runs the global policies and its own for everyone.

A check that reasoned over every product's policies at once took one product's ``check-origin`` as
running for all: the cookie-token warning was silenced while the other product's subscribers were
never checked (a page on a sibling site, with the attacker's own key of that product, got a 101 and
the victim's cookie). Likewise one product's ``validate-jwt`` counted as setting the claims that the
API's limits read for another product's subscribers, whose ``{jwt.sub}`` is then empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..handshake.pipeline import Policy


@dataclass(frozen=True)
class Admission:
    """One way a client gets to an API, and the handshake policies it then runs, in order.

    ``products``: the products whose policies run (none: the API is in no product); ``keyed``: the
    client presented a subscription key (of ``products[0]``, then the only one).
    """

    products: tuple[str, ...]
    keyed: bool
    policies: tuple[Policy, ...]

    @property
    def keyless_with_products(self) -> bool:
        """A client without a subscription key, admitted by the API's open products: it has no subscription."""
        return bool(self.products) and not self.keyed

    def describe(self) -> str:
        """Who is admitted so, for a warning: ``clients with a subscription key of product 'partners'``."""
        names = ", ".join(f"'{name}'" for name in self.products)
        if not self.products:
            return "every client"
        if self.keyed:
            return f"clients with a subscription key of product {names}"
        return f"clients without a subscription key (open product{'s' if len(self.products) > 1 else ''} {names})"


def admissions(
    global_policies: Sequence[Policy],
    product_policies: Mapping[str, Sequence[Policy]],
    open_products: Sequence[str],
    api_policies: Sequence[Policy],
) -> list[Admission]:
    """Every way a client is admitted to an API: by a key of each of its products (``product_policies``,
    the API's products and their policies, in the configuration's order), and without a key when it is
    in ``open_products``; or, in no product, the one way."""
    if not product_policies:
        return [Admission((), False, (*global_policies, *api_policies))]
    found = [
        Admission((name,), True, (*global_policies, *policies, *api_policies))
        for name, policies in product_policies.items()
    ]
    if open_products:
        opened = (policy for name in open_products for policy in product_policies.get(name, ()))
        found.append(Admission(tuple(open_products), False, (*global_policies, *opened, *api_policies)))
    return found


__all__ = ["Admission", "admissions"]
