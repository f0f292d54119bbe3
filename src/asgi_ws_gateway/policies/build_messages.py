"""Building the configured message policies: scopes (global → product → API), opt-outs, error replies.

A connection's message policies are the global ones, then those of the product its subscription is
for (or, without a subscription, of the API's open products), then the API's, in each direction;
``skip_policies`` removes inherited ones by type or name, as for handshake policies. The sets are
built once per API and product when the configuration is applied; a connection only picks one. A new
configuration keeps the global and product scopes whose lists it took over whole, and takes over an
unchanged API's sets (:class:`~.build.GatewayPolicies` decides which).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config.apis import ApiConfig, ErrorReplyConfig, MessagePoliciesConfig
from ..config.gateway import GatewayConfig
from ..config.products import ProductConfig
from ..handshake.context import HandshakeContext
from ..messages.context import ErrorReply, MessagePolicy
from ..messages.pipeline import MessagePolicySet
from ..templates import TemplateError
from .base import Loc, loc_text
from .message_base import MESSAGE_REGISTRY

if TYPE_CHECKING:
    from .build_entries import PolicyBuilder

_Scope = tuple[list[MessagePolicy], list[MessagePolicy], ErrorReply | None]
_NO_PRODUCT = ""


class MessagePolicies:
    """Every API's message policy sets, keyed by the product a connection was admitted under."""

    def __init__(self, config: GatewayConfig, builder: PolicyBuilder, previous: MessagePolicies | None = None) -> None:
        self._builder = builder
        self._sets: dict[tuple[str, str], MessagePolicySet] = {}
        self._inherited: dict[str, set[str]] = {}
        self._by_api: dict[str, tuple[tuple[str, MessagePolicySet], ...]] = {}
        self._shared: dict[str, tuple[MessagePoliciesConfig, _Scope]] = {}
        """The global and product scopes by counter, with their settings: a successor keeps one whose lists it
        took over whole (the very objects), so that what the APIs built on it is theirs to take over too."""
        kept = previous._shared if previous is not None else {}
        self.root = self._shared_scope(config.message_policies, ("message_policies",), "msg:global", kept)
        self.products = {
            p.name: self._shared_scope(
                p.message_policies, ("products", i, "message_policies"), f"msg:product:{p.name}", kept
            )
            for i, p in enumerate(config.products)
        }

    def add_api(self, i: int, api: ApiConfig, mine: Sequence[ProductConfig]) -> None:
        """Build the sets of ``api`` (at ``apis[i]``), in the products ``mine``."""
        own = self._scope(api.message_policies, ("apis", i, "message_policies"), f"msg:api:{api.name}")
        inherited = {
            policy.name
            for scope in (self.root, *(self.products[p.name] for p in mine))
            for policy in (*scope[0], *scope[1])
        }
        skip = set(api.skip_policies)
        choices = {p.name: [self.products[p.name]] for p in mine}
        choices[_NO_PRODUCT] = [self.products[p.name] for p in mine if not p.subscription_required]
        sets = []
        for product, scopes in choices.items():
            chosen = _combine([self.root, *scopes, own], skip, api.max_message_size)
            if chosen:
                sets.append((product, chosen))
        self.take_over(api.name, sets, inherited)

    def of_api_sets(self, api: str) -> tuple[tuple[str, MessagePolicySet], ...]:
        """The sets of ``api`` by product (for a successor's :meth:`take_over`)."""
        return self._by_api.get(api, ())

    def take_over(self, api: str, sets: Sequence[tuple[str, MessagePolicySet]], inherited: set[str]) -> None:
        """Serve ``api`` with the sets a predecessor built from the same settings and scopes."""
        for product, chosen in sets:
            self._sets[(api, product)] = chosen
        self._by_api[api] = tuple(sets)
        self._inherited[api] = inherited

    def of_api(self, api: str) -> list[MessagePolicy]:
        """Every message policy a connection to ``api`` may run, whatever its product (each once)."""
        found = {id(p): p for (name, _), chosen in self._sets.items() if name == api
                 for p in (*chosen.inbound, *chosen.outbound)}  # fmt: skip
        return list(found.values())

    def of_connection_to(self, api: str, product: str | None) -> list[MessagePolicy]:
        """The message policies of a connection to ``api`` admitted by a key of ``product`` (None: without
        a key, by the open products, or to an API in no product), inbound then outbound."""
        chosen = self._sets.get((api, product if product is not None else _NO_PRODUCT))
        return [] if chosen is None else [*chosen.inbound, *chosen.outbound]

    def inherited_names(self, api: str) -> set[str]:
        """Names of the global and product message policies the API inherits (for ``skip_policies``)."""
        return self._inherited.get(api, set())

    def for_connection(self, context: HandshakeContext) -> MessagePolicySet | None:
        """The set for an admitted handshake: by its subscription's product, or the open products'."""
        product = context.subscription.product if context.subscription is not None else _NO_PRODUCT
        return self._sets.get((context.api, product))

    def _shared_scope(
        self, config: MessagePoliciesConfig, loc: Loc, counter: str, previous: Mapping[str, tuple[Any, _Scope]]
    ) -> _Scope:
        scope = self._scope(config, loc, counter)
        kept = previous.get(counter)
        if kept is not None and kept[0] == config and _same_lists(kept[1], scope):
            scope = kept[1]  # its lists are the very objects, its error reply made from the same template
        self._shared[counter] = (config, scope)
        return scope

    def _scope(self, config: MessagePoliciesConfig, loc: Loc, counter: str) -> _Scope:
        build = self._builder.build_message_policies
        inbound = build(config.inbound, (*loc, "inbound"), f"{counter}.in")
        outbound = build(config.outbound, (*loc, "outbound"), f"{counter}.out")
        for i, entry in enumerate(config.outbound):
            type_name = str(next(iter(entry), "")) if isinstance(entry, Mapping) else ""
            allowed = getattr(MESSAGE_REGISTRY.get(type_name), "directions", None)
            if allowed is not None and "outbound" not in allowed:
                self._problem((*loc, "outbound", i), f"{type_name} applies to inbound messages only")
        return inbound, outbound, self._reply(config.error_reply, (*loc, "error_reply", "template"))

    def _reply(self, config: ErrorReplyConfig | None, loc: Loc) -> ErrorReply | None:
        if config is None:
            return None
        try:
            return ErrorReply(config.template) if config.template is not None else ErrorReply()
        except TemplateError as exc:
            self._problem(loc, str(exc))
            return None

    def _problem(self, loc: Loc, message: str) -> None:
        self._builder.problems.append(f"{loc_text(loc)}: {message}")


def _same_lists(old: _Scope, new: _Scope) -> bool:
    return all(
        len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
        for a, b in ((old[0], new[0]), (old[1], new[1]))
    )


def _combine(scopes: Sequence[_Scope], skip: set[str], max_message_size: int) -> MessagePolicySet:
    *inherited, own = scopes
    inbound = [p for scope in inherited for p in scope[0] if p.name not in skip] + own[0]
    outbound = [p for scope in inherited for p in scope[1] if p.name not in skip] + own[1]
    reply = next((scope[2] for scope in reversed(scopes) if scope[2] is not None), None)
    return MessagePolicySet(inbound, outbound, reply, max_message_size=max_message_size)


__all__ = ["MessagePolicies"]
