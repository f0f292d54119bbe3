"""Configuration entries to policy objects: one list at a time, every problem collected by field path.

:class:`PolicyBuilder` validates each entry's settings with its type's model, builds it with a
:class:`~.base.PolicyEnv` (the store, the clock, shared key sets, default counters claimed once), and
names it as ``skip_policies`` matches it (:func:`run_name`).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..config.fields import PolicyName
from ..config.problems import shape_selected
from ..config.upstream_networks import METADATA_NETWORKS
from ..handshake.pipeline import FunctionPolicy, Policy
from ..messages.context import MessagePolicy
from ..state.base import Store
from .base import REGISTRY, Loc, PolicyProblem, PolicyType, loc_text
from .header_underscores import WRITES_HEADER, underscore_warning, underscored_header_reads
from .message_base import MESSAGE_REGISTRY, FunctionMessagePolicy
from .setting_problems import failure_text, problem_text, validation_text

if TYPE_CHECKING:
    from .jwks import JwksCache

logger = logging.getLogger(__name__)


def _is_async(function: Any) -> bool:
    """An ``async def``, also behind ``functools.wraps`` decorators or as an object's ``async __call__``."""
    if not callable(function):
        return False
    target = inspect.unwrap(function)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)


_Kind = tuple[Mapping[str, PolicyType], str, Callable[[Any], Any], str]
_HANDSHAKE: _Kind = (REGISTRY, "apply", FunctionPolicy, "policy")
_MESSAGES: _Kind = (MESSAGE_REGISTRY, "attach", FunctionMessagePolicy, "message policy")
_POLICY_NAME: TypeAdapter[str] = TypeAdapter(PolicyName)


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


REUSABLE = frozenset({
    f"asgi_ws_gateway.policies.{name}"
    for name in (
        "auth.CheckHeader", "network.CheckOrigin", "control.Choose", "network.IpFilter", "limits.LimitConcurrency",
        "limits.QuotaByKey", "limits.RateLimitByKey", "transform.RemoveHeader", "transform.RewriteUri",
        "transform.SetBackendService", "transform.SetHeader", "transform.SetQueryParameter",
        "message_checks.LimitMessageSize", "credentials.CredentialExpiry",
    )
})  # fmt: skip
"""The policy classes a new configuration may take over from the one it replaces, for a list of entries
that did not change (:attr:`PolicyBuilder.lists`): what they hold besides their settings is in the store
(counts) or outlives a change anyway (a ``limit-concurrency``'s leases of open connections, renewed until
each ends), and they read no file and import nothing. Not ``validate-jwt``: a change starts empty token
caches and fetches the JWKS again (docs/policies.md); not ``rate-limit-messages``, which keeps idle
budgets; not ``validate-message`` (a schema file) or ``transform-message`` (a function); not a plugin's.
Those are built again, as every policy was on every change."""

ListKey = tuple[str, str, bool, str]
"""What a list of entries is reused by: its kind, its default counters' prefix, whether underscored headers
are dropped (its warnings), and its entries as JSON (order kept: equal data, not the same objects)."""


@dataclass(frozen=True)
class BuiltList:
    """A list of entries built without a problem or a warning, for a successor to take over: the policies
    it returned, every policy built for it (nested ones too) with its place relative to the list's, and
    the default counters it claimed."""

    policies: tuple[Any, ...]
    owned: tuple[tuple[Any, Loc], ...]
    claims: tuple[tuple[str, Loc], ...]


def _list_key(entries: Sequence[Any], counter: str, kind: _Kind, underscores_dropped: bool) -> ListKey | None:
    if not all(isinstance(entry, Mapping) for entry in entries):
        return None  # a function or an object: code, not data
    try:
        text = json.dumps(entries, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return kind[3], counter, underscores_dropped, text


def run_name(type_name: str, name: object) -> str:
    """The name a policy runs under, which ``skip_policies`` matches: its ``name``, else its type."""
    return str(name or type_name)


class PolicyBuilder:
    """Builds policies from configuration entries, collecting every problem instead of stopping."""

    def __init__(
        self, store: Store, clock: Callable[[], float] = time.time, *, reuse: Mapping[ListKey, BuiltList] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.lists: dict[ListKey, BuiltList] = {}
        """The top-level lists built here that a successor built with the same store and clock may take over."""
        self.reused: set[int] = set()
        """``id()`` of the policies taken over from ``reuse`` (the predecessor's :attr:`lists`)."""
        self._reuse = reuse or {}
        self._depth = 0  # > 0 while a policy builds its nested lists (choose)
        self.claims: list[tuple[str, Loc]] = []
        """The default counters claimed, with their places, in order (an API taken over whole claims its own again)."""
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.underscores_dropped = False
        """Request headers with underscores are dropped (``headers_with_underscores: drop``): a policy
        that reads one is warned about."""
        self.built: list[Policy] = []
        self.locations: dict[int, Loc] = {}  # id(policy) -> where its entry is
        self._jwks: dict[tuple[str, float, float, float], JwksCache] = {}
        self.fetch_allow: tuple[str, ...] = ()
        """Networks a JWKS fetch may connect to (empty: any): the file's ``jwks_networks.allow``."""
        self.fetch_deny: tuple[str, ...] = METADATA_NETWORKS
        """Networks a JWKS fetch never connects to: the file's ``upstream_networks.deny`` and ``jwks_networks.deny``."""
        self._default_counters: dict[str, Loc] = {}

    def build(self, entries: Sequence[Any], loc: Loc, counter: str) -> list[Policy]:
        return self._build_all(entries, loc, counter, _HANDSHAKE)

    def build_message_policies(self, entries: Sequence[Any], loc: Loc, counter: str) -> list[MessagePolicy]:
        """Message policies (``limit-message-size``, ...; a plain async function is a transform)."""
        return self._build_all(entries, loc, counter, _MESSAGES)

    def _build_all(self, entries: Sequence[Any], loc: Loc, counter: str, kind: _Kind) -> list[Any]:
        if self._depth or not entries:
            return self._build_each(entries, loc, counter, kind)
        key = _list_key(entries, counter, kind, self.underscores_dropped)
        if key is None:
            return self._build_each(entries, loc, counter, kind)
        built = self._reuse.get(key)
        if built is not None:
            return self._take_over(key, built, loc)
        problems, warnings, policies_before, claims = (
            len(self.problems), len(self.warnings), len(self.built), len(self.claims)
        )  # fmt: skip
        policies = self._build_each(entries, loc, counter, kind)
        owned = self.built[policies_before:]
        if (
            len(self.problems) == problems
            and len(self.warnings) == warnings
            and all(f"{type(p).__module__}.{type(p).__qualname__}" in REUSABLE for p in owned)
        ):
            self.lists[key] = BuiltList(
                tuple(policies),
                tuple((p, self.locations[id(p)][len(loc) :]) for p in owned),
                tuple((name, at[len(loc) :]) for name, at in self.claims[claims:]),
            )
        return policies

    def _take_over(self, key: ListKey, built: BuiltList, loc: Loc) -> list[Any]:
        """``built``'s policies, placed at ``loc``: what building its entries again would make."""
        for policy, at in built.owned:
            self.built.append(policy)
            self.locations[id(policy)] = (*loc, *at)
            self.reused.add(id(policy))
        for name, at in built.claims:
            self.claim_counter(name, (*loc, *at))
        self.lists[key] = built
        return list(built.policies)

    def _build_each(self, entries: Sequence[Any], loc: Loc, counter: str, kind: _Kind) -> list[Any]:
        policies: list[Any] = []
        ordinals: Counter[str] = Counter()
        for i, entry in enumerate(entries):
            type_name = _entry_type(entry)
            policy = self._build_one(entry, (*loc, i), f"{counter}.{type_name}.{ordinals[type_name]}", kind)
            ordinals[type_name] += 1
            if policy is not None:
                policies.append(policy)
        return policies

    def claim_counter(self, counter: str, loc: Loc) -> None:
        """A default counter name is the owner's name, the list's place and the policy's type and
        ordinal among that type there (``api:chat.choose.0.when.0.policies.rate-limit-by-key.0``): an
        API or product named like another's nested place would share its counts."""
        self.claims.append((counter, loc))
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
        named = self._name_checked(name, loc, raw)
        if "name" not in kind.Settings.model_fields or not named:
            raw.pop("name", None)
        try:
            settings: BaseModel = kind.Settings.model_validate(raw)
        except ValidationError as exc:
            seen: set[str] = set()
            for error in shape_selected(exc.errors()):  # of "X or a list of X", the form given
                problem = validation_text(loc, error, raw)
                if problem.split(": ", 1)[0] not in seen:  # one problem per field
                    seen.add(problem.split(": ", 1)[0])
                    self.problems.append(problem)
            return None
        if not named:
            return None
        if "counter" in kind.Settings.model_fields and getattr(settings, "counter", None) is None:
            self.claim_counter(counter, loc)
        env = _Env(self, loc, counter)
        try:
            policy = kind(settings, env)
        except PolicyProblem as exc:
            self.problems.append(problem_text(loc, exc.field, exc.message, raw))
            return None
        except ValueError as exc:
            self.problems.append(problem_text(loc, (), str(exc), raw))
            return None
        except Exception as exc:  # a plugin's own code: its failure is this entry's problem, not a traceback
            logger.debug("%s: building the policy failed", loc_text(loc), exc_info=True)
            self.problems.append(f"{loc_text(loc)}: the policy could not be built: {failure_text(exc)}")
            return None
        if env.failed:
            return None
        if self.underscores_dropped:
            reads = raw if type_name not in WRITES_HEADER else {k: v for k, v in raw.items() if k != "header"}
            for field, header in underscored_header_reads(reads):
                self.warnings.append(f"{loc_text((*loc, *field))}: {underscore_warning(header)}")
        policy.name = run_name(type_name, name)
        if self._checked(policy, method, loc) is None:
            return None
        self.built.append(policy)
        self.locations[id(policy)] = loc
        return policy

    def _name_checked(self, name: object, loc: Loc, raw: Mapping[str, Any]) -> bool:
        """Whether ``name`` may name a policy (a problem when not), whatever its type's settings say: a
        plugin's settings without a ``name`` field took any value, and the logs, the refusals and the
        metrics write the name as it is."""
        if name is None:
            return True
        try:
            _POLICY_NAME.validate_python(name)
        except ValidationError as exc:
            self.problems.append(validation_text((*loc, "name"), exc.errors()[0], raw))
            return False
        return True

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
        from .jwks import JwksCache  # httpx2, cryptography: validate-jwt's alone
        from .jwks_fetch import guarded_fetch

        key = (url, refresh_interval, min_refresh_interval, timeout)
        cache = self._jwks.get(key)
        if cache is None:
            cache = self._jwks[key] = JwksCache(
                url,
                guarded_fetch(self.fetch_allow, self.fetch_deny),
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
        self._builder._depth += 1
        try:
            policies = self._builder.build(entries, (*self._loc, *field), f"{self.counter}.{'.'.join(map(str, field))}")
        finally:
            self._builder._depth -= 1
        self.failed = self.failed or len(self._builder.problems) > before
        return policies

    def warn(self, field: Sequence[str | int], message: str) -> None:
        self._builder.warnings.append(f"{loc_text((*self._loc, *field))}: {message}")

    def jwks(self, url: str, *, refresh_interval: float, min_refresh_interval: float, timeout: float) -> JwksCache:
        return self._builder.jwks(
            url, refresh_interval=refresh_interval, min_refresh_interval=min_refresh_interval, timeout=timeout
        )


__all__ = ["REUSABLE", "BuiltList", "ListKey", "PolicyBuilder", "run_name"]
