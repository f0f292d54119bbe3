"""Building the configured policies: one pipeline per API from its scopes (global, products, its own)
and opt-outs; loading a configuration whole. Each list of entries is built by
:class:`~.build_entries.PolicyBuilder`.

:func:`load_policies` validates a configuration whole (its data through :mod:`asgi_ws_gateway.config`,
its policies here) and returns the policies built while checking them, for the middleware to serve
with: a configuration's policies are built once (twice only when it names functions to import,
which are imported after everything else validated).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from .._types import Scope
from ..config.gateway import GatewayConfig
from ..config.parsing import parse_config
from ..forwarded import Networks
from ..handshake.context import HandshakeContext
from ..handshake.pipeline import HandshakePipeline
from ..handshake.request_view import RequestView
from ..messages.pipeline import MessagePolicySet
from ..state.base import Store
from ..state.memory import MemoryState
from ..state.redis import RedisState
from . import (  # noqa: F401 - registers types
    auth,
    control,
    credentials,
    limits,
    message_checks,
    message_rates,
    network,
    transform,
)
from .admissions import admissions
from .api_warnings import cookie_token_warning, plain_backend_warning
from .build_entries import REUSABLE, PolicyBuilder
from .build_messages import MessagePolicies
from .header_underscores import underscore_warning
from .products import SubscriptionGate, check_products
from .reference_order import unset_references_by_admission


def make_store(config: GatewayConfig) -> Store:
    """The store the configuration asks for (Redis clients connect lazily, on first use)."""
    store = config.store
    if store.type == "redis":
        assert store.url is not None
        return RedisState(store.url, prefix=store.prefix, timeout=store.timeout, max_connections=store.max_connections)
    return MemoryState(prefix=store.prefix, max_keys=store.max_keys)


class GatewayPolicies:
    """Every API's handshake pipeline, built once from the configuration.

    Args:
        config: a validated configuration.
        store: the store to count in (default: what ``config.store`` says).
        clock: seconds since the epoch (tests pass a fake one).
        previous: the policies this configuration replaces: a list of entries it has unchanged (equal
            data) is taken over from them instead of built again, when they count in the same ``store``
            with the same ``clock`` and its policies are of the kinds that may be (``build_entries.REUSABLE``:
            no token cache, JWKS, file or function); the rest is built. A change to one API of 1,000
            built all 4,000 policies again, on every worker.

    Problems are collected in ``problems`` (by field path), not raised: :func:`load_policies` raises
    them as a ``ConfigError`` with the configuration's other problems.
    """

    _builder: PolicyBuilder
    pipelines: dict[str, HandshakePipeline]
    messages: MessagePolicies
    _trusted: Networks
    _forwarded_header: Literal["x-forwarded-for", "forwarded"]
    problems: list[str]
    warnings: list[str]
    _pure: bool

    def __init__(
        self,
        config: GatewayConfig,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        *,
        previous: GatewayPolicies | None = None,
    ):
        self.config = config
        self.store = store if store is not None else make_store(config)
        checking = _checking.get()
        done = checking.of(config) if checking is not None else None
        if done is not None:  # this very configuration, checked a moment ago: its outcome, not a rebuild
            self._builder, self.pipelines, self.messages = done._builder, done.pipelines, done.messages
            self._trusted, self._forwarded_header = done._trusted, done._forwarded_header
            self.problems, self.warnings, self._pure = list(done.problems), list(done.warnings), done._pure
            return
        if previous is None and checking is not None:
            previous = checking.last  # built only for problems and warnings: any store will do
        elif previous is not None and (previous.store is not self.store or previous._builder.clock is not clock):
            previous = None
        reuse = previous._builder.lists if previous is not None else None
        self._builder = PolicyBuilder(self.store, clock, reuse=reuse)
        builder = self._builder
        builder.underscores_dropped = config.handshake_limits.headers_with_underscores == "drop"
        if builder.underscores_dropped:
            for j, header in enumerate(config.subscription_key.headers):
                if "_" in header:
                    builder.warnings.append(f"subscription_key.headers[{j}]: {underscore_warning(header)}")
        self._trusted = Networks(config.trusted_proxies)
        self._forwarded_header = config.forwarded_header
        self.pipelines = {}
        global_policies = builder.build(config.policies, ("policies",), "global")
        products = {
            p.name: builder.build(p.policies, ("products", i, "policies"), f"product:{p.name}")
            for i, p in enumerate(config.products)
        }
        self.messages = MessagePolicies(config, builder)
        key_in_cookie = "cookie" in (header.strip().lower() for header in config.subscription_key.headers)
        for i, api in enumerate(config.apis):
            api_policies = builder.build(api.policies, ("apis", i, "policies"), f"api:{api.name}")
            mine = [p for p in config.products if api.name in p.apis]
            inherited = [*global_policies, *(policy for p in mine for policy in products[p.name])]
            names = {p.name for p in inherited} | self.messages.inherited_names(api.name)
            for j, skipped in enumerate(api.skip_policies):
                if skipped not in names:
                    builder.problems.append(
                        f"apis[{i}].skip_policies[{j}]: no inherited policy is named '{skipped}' "
                        f"(inherited: {', '.join(sorted(names)) or 'none'})"
                    )
            skip = set(api.skip_policies)
            inherited_global = [p for p in global_policies if p.name not in skip]
            inherited_products = {p.name: [x for x in products[p.name] if x.name not in skip] for p in mine}
            from_products = [policy for policies in inherited_products.values() for policy in policies]
            order = [*inherited_global, *from_products, *api_policies]
            # What each client runs: its key's product only, or without a key every open product's.
            ways = admissions(inherited_global, inherited_products,
                              [p.name for p in mine if not p.subscription_required], api_policies)  # fmt: skip
            for warning in (
                cookie_token_warning(ways, key_in_cookie=key_in_cookie),
                plain_backend_warning(order, [u.url for u in api.upstreams]),  # any client's: the union
            ):
                if warning is not None:
                    builder.warnings.append(f"apis[{i}]: {warning}")
            messages = [(way, self.messages.of_connection_to(api.name, way.products[0] if way.keyed else None))
                        for way in ways]  # fmt: skip
            builder.problems += unset_references_by_admission(api.name, messages, builder.locations)
            self.pipelines[api.name] = HandshakePipeline(
                inherited_global,
                inherited_products,
                api_policies,
                SubscriptionGate(config, api.name, clock) if mine else None,
                config.handshake_limits.policy_timeout,
            )
        self.problems = check_products(config) + builder.problems
        self.warnings = builder.warnings
        """What is valid but probably not meant, by field path (the middleware logs them, ``check`` prints them)."""
        self._pure = all(f"{type(p).__module__}.{type(p).__qualname__}" in REUSABLE for p in builder.built)
        """Only policies that load nothing (no function, no file): what a check found holds under any gate,
        with imports deferred or not."""
        if checking is not None:
            checking.add(self)

    def context(self, api: str, scope: Scope, params: Mapping[str, str]) -> HandshakeContext:
        """A fresh context for one handshake (cheap: the request is parsed as policies read it)."""
        return HandshakeContext(api, RequestView(scope, params, self._trusted, self._forwarded_header))

    def message_policies(self, context: HandshakeContext) -> MessagePolicySet | None:
        """The message policies of an admitted connection (None: relay its messages untouched)."""
        return self.messages.for_connection(context)

    async def run(self, context: HandshakeContext) -> None:
        """Run the API's pipeline; raises ``HandshakeDenied``. Resources taken are released on denial."""
        pipeline = self.pipelines.get(context.api)
        if not pipeline:
            return
        try:
            await pipeline.run(context)
        except BaseException:
            await context.release()
            raise

    async def aclose(
        self, *, close_store: bool = True, keep_leases: bool = False, successor: GatewayPolicies | None = None
    ) -> None:
        """Stop background work and (unless told not to: a new configuration reuses it) close the store.

        ``keep_leases``: a reload replaced these policies, and the connections admitted under them
        stay open: their ``limit-concurrency`` leases go on being renewed until each ends.
        ``successor``: the policies that replaced these; those it took over serve on, untouched.
        """
        kept = successor._builder.reused if successor is not None else set()
        for policy in self._builder.built:
            if id(policy) in kept:
                continue
            if isinstance(policy, limits.LimitConcurrency):
                await policy.aclose(keep_held=keep_leases)
                continue
            close = getattr(policy, "aclose", None)
            if close is not None:
                await close()
        if close_store:
            await self.store.aclose()


class _Checks:
    """The last policies built only for their problems and warnings: the next such build takes its unchanged
    lists from the newest, and a build for one of their very configurations (the same object: a change's
    warnings about the configuration it just checked, and about the one running) takes its outcome whole.
    None of them ever serves: sharing them is harmless. Replaced whole, never changed: threads read it."""

    KEPT = 4

    def __init__(self) -> None:
        self.recent: tuple[GatewayPolicies, ...] = ()

    @property
    def last(self) -> GatewayPolicies | None:
        return self.recent[0] if self.recent else None

    def of(self, config: GatewayConfig) -> GatewayPolicies | None:
        return next((p for p in self.recent if p.config is config and p._pure), None)

    def add(self, built: GatewayPolicies) -> None:
        self.recent = (built, *(p for p in self.recent if p.config is not built.config))[: self.KEPT]


_checks = _Checks()
_checking: ContextVar[_Checks | None] = ContextVar("asgi_ws_gateway_policy_checks", default=None)


@contextlib.contextmanager
def checks_only() -> Iterator[None]:
    """Within this block, :class:`GatewayPolicies` are built for their problems and warnings only (nothing
    serves with them), and take what they can from the previous such build (:func:`check_policies`'s too):
    a management change checks and warns about a configuration of 1,000 APIs in what its changed
    lists cost. Safe in threads: the previous build is only read."""
    token = _checking.set(_checks)
    try:
        yield
    finally:
        _checking.reset(token)


def check_policies(config: GatewayConfig) -> list[str]:
    """Every problem of the policy, product and subscription settings, by field path (nothing kept)."""
    previous = _checks.last
    store = previous.store if previous is not None else MemoryState()
    with checks_only():
        return GatewayPolicies(config, store=store, previous=previous).problems


StoreFor = Callable[[GatewayConfig], Store | None]
"""The store to build a configuration's policies with (None: the one ``config.store`` describes)."""


def load_policies(
    source: GatewayConfig | Mapping[str, Any] | str | Path,
    *,
    store: StoreFor = lambda config: None,
    import_plugins: bool = True,
    clock: Callable[[], float] = time.time,
    previous: GatewayPolicies | None = None,
) -> GatewayPolicies:
    """Validate a configuration whole and return its policies, built while they were checked.

    Args:
        source: as for :func:`asgi_ws_gateway.config.parsing.parse_config`.
        store: picks the store for the configuration once it is known (the middleware keeps its
            store, and the leases open connections hold in it, when the store settings are the same).
        import_plugins: as for :func:`asgi_ws_gateway.config.parsing.parse_config`.
        clock: seconds since the epoch (tests pass a fake one).
        previous: the policies the result will replace: what it has unchanged is taken over
            (see :class:`GatewayPolicies`).

    Raises:
        ConfigError: every problem found, data and policies together, by field path.
    """
    built: list[GatewayPolicies] = []

    def build(config: GatewayConfig) -> list[str]:
        policies = GatewayPolicies(config, store(config), clock, previous=previous)
        built.append(policies)
        return policies.problems

    token = _checking.set(None)  # these serve: never with what a check built
    try:
        config = parse_config(source, import_plugins=import_plugins, check_policies=build)
    finally:
        _checking.reset(token)
    policies = built[-1]
    assert policies.config is config
    return policies


def load_config(
    source: GatewayConfig | Mapping[str, Any] | str | Path, *, import_plugins: bool = True
) -> GatewayConfig:
    """Load and validate a configuration, its policies' settings included (nothing is kept).

    ``source`` and ``import_plugins`` as for :func:`asgi_ws_gateway.config.parsing.parse_config`. Raises
    ``ConfigError`` with every problem found, each as ``field.path: message``; a plugin that cannot
    be imported stops validation there (its policy types would all be unknown).
    """
    return parse_config(source, import_plugins=import_plugins, check_policies=check_policies)


__all__ = [
    "GatewayPolicies",
    "check_policies",
    "checks_only",
    "load_config",
    "load_policies",
    "make_store",
]
