"""What every policy type shares: settings models, the build environment, the registry.

A policy type is a class with a ``Settings`` pydantic model and a constructor
``(settings, env)``; registering it under a name makes ``{name: {...settings}}`` usable in
configuration files::

    from pydantic import BaseModel
    from asgi_ws_gateway.policies import PolicyEnv, deny, register_policy

    @register_policy("require-tenant")
    class RequireTenant:
        class Settings(BaseModel):
            header: str = "x-tenant"

        def __init__(self, settings: Settings, env: PolicyEnv) -> None:
            self.header = settings.header

        async def apply(self, context: HandshakeContext) -> None:
            if context.request.header(self.header) is None:
                raise deny(403, "a tenant is required")

Settings are validated when the configuration is loaded; a ``ValueError`` raised by the
constructor is reported as a configuration problem at the policy's field path. Every policy
also accepts ``name`` (to opt out of it by that name; default: its type).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config.fields import PolicyName
from ..errors import HandshakeDenied
from ..handshake.pipeline import Policy
from ..redact.documents import install_policy_types
from ..safe_regex import compile_regex
from ..state.base import Store
from ..strict_numbers import StrictNumbers
from ..templates import Condition, Reference, Template, TemplateError, caseless_pattern

if TYPE_CHECKING:
    from .jwks import JwksCache

Loc = tuple[str | int, ...]
C = TypeVar("C", bound=type)


def loc_text(loc: Loc) -> str:
    """A field path as problems print it: ``apis[0].policies[1].rate-limit.calls``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class PolicySettings(StrictNumbers):
    """Base of the built-in policies' settings: strict, immutable, with an optional ``name``.

    Each model's validator is built when it first validates (``defer_build``): a configuration uses a few of the
    ~30 policy types, and building the others was ~0.07 CPU-s of every ``run``, worker and ``check``
    (docs/performance.md, "Start-up"). A plugin's is built as it registers (:func:`register_in`), as before.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    name: PolicyName | None = Field(
        default=None,
        description="A name to opt out of this policy by (default: its type); at most 128 characters, no control, "
        "line-break or bidi characters.",
    )


def template(value: str) -> str:
    """Validator: ``value`` must compile as a template."""
    try:
        Template(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    return value


def key_template(source: str, env: PolicyEnv) -> Template:
    """A limit's key template (``key``, validated by :func:`template`); one keyed by the client's address
    is warned about. One keyed by what the client chooses is warned about by the API that runs it
    (:func:`~.api_warnings.chosen_key_warnings`): whether a list check bounds its values first depends
    on the policies before it."""
    key = Template(source)
    if any((ref.namespace, ref.path) == ("client", ("ip",)) for ref in key.references):
        env.warn(("key",), "keyed by {client.ip}: an IPv6 client holds a /64 of addresses at least and gets a new "
                 "counter for each one it uses; {client.network} counts it by its /64 (an IPv4 client by its "
                 "address)")  # fmt: skip
    return key


def client_chosen(ref: Reference) -> bool:
    """Whether the client fills ``ref`` with whatever it likes (``request.host`` is its Host header, and
    ``request.hostname`` the host it names)."""
    return ref.namespace in ("header", "query", "cookie", "path") or (
        ref.namespace == "request" and ref.path in (("host",), ("hostname",))
    )


class MatchSettings(StrictNumbers):
    """Operators of a condition; set one (``exists`` may join another)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    exists: bool | None = Field(default=None, description="The value is present (true) or absent (false).")
    equals: str | None = None
    not_equals: str | None = None
    one_of: list[str] | None = Field(default=None, alias="in", description="Equals one of these.")
    matches: str | None = Field(default=None, description="A regular expression (RE2) searched in the value.")
    contains: str | None = Field(default=None, description="A list value has this item (a string: this word).")

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)  # raises ValueError
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> MatchSettings:
        ops = [self.equals, self.not_equals, self.one_of, self.matches, self.contains]
        if sum(op is not None for op in ops) + (self.exists is not None) == 0:
            raise ValueError("set one of exists, equals, not_equals, in, matches, contains")
        return self

    def condition(self, ref: str) -> Condition:
        return Condition(
            Reference.parse(ref),
            exists=self.exists,
            equals=self.equals,
            not_equals=self.not_equals,
            one_of=tuple(self.one_of) if self.one_of is not None else None,
            matches=compile_regex(self.matches) if self.matches is not None else None,
            contains=self.contains,
            caseless=self.matches is not None and caseless_pattern(self.matches),
        )


class StoreErrorSettings(PolicySettings):
    """Settings of policies that count in the store."""

    on_store_error: Literal["open", "closed"] = Field(
        default="open", description="When the store fails: open (allow, log) or closed (deny with 503)."
    )
    counter: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Counter name: policies with the same counter share counts (default: where it is declared).",
    )


class PolicyProblem(ValueError):
    """A setting is wrong; ``field`` names it (relative to the policy's settings)."""

    def __init__(self, field: str | Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.field: Loc = (field,) if isinstance(field, str) else tuple(field)
        self.message = message


class PolicyEnv(Protocol):
    """What a policy's constructor may use."""

    @property
    def store(self) -> Store:
        """The gateway's store (memory or Redis)."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Seconds since the epoch."""
        ...

    @property
    def counter(self) -> str:
        """A default counter name unique to where this policy is declared."""
        ...

    def build(self, entries: Sequence[Any], field: Sequence[str | int]) -> list[Policy]:
        """Build nested policies declared at ``field`` (relative to this policy's settings)."""
        ...

    def jwks(self, url: str, *, refresh_interval: float, min_refresh_interval: float, timeout: float) -> JwksCache:
        """The gateway's shared key cache for a JWKS URL."""
        ...

    def warn(self, field: Sequence[str | int], message: str) -> None:
        """Valid, but probably not meant: logged at start-up and by ``check``, with the field's path
        (``field`` is relative to this policy's settings)."""
        ...


class PolicyType(Protocol):
    Settings: type[BaseModel]

    def __call__(self, settings: Any, env: PolicyEnv) -> Policy: ...


REGISTRY: dict[str, PolicyType] = {}
# Known to the configuration loaders below: a file's plugin secrets written REDACTED are refused.
install_policy_types(REGISTRY)


_BUILT_IN = __name__.rpartition(".policies.")[0] + "."
"""The package's modules (``asgi_ws_gateway.``): their policy types' settings are built when first used."""


def register_policy(name: str) -> Callable[[C], C]:
    """Class decorator: make a policy type available in configuration as ``{name: {...}}``."""
    return register_in(REGISTRY, name)


def register_in(registry: dict[str, PolicyType], name: str) -> Callable[[C], C]:
    """Class decorator adding a policy type with a ``Settings`` pydantic model to ``registry``."""

    def register(cls: C) -> C:
        settings = getattr(cls, "Settings", None)
        if not isinstance(settings, type) or not issubclass(settings, BaseModel):
            raise TypeError(f"policy type {cls.__name__} needs a Settings pydantic model")
        # A plugin must not silently replace a built-in (or another plugin's) type; re-importing one may.
        existing = registry.get(name)
        where = f"{getattr(existing, '__module__', '?')}.{getattr(existing, '__qualname__', '?')}"
        if existing is not None and where != f"{cls.__module__}.{cls.__qualname__}":
            raise ValueError(f"policy type '{name}' is already registered by {where}")
        if not cls.__module__.startswith(_BUILT_IN):
            settings.model_rebuild()  # a plugin's model: its mistakes said as it is imported, not at first use
        registry[name] = cls  # type: ignore[assignment]  # checked above, as far as a runtime can
        return cls

    return register


def deny(
    status: int,
    detail: str,
    *,
    reason: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    title: str | None = None,
) -> HandshakeDenied:
    """A denial to raise from a policy (the pipeline adds the policy's name)."""
    return HandshakeDenied(status, detail, title=title, headers=headers, reason=reason)


__all__ = [
    "REGISTRY",
    "MatchSettings",
    "PolicyEnv",
    "PolicyProblem",
    "PolicySettings",
    "PolicyType",
    "StoreErrorSettings",
    "client_chosen",
    "deny",
    "loc_text",
    "register_policy",
    "template",
]
