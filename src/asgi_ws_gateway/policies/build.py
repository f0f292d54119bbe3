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
import itertools
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import state as stores  # stores.RedisState: redis-py, imported for a Redis store only
from .._types import Scope
from ..config.gateway import GatewayConfig
from ..config.parsing import parse_config
from ..config.products import ProductConfig
from ..errors import ConfigError
from ..forwarded import Networks
from ..handshake.context import HandshakeContext
from ..handshake.pipeline import HandshakePipeline
from ..handshake.request_view import RequestView
from ..messages.pipeline import MessagePolicySet
from ..state.base import Store
from ..state.leases import close_retired
from ..state.memory import MemoryState
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
from .api_warnings import chosen_key_warnings, cookie_token_warning, plain_backend_warning, raw_host_warnings
from .base import Loc
from .build_entries import REUSABLE, BuiltList, ListKey, PolicyBuilder
from .build_messages import MessagePolicies
from .header_underscores import underscore_warning
from .products import SubscriptionGate, check_products, key_header_problem
from .reference_order import unset_references_by_admission


def make_store(config: GatewayConfig) -> Store:
    """The store the configuration asks for (Redis clients connect lazily, on first use)."""
    store = config.store
    if store.type == "redis":
        assert store.url is not None
        return stores.RedisState(
            store.url, prefix=store.prefix, timeout=store.timeout, max_connections=store.max_connections
        )
    return MemoryState(prefix=store.prefix, max_keys=store.max_keys)


def _reusable(policies: Iterable[Any]) -> bool:
    """Whether every policy is of a kind ``REUSABLE`` names (each kind looked up once)."""
    return all(f"{kind.__module__}.{kind.__qualname__}" in REUSABLE for kind in set(map(type, policies)))


@dataclass(frozen=True)
class _Taken:
    """What building some of an API's lists added to a builder (policies with their places, default counters
    claimed, lists for a successor), as built at the API's place ``at``: a successor taking the API over adds
    it to its own builder, as building the same entries would (moved to the API's new place, if it moved)."""

    at: Loc
    policies: tuple[Any, ...]
    locations: dict[int, Loc]
    claims: tuple[tuple[str, Loc], ...]
    lists: tuple[tuple[ListKey, BuiltList], ...]

    def replay(self, builder: PolicyBuilder, at: Loc) -> None:
        if not self.policies and not self.claims:
            return
        locations, claims = self.locations, self.claims
        if at != self.at:
            cut = len(self.at)
            locations = {key: (*at, *loc[cut:]) for key, loc in locations.items()}
            claims = tuple((name, (*at, *loc[cut:])) for name, loc in claims)
        builder.built.extend(self.policies)
        builder.locations.update(locations)
        builder.reused.update(locations)  # their ids
        for name, loc in claims:
            builder.claim_counter(name, loc)  # a new API may clash with its default counters
        builder.lists.update(self.lists)


class _Window:
    """What a builder adds from now on: the policies, counters, lists, problems and warnings of one API's part."""

    def __init__(self, builder: PolicyBuilder) -> None:
        self._builder = builder
        self._start = (
            len(builder.built), len(builder.claims), len(builder.lists), len(builder.problems), len(builder.warnings)
        )  # fmt: skip

    def clean(self) -> bool:
        """No problem nor warning, and only policies that may be taken over (``REUSABLE``)."""
        b, (built, _, _, problems, warnings) = self._builder, self._start
        return len(b.problems) == problems and len(b.warnings) == warnings and _reusable(b.built[built:])

    def taken(self, at: Loc) -> _Taken:
        b, (built, claims, lists, _, _) = self._builder, self._start
        policies = tuple(b.built[built:])
        return _Taken(
            at,
            policies,
            {id(p): b.locations[id(p)] for p in policies},
            tuple(b.claims[claims:]),
            tuple(itertools.islice(b.lists.items(), lists, None)),
        )


@dataclass(frozen=True)
class _ApiSource:
    """What an API's pipeline and message sets are built from: ``settings`` compared as data (its own
    configuration, its products' names and whether they need a key, ...), ``inherited`` as the very
    objects (the global and product policies and message scopes), as a rebuild would find them."""

    settings: tuple[Any, ...]
    inherited: tuple[Any, ...]

    def same_as(self, other: _ApiSource) -> bool:
        return (
            len(self.inherited) == len(other.inherited)
            and all(map(operator.is_, self.inherited, other.inherited))
            and self.settings == other.settings
        )


@dataclass(frozen=True)
class _BuiltApi:
    """An API built without a problem or a warning, from ``source``: what a successor with the same source
    takes over instead of building it again."""

    source: _ApiSource
    pipeline: HandshakePipeline
    messages_part: _Taken
    handshake_part: _Taken
    message_sets: tuple[tuple[str, MessagePolicySet], ...]
    inherited_names: set[str]


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
            built all 4,000 policies again, on every worker. An API whose settings are unchanged and whose
            inherited policies and message scopes are the very objects it was built with (the global and
            product lists taken over, its subscriptions unchanged when it is in a product) is taken over
            whole: its pipeline and message sets, built without a problem or warning (:class:`_BuiltApi`).
            Ten changes at once each walked every API's message templates and pipeline again.

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
    _apis: dict[str, _BuiltApi]

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
            self._apis = done._apis
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
        builder.fetch_allow = tuple(config.jwks_networks.allow)
        builder.fetch_deny = (*config.upstream_networks.deny, *config.jwks_networks.deny)
        for j, header in enumerate(config.subscription_key.headers):
            if (problem := key_header_problem(header)) is not None:
                builder.problems.append(f"subscription_key.headers[{j}]: {problem}")
        if builder.underscores_dropped:
            for j, header in enumerate(config.subscription_key.headers):
                if "_" in header:
                    builder.warnings.append(f"subscription_key.headers[{j}]: {underscore_warning(header)}")
        self._trusted = Networks(config.trusted_proxies)
        self._forwarded_header = config.forwarded_header
        self.pipelines = {}
        self._apis: dict[str, _BuiltApi] = {}
        """Each API built without a problem or a warning, for a successor to take over whole."""
        global_policies = builder.build(config.policies, ("policies",), "global")
        products = {
            p.name: builder.build(p.policies, ("products", i, "policies"), f"product:{p.name}")
            for i, p in enumerate(config.products)
        }
        self.messages = MessagePolicies(config, builder, previous.messages if previous is not None else None)
        key_in_cookie = "cookie" in (header.strip().lower() for header in config.subscription_key.headers)
        # Each API's sets first, then each API's pipeline, in the order a build from nothing makes them
        # (problems and warnings, default counters claimed): an unchanged API's taken over in both.
        earlier = previous._apis if previous is not None else {}
        gates_same = previous is not None and (
            previous.config.subscriptions == config.subscriptions
            and previous.config.subscription_key == config.subscription_key
        )
        sources: list[tuple[list[ProductConfig], _ApiSource, _BuiltApi | None]] = []
        message_parts: list[_Taken | None] = []  # None: not taken over, or not to be
        for i, api in enumerate(config.apis):
            mine = [p for p in config.products if api.name in p.apis]
            source = _ApiSource(
                (api, tuple((p.name, p.subscription_required) for p in mine), key_in_cookie,
                 config.handshake_limits.policy_timeout, builder.underscores_dropped),
                (*global_policies, *(x for p in mine for x in products[p.name]),
                 self.messages.root, *(self.messages.products[p.name] for p in mine)),
            )  # fmt: skip
            kept = earlier.get(api.name)
            if kept is not None and not (kept.source.same_as(source) and (gates_same or not mine)):
                kept = None  # a product's gate reads every subscription
            sources.append((mine, source, kept))
            if kept is not None:
                kept.messages_part.replay(builder, ("apis", i))
                self.messages.take_over(api.name, kept.message_sets, kept.inherited_names)
                message_parts.append(None)
            else:
                window = _Window(builder)
                self.messages.add_api(i, api, mine)
                message_parts.append(window.taken(("apis", i)) if window.clean() else None)
        for i, api in enumerate(config.apis):
            mine, source, kept = sources[i]
            if kept is not None:
                kept.handshake_part.replay(builder, ("apis", i))
                self.pipelines[api.name] = kept.pipeline
                self._apis[api.name] = kept
                continue
            window = _Window(builder)
            api_policies = builder.build(api.policies, ("apis", i, "policies"), f"api:{api.name}")
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
            builder.warnings += chosen_key_warnings(messages, builder.locations)  # an inherited limit: once per API
            builder.warnings += raw_host_warnings(order, builder.locations)
            self.pipelines[api.name] = HandshakePipeline(
                inherited_global,
                inherited_products,
                api_policies,
                SubscriptionGate(config, api.name, clock) if mine else None,
                config.handshake_limits.policy_timeout,
            )
            messages_part = message_parts[i]
            if messages_part is not None and window.clean():
                self._apis[api.name] = _BuiltApi(
                    source, self.pipelines[api.name], messages_part, window.taken(("apis", i)),
                    self.messages.of_api_sets(api.name), self.messages.inherited_names(api.name),
                )  # fmt: skip
        self.problems = check_products(config) + builder.problems
        self.warnings = list(dict.fromkeys(builder.warnings))  # a global limit's, said by each API that runs it
        """What is valid but probably not meant, by field path (the middleware logs them, ``check`` prints them)."""
        self._pure = _reusable(builder.built)
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
        stay open: their ``limit-concurrency`` leases go on being renewed until each ends. Without it (a
        shutdown), the lease keepers of this store that earlier reloads replaced are closed too.
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
        if not keep_leases:  # and the concurrency policies of the store that earlier reloads replaced
            await close_retired(self.store)
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
        if _valid.holds(source):  # its data checked a moment ago (a management change): only its policies built
            assert isinstance(source, GatewayConfig)
            problems = build(source)
            if problems:
                raise ConfigError(problems)
            config = source
        else:
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


def load_config_to_install(source: Mapping[str, Any]) -> GatewayConfig:
    """:func:`load_config` of a configuration the gateway made itself (a management change's merge, no plugin
    imported), remembered as valid: :func:`load_policies` then builds its policies without checking its data
    again. Not for a configuration a caller holds: its lists could be changed after the check."""
    config = load_config(source, import_plugins=False)
    _valid.add(config)
    return config


class _Valid:
    """The last configurations :func:`load_config_to_install` found valid (these very objects: the gateway
    changes none once validated): :func:`load_policies` builds one's policies without checking its data again.
    A management change validates its merged configuration, then each worker installs it: the second
    check of names, paths and URLs (tens of milliseconds at 1,000 APIs) found what the first had found.
    Replaced whole, never changed: threads read it."""

    KEPT = 8

    def __init__(self) -> None:
        self.recent: tuple[GatewayConfig, ...] = ()

    def holds(self, source: object) -> bool:
        return any(config is source for config in self.recent)

    def add(self, config: GatewayConfig) -> None:
        self.recent = (config, *(c for c in self.recent if c is not config))[: self.KEPT]


_valid = _Valid()


__all__ = [
    "GatewayPolicies",
    "check_policies",
    "checks_only",
    "load_config",
    "load_config_to_install",
    "load_policies",
    "make_store",
]
