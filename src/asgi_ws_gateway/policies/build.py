"""Building the configured policies: validation by field path, scopes, opt-outs, one pipeline per API.

:func:`load_policies` validates a configuration whole (its data through :mod:`asgi_ws_gateway.config`,
its policies here) and returns the policies built while checking them, for the middleware to serve
with: a configuration's policies are built once (twice only when it names functions to import,
which are imported after everything else validated).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .._types import Scope
from ..config.fields import mark_policies
from ..config.gateway import GatewayConfig
from ..config.parsing import parse_config
from ..config.problems import shape_selected, shorten, union_member
from ..forwarded import Networks
from ..handshake.context import HandshakeContext, RequestView
from ..handshake.pipeline import FunctionPolicy, HandshakePipeline, Policy
from ..messages.context import MessagePolicy
from ..messages.pipeline import MessagePolicySet
from ..redact import CREDENTIAL_VALUES, credential_setting, is_credential_name, redact_free_text, redact_values
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
from .base import REGISTRY, Loc, PolicyProblem, PolicyType, loc_text
from .build_messages import MessagePolicies
from .jwks import JwksCache, fetch_url
from .message_base import MESSAGE_REGISTRY, FunctionMessagePolicy
from .products import SubscriptionGate, check_products
from .reference_order import unset_references_by_admission

logger = logging.getLogger(__name__)


def _describe(loc: Loc, error: Any, settings: Mapping[str, Any]) -> str:
    # Drop the union-member tags pydantic puts in locations ("audience.list[str]" -> "audience").
    where = loc_text(loc + tuple(p for p in error["loc"] if not union_member(p)))
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    if _secret(error["loc"], settings):
        given = error.get("input")
        message = _unquoted(message, error["loc"], settings, () if isinstance(given, Mapping) else given)
    elif error["type"] not in {"missing", "extra_forbidden", "value_error"}:
        message = f"{message} (got {redact_free_text(shorten(error['input']))})"
    return f"{where}: {message.removeprefix('Value error, ')}"


def _problem(loc: Loc, field: Loc, message: str, settings: Mapping[str, Any]) -> str:
    """A policy's own problem with a setting (:class:`~.base.PolicyProblem`; ``field`` empty: the
    policy's), as ``where: message``; the message quotes no credential (RE2's quotes the pattern)."""
    if _secret(field, settings):
        message = _unquoted(message, field, settings)
    return f"{loc_text(loc + field)}: {message}"


def _secret(field: tuple[Any, ...], settings: Mapping[str, Any]) -> bool:
    """Whether a setting's value may be a credential, which an error must not quote (``check`` and
    start-up write errors to terminals and logs): a setting named as one (``secret``, ``api_key``), or
    any value of a policy or condition on its path whose header, query parameter, ``ref`` or ``claim``
    names one, which the management API shows as ``REDACTED`` (``set-header`` of ``Authorization`` or
    ``X-Api-Key``, ``check-header``'s ``pattern``, ``{ref: header.x-api-key, in: [...]}``)."""
    if any(is_credential_name(str(part)) for part in field):
        return True
    return any(
        isinstance(value, Mapping) and credential_setting(value) is not None for value in _along(field, settings)
    )


def _unquoted(message: str, field: tuple[Any, ...], settings: Mapping[str, Any], given: Any = ()) -> str:
    """``message`` without what it quotes of the credentials on ``field``'s path (a validator's, RE2's
    ``missing ): (abc``): what is wrong, not what was written.

    The credentials are those the management API shows as ``REDACTED``: every value a policy or
    condition on the path holds of what it names as one (not the name: ``Sec-WebSocket-Key`` is a
    header's), a ``secret``, and a ``transform-message`` field named as one; ``given`` is the value the
    error is about. Other settings named like credentials name where one is (``secret_env``,
    ``public_key_files``) or what counts (``key: "{jwt.sub}"``): their errors quote them."""
    on_path = _along(field, settings)
    name = next((part for part in reversed(field) if isinstance(part, str)), "")
    sets = field[:1] == ("set",) and is_credential_name(name)  # transform-message's set: {api_key: ...}
    secrets = [given, on_path[-1]] if name == "secret" or sets else []
    for value in on_path:
        if isinstance(value, Mapping) and credential_setting(value) is not None:
            secrets += [item for key, item in value.items() if key in CREDENTIAL_VALUES]
    return redact_values(message, secrets)


def _along(field: tuple[Any, ...], settings: Mapping[str, Any]) -> list[Any]:
    """The values on ``field``'s path through ``settings``, ``settings`` first (a part that leads
    nowhere, as a union member's tag, is passed over)."""
    found: list[Any] = [settings]
    for part in field:
        value = found[-1]
        if isinstance(value, list):
            leads = isinstance(part, int) and 0 <= part < len(value)
        else:
            leads = isinstance(value, Mapping) and part in value
        if leads:
            found.append(value[part])
    return found


def _failure(exc: Exception) -> str:
    """``Type: message`` of an exception from a plugin's code, cut and redacted (it may quote a setting)."""
    text = str(exc) if len(str(exc)) <= _SHOWN_FAILURE else str(exc)[:_SHOWN_FAILURE] + "..."
    return f"{type(exc).__name__}: {redact_free_text(text)}" if text else type(exc).__name__


_SHOWN_FAILURE = 200


def _is_async(function: Any) -> bool:
    """An ``async def``, also behind ``functools.wraps`` decorators or as an object's ``async __call__``."""
    if not callable(function):
        return False
    target = inspect.unwrap(function)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)


_Kind = tuple[Mapping[str, PolicyType], str, Callable[[Any], Any], str]
_HANDSHAKE: _Kind = (REGISTRY, "apply", FunctionPolicy, "policy")
_MESSAGES: _Kind = (MESSAGE_REGISTRY, "attach", FunctionMessagePolicy, "message policy")


_HEADER_REFERENCE = re.compile(r"\{\s*header\.([^}\s]*_[^}\s]*)\s*\}")
"""A template's ``{header.name}`` whose name has an underscore."""
_WRITES_HEADER = frozenset({"set-header", "remove-header"})
"""Policies whose ``header`` is one they write upstream, not one they read from the client."""


def _underscored_header_reads(settings: Any, field: tuple[str | int, ...] = ()) -> list[tuple[Loc, str]]:
    """Where policy ``settings`` read a request header whose name has an underscore (a ``header`` or
    ``headers`` setting, a ``{header.name}`` reference): dropped from requests by default."""
    found: list[tuple[Loc, str]] = []
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            if key in ("header", "headers") and isinstance(value, str | list):
                names = [value] if isinstance(value, str) else value
                for j, name in enumerate(names):
                    if isinstance(name, str) and "_" in name:
                        found.append(((*field, key) if isinstance(value, str) else (*field, key, j), name))
            else:
                found += _underscored_header_reads(value, (*field, key))
    elif isinstance(settings, list):
        for j, item in enumerate(settings):
            found += _underscored_header_reads(item, (*field, j))
    elif isinstance(settings, str):
        found += [(field, match.group(1)) for match in _HEADER_REFERENCE.finditer(settings)]
    return found


def _underscore_warning(name: str) -> str:
    return (f"the request header {name!r} has an underscore in its name: with handshake_limits."
            "headers_with_underscores: drop (the default) no request carries it to the policies; use its "
            "'-' spelling, or set headers_with_underscores: forward")  # fmt: skip


def _entry_type(entry: Any) -> str:
    """The type an entry names (``rate-limit-by-key``), which its default counter is named by.

    A default counter is named by the policy's type and its ordinal among the entries of that type
    in its list, not by its place in the list: named by place, a policy added in front of a limit
    (an ``ip-filter`` to tighten access) moved the limit to a fresh counter, and its open
    connections' leases and its quota's count stopped counting (a cap of 2 admitted 4, a monthly
    quota of 5 admitted 9). Entries of every type count, with or without ``counter:``, so setting one
    on a limit leaves the next limit of its type on its own counter, not on the first's counts.
    A function or an object (no default counter) counts as no type.
    """
    return str(next(iter(entry), "")) if isinstance(entry, Mapping) and len(entry) == 1 else ""


def run_name(type_name: str, name: object) -> str:
    """The name a policy runs under, which ``skip_policies`` matches: its ``name``, else its type."""
    return str(name or type_name)


class PolicyBuilder:
    """Builds policies from configuration entries, collecting every problem instead of stopping."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.underscores_dropped = False
        """Request headers with underscores are dropped (``headers_with_underscores: drop``): a policy
        that reads one is warned about."""
        self.built: list[Policy] = []
        self.locations: dict[int, Loc] = {}  # id(policy) -> where its entry is
        self._jwks: dict[tuple[str, float, float, float], JwksCache] = {}
        self._default_counters: dict[str, Loc] = {}

    def build(self, entries: Sequence[Any], loc: Loc, counter: str) -> list[Policy]:
        return self._build_all(entries, loc, counter, _HANDSHAKE)

    def build_message_policies(self, entries: Sequence[Any], loc: Loc, counter: str) -> list[MessagePolicy]:
        """Message policies (``limit-message-size``, ...; a plain async function is a transform)."""
        return self._build_all(entries, loc, counter, _MESSAGES)

    def _build_all(self, entries: Sequence[Any], loc: Loc, counter: str, kind: _Kind) -> list[Any]:
        policies: list[Any] = []
        ordinals: Counter[str] = Counter()
        for i, entry in enumerate(entries):
            type_name = _entry_type(entry)
            policy = self._build_one(entry, (*loc, i), f"{counter}.{type_name}.{ordinals[type_name]}", kind)
            ordinals[type_name] += 1
            if policy is not None:
                policies.append(policy)
        return policies

    def _claim_counter(self, counter: str, loc: Loc) -> None:
        """A default counter name is the owner's name, the list's place and the policy's type and
        ordinal among that type there (``api:chat.choose.0.when.0.policies.rate-limit-by-key.0``): an
        API or product named like another's nested place would share its counts."""
        other = self._default_counters.setdefault(counter, loc)
        if other != loc:
            self.problems.append(
                f"{loc_text(loc)}: counts on the same default counter '{counter}' as {loc_text(other)} "
                "(rename the API or product, or set counter:)"
            )

    def _build_one(self, entry: Any, loc: Loc, counter: str, family: _Kind) -> Any:
        registry, method, wrap, what = family
        if not isinstance(entry, Mapping):
            if hasattr(entry, method) and hasattr(entry, "name"):
                return self._checked(entry, method, loc)
            try:
                return wrap(entry)
            except TypeError as exc:
                self.problems.append(f"{loc_text(loc)}: {exc}")
                return None
        if len(entry) != 1 or not isinstance(raw := next(iter(entry.values())), Mapping | None):
            self.problems.append(f"{loc_text(loc)}: a policy is a mapping of its type to its settings")
            return None
        type_name = str(next(iter(entry)))
        kind = registry.get(type_name)
        if kind is None:
            known = ", ".join(sorted(registry))
            self.problems.append(f"{loc_text(loc)}: unknown {what} type '{type_name}' (known: {known})")
            return None
        loc = (*loc, type_name)
        raw = dict(raw or {})
        name = raw.get("name")
        if "name" not in kind.Settings.model_fields:
            raw.pop("name", None)
        try:
            settings: BaseModel = kind.Settings.model_validate(raw)
        except ValidationError as exc:
            seen: set[str] = set()
            for error in shape_selected(exc.errors()):  # of "X or a list of X", the form given
                problem = _describe(loc, error, raw)
                if problem.split(": ", 1)[0] not in seen:  # one problem per field
                    seen.add(problem.split(": ", 1)[0])
                    self.problems.append(problem)
            return None
        if "counter" in kind.Settings.model_fields and getattr(settings, "counter", None) is None:
            self._claim_counter(counter, loc)
        env = _Env(self, loc, counter)
        try:
            policy = kind(settings, env)
        except PolicyProblem as exc:
            self.problems.append(_problem(loc, exc.field, exc.message, raw))
            return None
        except ValueError as exc:
            self.problems.append(_problem(loc, (), str(exc), raw))
            return None
        except Exception as exc:  # a plugin's own code: its failure is this entry's problem, not a traceback
            logger.debug("%s: building the policy failed", loc_text(loc), exc_info=True)
            self.problems.append(f"{loc_text(loc)}: the policy could not be built: {_failure(exc)}")
            return None
        if env.failed:
            return None
        if self.underscores_dropped:
            reads = raw if type_name not in _WRITES_HEADER else {k: v for k, v in raw.items() if k != "header"}
            for field, header in _underscored_header_reads(reads):
                self.warnings.append(f"{loc_text((*loc, *field))}: {_underscore_warning(header)}")
        policy.name = run_name(type_name, name)
        if self._checked(policy, method, loc) is None:
            return None
        self.built.append(policy)
        self.locations[id(policy)] = loc
        return policy

    def _checked(self, policy: Any, method: str, loc: Loc) -> Any:
        """``policy``, or None with a problem when its ``apply`` is not an ``async def``: ``check`` said
        valid and every handshake was a 500 with a ``TypeError`` traceback (``await`` of its result)."""
        if method != "apply" or _is_async(getattr(policy, "apply", None)):
            return policy
        self.problems.append(f"{loc_text(loc)}: the policy's apply is not an async def (a coroutine function)")
        return None

    def jwks(self, url: str, *, refresh_interval: float, min_refresh_interval: float, timeout: float) -> JwksCache:
        """The key cache of ``url`` for these settings: shared by the policies that name the URL with
        the same ones. Keyed by the URL alone, the first policy's settings were every other's: an API
        asking for ``jwks_refresh_interval: 60`` (a revoked key gone within a minute) or
        ``jwks_min_refresh_interval: 0`` got the global policy's 600 and 30, silently."""
        key = (url, refresh_interval, min_refresh_interval, timeout)
        cache = self._jwks.get(key)
        if cache is None:
            cache = self._jwks[key] = JwksCache(
                url,
                fetch_url,
                refresh_interval=refresh_interval,
                min_refresh_interval=min_refresh_interval,
                timeout=timeout,
            )
        return cache


class _Env:
    """The :class:`~asgi_ws_gateway.policies.base.PolicyEnv` of one policy being built."""

    def __init__(self, builder: PolicyBuilder, loc: Loc, counter: str) -> None:
        self._builder = builder
        self._loc = loc
        self.counter = counter
        self.failed = False

    @property
    def store(self) -> Store:
        return self._builder.store

    @property
    def clock(self) -> Callable[[], float]:
        return self._builder.clock

    def build(self, entries: Sequence[Any], field: Sequence[str | int]) -> list[Policy]:
        before = len(self._builder.problems)
        policies = self._builder.build(entries, (*self._loc, *field), f"{self.counter}.{'.'.join(map(str, field))}")
        self.failed = self.failed or len(self._builder.problems) > before
        return policies

    def warn(self, field: Sequence[str | int], message: str) -> None:
        self._builder.warnings.append(f"{loc_text((*self._loc, *field))}: {message}")

    def jwks(self, url: str, *, refresh_interval: float, min_refresh_interval: float, timeout: float) -> JwksCache:
        return self._builder.jwks(
            url, refresh_interval=refresh_interval, min_refresh_interval=min_refresh_interval, timeout=timeout
        )


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

    Raises:
    Problems are collected in ``problems`` (by field path), not raised: :func:`load_policies` raises
    them as a ``ConfigError`` with the configuration's other problems.
    """

    def __init__(self, config: GatewayConfig, store: Store | None = None, clock: Callable[[], float] = time.time):
        self.config = config
        self.store = store if store is not None else make_store(config)
        self._builder = builder = PolicyBuilder(self.store, clock)
        builder.underscores_dropped = config.handshake_limits.headers_with_underscores == "drop"
        if builder.underscores_dropped:
            for j, header in enumerate(config.subscription_key.headers):
                if "_" in header:
                    builder.warnings.append(f"subscription_key.headers[{j}]: {_underscore_warning(header)}")
        self._trusted = Networks(config.trusted_proxies)
        self._forwarded_header = config.forwarded_header
        self.pipelines: dict[str, HandshakePipeline] = {}
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

    async def aclose(self, *, close_store: bool = True, keep_leases: bool = False) -> None:
        """Stop background work and (unless told not to: a new configuration reuses it) close the store.

        ``keep_leases``: a reload replaced these policies, and the connections admitted under them
        stay open: their ``limit-concurrency`` leases go on being renewed until each ends.
        """
        for policy in self._builder.built:
            if isinstance(policy, limits.LimitConcurrency):
                await policy.aclose(keep_held=keep_leases)
                continue
            close = getattr(policy, "aclose", None)
            if close is not None:
                await close()
        if close_store:
            await self.store.aclose()


def check_policies(config: GatewayConfig) -> list[str]:
    """Every problem of the policy, product and subscription settings, by field path (nothing kept)."""
    return GatewayPolicies(config, store=MemoryState()).problems


StoreFor = Callable[[GatewayConfig], Store | None]
"""The store to build a configuration's policies with (None: the one ``config.store`` describes)."""


def load_policies(
    source: GatewayConfig | Mapping[str, Any] | str | Path,
    *,
    store: StoreFor = lambda config: None,
    import_plugins: bool = True,
    clock: Callable[[], float] = time.time,
) -> GatewayPolicies:
    """Validate a configuration whole and return its policies, built while they were checked.

    Args:
        source: as for :func:`asgi_ws_gateway.config.parsing.parse_config`.
        store: picks the store for the configuration once it is known (the middleware keeps its
            store, and the leases open connections hold in it, when the store settings are the same).
        import_plugins: as for :func:`asgi_ws_gateway.config.parsing.parse_config`.
        clock: seconds since the epoch (tests pass a fake one).

    Raises:
        ConfigError: every problem found, data and policies together, by field path.
    """
    built: list[GatewayPolicies] = []

    def build(config: GatewayConfig) -> list[str]:
        policies = GatewayPolicies(config, store(config), clock)
        built.append(policies)
        return policies.problems

    config = parse_config(source, import_plugins=import_plugins, check_policies=build)
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


def policies_json_schema() -> dict[str, Any]:
    """``$defs`` for configuration files' JSON Schema: ``Policy`` is one of the registered types."""
    return _json_schema(REGISTRY, "Policy", "One handshake policy: {type-name: settings}.")


def message_policies_json_schema() -> dict[str, Any]:
    """``$defs`` for configuration files' JSON Schema: ``MessagePolicy`` is one of the registered types."""
    return _json_schema(MESSAGE_REGISTRY, "MessagePolicy", "One message policy: {type-name: settings}.")


def _json_schema(registry: Mapping[str, PolicyType], name: str, description: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    choices = []
    for type_name in sorted(registry):
        settings = registry[type_name].Settings.model_json_schema(ref_template="#/$defs/{model}")
        settings = mark_policies(settings)
        defs.update(settings.pop("$defs", {}))
        title = type_name.title().replace("-", "") + "Policy"
        defs[title + "Settings"] = settings
        choices.append(
            {
                "type": "object",
                "properties": {type_name: {"$ref": f"#/$defs/{title}Settings"}},
                "required": [type_name],
                "additionalProperties": False,
            }
        )
    defs[name] = {"description": description, "oneOf": choices}
    return defs


__all__ = [
    "GatewayPolicies",
    "PolicyBuilder",
    "check_policies",
    "load_config",
    "load_policies",
    "make_store",
    "message_policies_json_schema",
    "policies_json_schema",
    "run_name",
]
