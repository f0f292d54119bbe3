"""What the configuration models share: their base class and the field types (names, free text, URLs,
policy lists), and the policy placeholders of the JSON Schema (:func:`mark_policies`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..redact import CONTROL_CHARACTERS
from ..strict_numbers import StrictNumbers
from .limits import MAX_NAME, MAX_POLICIES, MAX_TEXT, MAX_URL, bounded
from .public_suffixes import is_public_suffix

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# The base of every configuration model: unknown fields refused, frozen, no infinity or NaN.
class ConfigModel(StrictNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def _policy_entry(value: Any) -> Any:
    """A policy entry: ``{type-name: settings}`` in a file; in code also a policy object or async function."""
    if isinstance(value, Mapping):
        bounded(value)
        if len(value) != 1 or not isinstance(next(iter(value)), str):
            raise PydanticCustomError(
                "policy_entry", "a policy is a mapping with exactly one key, its type (validate-jwt: ...)"
            )
        settings = next(iter(value.values()))
        if settings is not None and not isinstance(settings, Mapping):
            raise PydanticCustomError("policy_entry", "a policy's settings must be a mapping")
        return dict(value)
    if callable(value) or callable(getattr(value, "apply", None)) or callable(getattr(value, "attach", None)):
        return value
    raise PydanticCustomError("policy_entry", "a policy is a mapping of its type to its settings")


_POLICY_MARK = {"title": "asgi-ws-gateway policy"}  # replaced by a $ref to the Policy definition
PolicyEntry = Annotated[Any, AfterValidator(_policy_entry), WithJsonSchema(_POLICY_MARK)]
Policies = Annotated[list[PolicyEntry], Field(max_length=MAX_POLICIES)]
"""``{validate-jwt: {...}}``; in code, also a ``Policy`` object or a plain ``async def f(context)``."""
Name = Annotated[str, Field(pattern=_NAME, max_length=MAX_NAME)]
# What a terminal obeys or breaks a line at, or what reorders the text around it: redact.printable's
# set. A display name or a subscriber's name is shown by the command line, the consoles and the logs,
# and has no use for them.
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _plain_text(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise PydanticCustomError(
            "text_control",
            "control, line-breaking and bidi characters are not allowed (U+{code} at {at})",
            {"code": f"{ord(found[0]):04X}", "at": found.start()},  # pydantic's templates take no format spec
        )
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_plain_text)]
"""Free text shown to people (display names, a subscriber's name): no control, line-break or bidi characters."""
PolicyName = Annotated[str, Field(max_length=MAX_NAME), AfterValidator(_plain_text)]
"""A policy's ``name``: what ``skip_policies`` lists, and what the logs, ``GET /refusals``, the consoles and
the metrics name it by; as long as a name, with no control, line-break or bidi characters (a name that
held a line feed wrote a forged line into the gateway's log)."""
Url = Annotated[str, Field(max_length=MAX_URL)]


def _zoned(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


MAX_INSTANT = 253_402_300_799
"""9999-12-31T23:59:59Z in POSIX seconds: the last instant a number may name (``datetime``'s last year)."""
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


def _seconds(value: Any) -> Any:
    """A number (or a numeric string) as POSIX seconds, always: pydantic reads one above 2e10 as
    milliseconds, so the seconds of the year 9999 (253402300799) were an instant of 1978."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not 0 <= value <= MAX_INSTANT:  # NaN included
        raise PydanticCustomError(
            "instant_seconds",
            "a number is POSIX seconds, from 0 (1970-01-01T00:00:00Z) to {most} (9999-12-31T23:59:59Z), "
            "never milliseconds",
            {"most": MAX_INSTANT},
        )
    return datetime.fromtimestamp(value, UTC)


_INSTANT_SCHEMA = {
    "anyOf": [
        {  # RFC 3339's date-time wants a zone, and a date alone or a time without one is read as UTC here
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$",
            "description": "ISO 8601: a date, or a date and time (without a zone: UTC)",
        },
        {"type": "number", "minimum": 0, "maximum": MAX_INSTANT, "description": "POSIX seconds"},
    ]
}
"""What :func:`_seconds` takes, published: the schema said a date-time string only, and editors flagged seconds."""
Instant = Annotated[datetime, BeforeValidator(_seconds), AfterValidator(_zoned), WithJsonSchema(_INSTANT_SCHEMA)]
"""A point in time; one written without a zone (``2030-01-01T00:00:00``, ``2030-01-01``) is UTC, as the
handshake has always read it. Kept zoned, so it compares with the clock: a subscription stored without
a zone made every listing of subscriptions a 500 (comparing naive and aware datetimes). A number (or
numeric text) is POSIX seconds, from 0 to :data:`MAX_INSTANT`, never milliseconds."""

# Durations. Each time field states both its bounds (``Field(ge=..., le=...)``): ``gt=0`` admitted
# 1e-300 (an idle_timeout closing every connection at once, a rate window counting nothing) and no
# upper bound admitted 1e308 (a clock_skew under which a token never expires). A floor is what keeps
# the feature meaningful; a ceiling what no sane operator exceeds (docs/policies.md, docs/deployment.md).
DAY = 86_400.0
MAX_SECONDS = 31_536_000.0
"""A year: the longest any duration of the configuration may be."""
MIN_TIMEOUT = 0.01
"""The shortest timeout: 10 ms, about the event loop's timer resolution; a shorter one fires before any I/O."""
is_token = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
"""An RFC 9110 §5.6.2 token: a field name (§5.1), a subprotocol (RFC 6455 §4.1); the one rule the
configuration's names and the upstream request's checks share."""


def _token(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if is_token(value) is None:
            raise PydanticCustomError(
                "name_token",
                "not a {what}: an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~, at least one)",
                {"what": what},
            )
        return value

    return check


HeaderName = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_token("header name"))]
"""A request header's name, as a policy reads it: an RFC 9110 token (no '', space, ':' or non-ASCII)."""
CookieName = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_token("cookie name"))]
"""A cookie's name, as a policy reads it: a token too (RFC 6265 §4.1.1)."""


def _cookie_domain(value: str) -> str:
    domain = value.removeprefix(".").lower()  # as a browser reads a Domain attribute
    if _COOKIE_DOMAIN.fullmatch(domain) is None:
        raise PydanticCustomError(
            "cookie_domain", "not a cookie domain: a host name (letters, digits and '-' in dot-separated labels)"
        )
    # A backend allowed such a Domain set cookies for every site under it (another's session fixed, a
    # tracking id shared). The messages quote no value: the field's name reads as a credential's.
    if "." not in domain:
        raise PydanticCustomError(
            "cookie_domain_suffix",
            "a top-level domain: a cookie for it reaches every site under it; name a domain of your own",
        )
    if is_public_suffix(domain):  # the known suffixes are a partial list without the system's (public_suffixes)
        raise PydanticCustomError(
            "cookie_domain_suffix",
            "a public suffix, under which anyone registers a site: a cookie for it reaches all of them; "
            "name a domain of your own",
        )
    return domain


_COOKIE_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

CookieDomain = Annotated[str, Field(max_length=253), AfterValidator(_cookie_domain)]
"""A ``Domain`` an upstream's cookie may name: a host name, compared without a leading dot and case."""


def _cookie_path(value: str) -> str:
    segments = value.split("/")
    if segments[0] or _COOKIE_PATH.fullmatch(value) is None or "." in segments or ".." in segments:
        raise PydanticCustomError(
            "cookie_path",
            "not a cookie path: '/' then visible ASCII but ';', '%' and '\\', and no '.' or '..' segment",
        )
    return value


_COOKIE_PATH = re.compile(r"[!-$&-:<-\[\]-~]+")
"""Visible ASCII but ``;`` (an attribute's end), ``%`` and the backslash (a browser or a server may read either
as another character)."""

CookiePath = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_cookie_path)]
"""A ``Path`` an upstream's cookie may name beyond its API's own."""


def _parameter_name(value: str) -> str:
    if not value:
        raise PydanticCustomError("parameter_name", "a query parameter's name must not be empty")
    return _plain_text(value)


QueryName = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_parameter_name)]
"""A query parameter's name, as a policy reads it: not empty, no control, line-break or bidi characters."""


def _claim_text(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("claim_text", "must not be empty or blank (no token carries it)")
    return _plain_text(value)


ClaimText = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_claim_text)]
"""A claim value a token must carry (an issuer, an audience): not blank, no control, line-break or bidi
characters."""

POLICIES_DOC = "Handshake policies, run in order (see docs/policies.md)."

_MESSAGE_POLICY_MARK = {"title": "asgi-ws-gateway message policy"}  # replaced by a $ref to MessagePolicy
MessagePolicyEntry = Annotated[Any, AfterValidator(_policy_entry), WithJsonSchema(_MESSAGE_POLICY_MARK)]
MessagePolicies = Annotated[list[MessagePolicyEntry], Field(max_length=MAX_POLICIES)]
"""``{limit-message-size: {...}}``; in code, also a ``MessagePolicy`` or an ``async def f(message)`` transform."""


def mark_policies(node: Any) -> Any:
    """A JSON Schema with each policy placeholder replaced by a reference to ``#/$defs/Policy``."""
    if node == _POLICY_MARK:
        return {"$ref": "#/$defs/Policy"}
    if node == _MESSAGE_POLICY_MARK:
        return {"$ref": "#/$defs/MessagePolicy"}
    if isinstance(node, dict):
        return {k: mark_policies(v) for k, v in node.items()}
    if isinstance(node, list):
        return [mark_policies(v) for v in node]
    return node


__all__ = [
    "DAY",
    "MAX_INSTANT",
    "MAX_SECONDS",
    "MIN_TIMEOUT",
    "POLICIES_DOC",
    "ClaimText",
    "ConfigModel",
    "CookieDomain",
    "CookieName",
    "CookiePath",
    "HeaderName",
    "Instant",
    "MessagePolicies",
    "MessagePolicyEntry",
    "Name",
    "Policies",
    "PolicyEntry",
    "PolicyName",
    "QueryName",
    "Text",
    "Url",
    "is_token",
    "mark_policies",
]
