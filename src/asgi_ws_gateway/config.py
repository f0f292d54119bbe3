"""The gateway's configuration: typed models, loading from YAML/JSON/dict, errors by field path.

A configuration is validated eagerly: :func:`load_config` either returns a :class:`GatewayConfig`
whose cross-field rules hold (unique names, non-overlapping paths, upstream URL placeholders that
the API path defines) or raises :class:`~asgi_ws_gateway.errors.ConfigError` listing every problem
as ``field.path: what is wrong``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .forwarded import parse_network
from .json_names import DuplicateName, load_unique
from .loading import (
    LoadRefused,
    alias_problem,
    allowed_modules,
    check_file,
    check_import,
    deferred_imports,
    import_object,
    read_regular_file,
)
from .plugins import MODULE_NAME, load_plugins
from .redact import CONTROL_CHARACTERS, is_credential_name, redact_free_text, redact_values
from .redis_client import parse_redis_url
from .routing import PathTemplate, PathTemplateError, overlapping
from .strict_numbers import StrictNumbers, non_finite_numbers
from .yaml_keys import safe_load

MIB = 1024 * 1024
# Size limits: generous for any real configuration, small enough that no request can bloat the
# gateway's memory or state file (docs/security.md lists them).
MAX_NAME = 128  # names and ids
MAX_TEXT = 256  # display names
MAX_URL = 2048  # paths and URLs
MAX_UPSTREAMS = 64
MAX_POLICIES = 64  # per list
MAX_APIS = 1000  # per configuration (file and management API together); products too
MAX_SUBSCRIPTIONS = 100_000
MAX_SETTING = 16384  # characters of one string in a policy's settings (a PEM certificate chain fits)
MAX_ITEMS = 1024  # entries of one list or mapping in a policy's settings
MAX_DEPTH = 16  # nesting of a policy's settings
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(StrictNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def bounded(value: Any) -> Any:
    """``value`` (plain data), refused when a string, a list or its nesting exceeds the limits above."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        node, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise PydanticCustomError("limit_depth", "nested deeper than {limit} levels", {"limit": MAX_DEPTH})
        if isinstance(node, str) and len(node) > MAX_SETTING:
            raise PydanticCustomError(
                "limit_length",
                "{where} is longer than {limit} characters",
                {"where": where or "value", "limit": MAX_SETTING},
            )
        if isinstance(node, Mapping | list):
            if len(node) > MAX_ITEMS:
                raise PydanticCustomError(
                    "limit_items",
                    "{where} has more than {limit} entries",
                    {"where": where or "value", "limit": MAX_ITEMS},
                )
            items = node.items() if isinstance(node, Mapping) else enumerate(node)
            for key, child in items:
                if isinstance(key, str) and len(key) > MAX_NAME:
                    raise PydanticCustomError(
                        "limit_length", "a key is longer than {limit} characters", {"limit": MAX_NAME}
                    )
                label = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))
                pending.append((child, label, depth + 1))
    return value


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
            "control, line-breaking and bidi characters are not allowed (U+{code:04X} at {at})",
            {"code": ord(found[0]), "at": found.start()},
        )
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_plain_text)]
"""Free text shown to people (display names, a subscriber's name): no control, line-break or bidi characters."""
Url = Annotated[str, Field(max_length=MAX_URL)]
"""``{validate-jwt: {...}}``; in code, also a ``Policy`` object or a plain ``async def f(context)``."""

_POLICIES_DOC = "Handshake policies, run in order (see docs/policies.md)."

_MESSAGE_POLICY_MARK = {"title": "asgi-ws-gateway message policy"}  # replaced by a $ref to MessagePolicy
MessagePolicyEntry = Annotated[Any, AfterValidator(_policy_entry), WithJsonSchema(_MESSAGE_POLICY_MARK)]
MessagePolicies = Annotated[list[MessagePolicyEntry], Field(max_length=MAX_POLICIES)]
"""``{limit-message-size: {...}}``; in code, also a ``MessagePolicy`` or an ``async def f(message)`` transform."""


class ErrorReplyConfig(_Model):
    """The message a dropped message's sender gets (when the policy answers it)."""

    format: Literal["json", "text"] = Field(default="json", description="json: a JSON object; text: a text template.")
    template: Annotated[str | dict[str, Any] | None, AfterValidator(bounded)] = Field(
        default=None,
        description="json: an object whose strings are templates; text: a template. {error.reason}, "
        "{error.detail}, {error.policy}, {error.direction} and the connection's values ({jwt.sub}). Default: "
        '{"type": "error", "error": "{error.reason}", "detail": "{error.detail}", "policy": "{error.policy}"}.',
    )

    @model_validator(mode="after")
    def _check_format(self) -> ErrorReplyConfig:
        if self.template is not None and isinstance(self.template, str) != (self.format == "text"):
            raise PydanticCustomError("policy_reply", "format json takes an object template, format text a string")
        return self


class MessagePoliciesConfig(_Model):
    """Policies on every message of open connections, per direction (see docs/message-policies.md)."""

    inbound: MessagePolicies = Field(default_factory=list, description="Client to upstream, in order.")
    outbound: MessagePolicies = Field(default_factory=list, description="Upstream to client, in order.")
    error_reply: ErrorReplyConfig | None = Field(
        default=None, description="How dropped messages are answered (the nearest scope that sets it wins)."
    )


def _network(value: str) -> str:
    try:
        parse_network(value)
    except ValueError:
        raise PydanticCustomError(
            "policy_network", "'{value}' is not an IP address or network", {"value": value}
        ) from None
    return value


Network = Annotated[str, AfterValidator(_network)]


class UpstreamConfig(_Model):
    """One backend of a WebSocket API.

    In a file an upstream is a URL string or a mapping with ``url``; in code it may carry the
    ASGI ``app`` object itself. URLs may use the API path's parameters: ``ws://chat:9000/rooms/{room}``.
    """

    url: Url = Field(
        description="ws://host[:port]/path, wss://host[:port]/path, or asgi:module:attribute "
        "(an ASGI app run in this process). {name} placeholders take the API path's parameters.",
    )
    path: Url | None = Field(
        default=None,
        description="asgi: upstreams only: the path the in-process app sees (default: the client's path).",
    )
    ca_bundle: Url | None = Field(
        default=None, description="wss:// only: a PEM file of CA certificates to verify the upstream with."
    )
    verify_tls: bool = Field(default=True, description="wss:// only: verify the upstream's certificate.")
    app: SkipJsonSchema[Any] = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _check_url(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, Mapping):
            return data
        url = data.get("url")
        if data.get("app") is not None:
            if isinstance(data["app"], str | bytes | int | float | Mapping | list):  # data, as JSON or YAML gives it
                raise PydanticCustomError(
                    "asgi_app", "app is an ASGI app object, given in code; in a file use url: asgi:"
                )
            return {"url": "asgi:", **data} if url is None else data
        if isinstance(url, str) and len(url) <= MAX_URL and not url.startswith(("ws://", "wss://", "asgi:")):
            raise PydanticCustomError(
                "ws_url", "'{url}' is not a ws://, wss:// or asgi: URL", {"url": _public_url(url)}
            )
        if isinstance(url, str) and "@" in _authority(url):
            # The URL is shown in logs, spans, metrics and the management API: no place for a password.
            raise PydanticCustomError(
                "url_userinfo", "must not carry credentials (user:password@); send them with a set-header policy"
            )
        if isinstance(url, str) and ("{" in _authority(url) or "}" in _authority(url)):
            # A path parameter is the client's: in the host it would choose where the gateway connects.
            raise PydanticCustomError(
                "url_host_parameter",
                "must not take a parameter in its host or port (clients would choose where the gateway connects); "
                "pick the host with set-backend-service from values clients cannot forge ({jwt.*}, {subscription.*})",
            )
        return data

    @model_validator(mode="after")
    def _check_fields(self) -> UpstreamConfig:
        # Syntax only: the app is imported by resolve_apps, once the whole configuration is valid.
        if self.kind == "asgi" and self.app is None:
            try:
                check_import(self.url.removeprefix("asgi:"))
            except LoadRefused as exc:
                raise PydanticCustomError("asgi_refused", str(exc)) from None
            except ValueError:
                raise PydanticCustomError(
                    "asgi_url", "'{url}' must name an app as asgi:module:attribute", {"url": self.url}
                ) from None
        if self.kind != "wss" and (self.ca_bundle is not None or not self.verify_tls):
            raise PydanticCustomError("tls_option", "ca_bundle and verify_tls apply to wss:// upstreams only")
        if self.ca_bundle is not None:
            try:
                check_file(self.ca_bundle)
            except LoadRefused as exc:
                raise PydanticCustomError("tls_refused", str(exc)) from None
        if self.path is not None and self.kind != "asgi":
            raise PydanticCustomError("path_option", "path applies to asgi: upstreams only")
        return self

    @property
    def kind(self) -> Literal["ws", "wss", "asgi"]:
        if self.url.startswith("wss://"):
            return "wss"
        return "ws" if self.url.startswith("ws://") else "asgi"

    @property
    def label(self) -> str:
        """How logs, spans, metrics and errors name this backend: no credentials, query or fragment."""
        if self.kind == "asgi":
            return self.url if self.url != "asgi:" else f"asgi:{getattr(self.app, '__name__', 'app')}"
        return _public_url(self.url)


def _authority(url: str) -> str:
    """The ``user@host:port`` part of ``scheme://authority/path`` ("" when there is none)."""
    _, sep, rest = url.partition("://")
    return re.split(r"[/?#]", rest, maxsplit=1)[0] if sep else ""


def _public_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: what may be shown of a configured URL."""
    authority = _authority(url)
    scheme, _, rest = url.partition("://")
    if not authority and not rest:
        return url.split("?", 1)[0].split("#", 1)[0]
    tail = rest[len(authority) :]
    return f"{scheme}://{authority.rpartition('@')[2]}{re.split(r'[?#]', tail, maxsplit=1)[0]}"


class ApiConfig(_Model):
    """A WebSocket API: a public path the gateway owns and the backends it proxies to."""

    name: Annotated[Name, Field(description="Unique identifier (logs, metrics, management).")]
    display_name: Text | None = Field(default=None, description="Human name; defaults to name.")
    path: Url = Field(description="Public path: exact (/ws/chat) or a template (/ws/rooms/{room}).")
    upstreams: list[UpstreamConfig] = Field(
        min_length=1, max_length=MAX_UPSTREAMS, description="Backends, tried in balancing order."
    )
    balancing: Literal["round-robin", "least-connections"] = "round-robin"
    forward_query: bool = Field(default=True, description="Append the client's query string upstream.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to open one upstream (TCP+TLS+handshake).")
    dns_ttl: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds an upstream host name's addresses are used before it is resolved again (the system "
        "resolver gives no TTL); 0: resolved for every handshake.",
    )
    max_message_size: int = Field(
        default=MIB,
        gt=0,
        description="Bytes; a larger message (compressed: inflated; each fragment but the last counts 64 bytes at "
        "least) closes its sender with 1009, its peer with 1001.",
    )
    compression: Literal["deflate"] | None = Field(
        default="deflate", description="permessage-deflate offered on the upstream leg (null: none)."
    )
    ping_interval: float | None = Field(
        default=20.0,
        ge=0.1,  # 1e-300 was valid, and pinged in a loop: one idle connection kept a core busy
        description="Seconds between keepalive pings to the upstream (null: off; at least 0.1); spliced, each "
        "side silent for this long is pinged.",
    )
    ping_timeout: float | None = Field(
        default=20.0,
        gt=0,
        description="Seconds to wait for a pong before the upstream is declared dead (1011).",
    )
    close_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the upstream gets to finish a closing handshake before TCP is dropped; also the bound "
        "on each of the gateway's own closing steps.",
    )
    passthrough: Literal["auto"] | bool = Field(
        default="auto",
        description="Splice the client's and the upstream's TCP streams after the handshake when the server "
        "offers it (asgi_ws_gateway.server:GatewayWebSocketProtocol, what 'run' serves with), every upstream is "
        "ws:// or wss:// and no message policy applies; extensions are then negotiated end to end. 'auto' "
        "(default) and true splice whenever they can (true also warns where it cannot); false always relays "
        "(see docs/performance.md).",
    )
    idle_timeout: float | None = Field(
        default=None, gt=0, description="Close with 1001 after this many seconds with no message either way."
    )
    max_lifetime: float | None = Field(
        default=None, gt=0, description="Close with 1001 this many seconds after the connection opened."
    )
    unhealthy_after: int = Field(
        default=3, ge=1, description="Consecutive connect failures after which a backend cools down."
    )
    cooldown: float = Field(default=10.0, ge=0, description="Seconds a failing backend is skipped.")
    policies: Policies = Field(default_factory=list, description=_POLICIES_DOC + " Run after inherited ones.")
    message_policies: MessagePoliciesConfig = Field(
        default_factory=MessagePoliciesConfig, description="Message policies, run after inherited ones."
    )
    skip_policies: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(
        default_factory=list,
        max_length=MAX_POLICIES,
        description="Inherited (global or product) handshake or message policies this API opts out of, "
        "by type or by their 'name'.",
    )

    @property
    def title(self) -> str:
        return self.display_name or self.name


class ProductConfig(_Model):
    """A product: a group of APIs that subscriptions grant access to, with its own policies."""

    name: Annotated[Name, Field(description="Unique identifier.")]
    display_name: Text | None = None
    apis: list[Name] = Field(
        default_factory=list, max_length=MAX_APIS, description="Names of the APIs in this product."
    )
    subscription_required: bool = Field(
        default=True, description="A subscription key is needed (false: an open product, its policies apply to all)."
    )
    policies: Policies = Field(default_factory=list, description=_POLICIES_DOC)
    message_policies: MessagePoliciesConfig = Field(default_factory=MessagePoliciesConfig)


class SubscriptionConfig(_Model):
    """A subscription to a product. Only the SHA-256 of its key is stored."""

    id: Annotated[Name, Field(description="Unique identifier ({subscription.id}).")]
    product: Name = Field(description="The product this subscription grants.")
    name: Text | None = Field(default=None, description="Human name (the subscriber).")
    key_sha256: Annotated[
        str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="Hex SHA-256 of the key: never the key itself.")
    ]
    state: Literal["active", "suspended", "expired"] = "active"
    expires_at: datetime | None = Field(default=None, description="After this instant the subscription is expired.")


class SubscriptionKeyConfig(_Model):
    """Where clients present subscription keys."""

    headers: list[str] = Field(
        default_factory=lambda: ["X-Subscription-Key", "Ocp-Apim-Subscription-Key"],
        description="Request headers tried in order (Ocp-Apim-Subscription-Key is Azure APIM's).",
    )
    query: str | None = Field(default="subscription-key", description="Query parameter (null: not accepted).")


def _redis_url(url: str) -> str:
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise PydanticCustomError("policy_redis_url", str(exc)) from None  # no "(got url)": it may hold a password
    return url


class StoreConfig(_Model):
    """Where limits, quotas and concurrency leases are counted."""

    type: Literal["memory", "redis"] = Field(
        default="memory", description="memory: this process only; redis: shared by every worker and host."
    )
    url: Annotated[str, AfterValidator(_redis_url)] | None = Field(
        default=None,
        description="redis only: redis://host:port/db (rediss:// for TLS), redis+cluster://host:port,host:port "
        "or redis+sentinel://host:port,host:port/service[/db].",
    )
    prefix: str = Field(default="asgi-ws-gw", pattern=r"^[A-Za-z0-9_.:-]+$", description="Key namespace.")
    timeout: float = Field(default=0.5, gt=0, description="Seconds to connect to or hear back from Redis.")
    max_connections: int = Field(
        default=50,
        ge=1,
        le=100,
        description="redis only: Redis calls through redis-py one gateway process has in flight at once, a "
        "connection each (at most redis-py's pool of 100); more wait their turn, within the handshake's "
        "policy_timeout. On a redis:// or unix:// URL the limit checks share one pipelined connection instead "
        "and this bounds the lease renewals only.",
    )
    max_keys: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="memory only: live keys of each limit (each counter: windows, quota counters, leases) one "
        "process holds; past it a new key of that limit is a store failure (on_store_error: open admits unchecked, "
        "closed refuses with 503), other limits go on. A limit keyed by a value clients choose makes a key per "
        "value, kept for its window or period.",
    )

    @model_validator(mode="after")
    def _check_url(self) -> StoreConfig:
        if self.type == "redis" and not self.url:
            raise PydanticCustomError("policy_store", "a redis store needs url: redis://host:port/db")
        return self


class TelemetryConfig(_Model):
    """Traces, metrics and the access log (see docs/telemetry.md).

    Spans and metrics go to the global OpenTelemetry providers when the application set them;
    otherwise to the gateway's own OTLP exporters, configured from the standard ``OTEL_*``
    environment variables, when ``exporter`` asks for them. Nothing is exported unless asked.
    """

    enabled: bool = Field(
        default=True, description="Emit spans and metrics (false: none at all; the access log stays)."
    )
    exporter: Literal["auto", "otlp", "none"] = Field(
        default="auto",
        description="Without global providers: auto = OTLP when OTEL_EXPORTER_OTLP_*ENDPOINT or "
        "OTEL_{TRACES,METRICS,LOGS}_EXPORTER=otlp is set; otlp = always; none = never.",
    )
    trust_client_trace: bool = Field(
        default=False,
        description="Continue the client's traceparent/tracestate (false: start a new trace linked to it).",
    )
    propagate: bool = Field(default=True, description="Inject traceparent/tracestate into the upstream handshake.")
    connection_parent: Literal["link", "handshake"] = Field(
        default="link",
        description="The connection span: link = root of its own trace, linked to the handshake span; "
        "handshake = a child of the handshake span (for backends that ignore links; the trace then lasts "
        "as long as the connection).",
    )
    attempt_spans: Literal["each", "failover"] = Field(
        default="each",
        description="Upstream attempts: each = an 'upstream connect' CLIENT span per attempt; failover = the "
        "first attempt recorded on the handshake span (ws_gateway.upstream.* attributes; the upstream's "
        "traceparent names the handshake span), a CLIENT span only for failover attempts: one span fewer "
        "per connection.",
    )
    message_events: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Fraction of messages recorded as events on the connection span (0: none, no per-message cost).",
    )
    access_log: Literal["text", "json"] = Field(
        default="text", description="Format of the asgi_ws_gateway.access lines: uvicorn-style text or JSON."
    )
    export_logs: bool = Field(
        default=False, description="Also export access-log records through the OpenTelemetry logs SDK."
    )
    shutdown_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds the gateway's own OTLP exporters get to send what they hold at shutdown; past "
        "it they are closed and the rest is dropped, with a WARNING (a collector that is down or never "
        "answers would otherwise hold the process for each signal's OTEL_EXPORTER_OTLP_TIMEOUT and retries).",
    )


class HandshakeLimitsConfig(_Model):
    """How much a handshake request may carry, refused (431, 414, 508) before any policy runs, and how
    long its policies may take (504).

    Counted over the request as the server hands it to the application (headers: name, value and
    4 bytes of separators each; the target: raw path and query string), for every server. The
    servers' own parsers have tighter per-line limits (8 KiB a line, 128 headers under
    websockets-sansio; see docs/security.md).
    """

    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Most bytes of request headers a handshake may carry (default 32 KiB); more: 431.",
    )
    max_headers: int = Field(
        default=100, ge=8, le=10_000, description="Most request headers a handshake may carry (default 100); more: 431."
    )
    max_target_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        le=1024 * 1024,
        description="Most bytes of the request target, path and query string (default 8 KiB); more: 414.",
    )
    headers_with_underscores: Literal["drop", "reject", "forward"] = Field(
        default="drop",
        description="Request headers whose names contain '_' (X_User): many upstream stacks (CGI, WSGI, PHP, "
        "Rack, Django's META) read X_User and X-User as one header, so a client's X_User could stand in for an "
        "X-User the gateway checked, removed or set. drop (default, as nginx does): policies and upstreams never "
        "see them; reject: 400 invalid_header_name; forward: as any other header.",
    )
    max_gateway_hops: int = Field(
        default=4,
        ge=0,
        le=64,
        description="Most times a handshake may already have passed through this gateway, counted by the Via "
        "entries it writes upstream (default 4: a chain of gateways or an API proxied to another API of the "
        "same gateway works); more: 508 Loop Detected, so an upstream URL that leads back to a gateway opens "
        "that many connections, not thousands.",
    )
    policy_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a handshake's policies may take together, subscription check included (default 10); "
        "longer: 504 policy_timeout naming the policy that was running, and the policies' resources released. "
        "Bounds a policy whose I/O hangs; the upstream connect has its own connect_timeout.",
    )


def _allowed_module(value: str) -> str:
    try:
        allowed_modules([value])
    except ValueError as exc:
        raise PydanticCustomError("asgi_allowed", str(exc)) from None
    return value


_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|[0-9a-f:.]*:[0-9a-f:.]*")
Host = tuple[str, int | None]
"""A host pattern as (lower-case host, port or None for any): ``*`` and ``*.domain`` match many."""


def parse_host(entry: str) -> Host:
    """``chat.internal``, ``chat.internal:9000``, ``[::1]:9000``, ``*.internal`` or ``*`` as a :data:`Host`."""
    try:
        parts = urlsplit("//" + entry)
        port = parts.port
    except ValueError:
        raise ValueError(f"'{shorten(entry)}' is not host[:port]") from None
    host = parts.hostname
    if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"'{shorten(entry)}' is not host[:port]")
    if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[2:]):
        raise ValueError(f"'{shorten(entry)}': a wildcard is '*' or a leading '*.' (*.internal)")
    if not _HOST_PATTERN.fullmatch(host):
        raise ValueError(f"'{shorten(entry)}' is not host[:port]")
    return host, port


def host_matches(patterns: Iterable[Host], name: str, port: int | None) -> bool:
    """Whether host ``name`` (lower case) at ``port`` is one of ``patterns`` (:func:`parse_host`'s)."""
    for allowed_name, allowed_port in patterns:
        if allowed_port is not None and allowed_port != port:
            continue
        if allowed_name in ("*", name) or (allowed_name.startswith("*.") and name.endswith(allowed_name[1:])):
            return True
    return False


def _host_pattern(value: str) -> str:
    try:
        parse_host(value)
    except ValueError as exc:
        raise PydanticCustomError("host_pattern", str(exc)) from None
    return value


HostPattern = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_host_pattern)]
"""``host``, ``host:port``, ``*.domain`` or ``*`` (:func:`parse_host`)."""


class ManagementConfig(_Model):
    """What the management API may do beyond changing APIs, products and subscriptions."""

    allowed_asgi_upstreams: list[Annotated[str, Field(max_length=MAX_URL), AfterValidator(_allowed_module)]] = Field(
        default_factory=list,
        description="In-process apps (module:attr, or a whole module) that APIs created or changed through the "
        "management API may use as asgi: upstreams, besides those this file uses. Default: none.",
    )
    allowed_upstream_hosts: list[HostPattern] = Field(
        default_factory=list,
        max_length=MAX_APIS,
        description="Hosts (host, host:port, *.domain or *) that APIs created or changed through the management API "
        "may connect to while they inherit a global or product set-header or set-query-parameter holding a "
        "credential, besides the hosts of this file's own upstreams. Default: none.",
    )
    allowed_hosts: list[HostPattern] = Field(
        default_factory=list,
        max_length=MAX_APIS,
        description="Host names (host, host:port, *.domain or *) the management API and its consoles answer to, "
        "besides IP addresses and localhost: a request naming another Host is a 421, so that a page on a name "
        "rebound to the gateway's address (DNS rebinding) reaches nothing. Default: none.",
    )


class GatewayConfig(_Model):
    """Everything the gateway needs: its WebSocket APIs and process-wide settings."""

    plugins: list[Annotated[str, Field(pattern=MODULE_NAME)]] = Field(
        default_factory=list,
        description="Modules to import before the policies are checked: they register custom policy types "
        "(see docs/policies.md#plugins). Never changed through the management API.",
    )
    apis: list[ApiConfig] = Field(default_factory=list, max_length=MAX_APIS)
    drain_grace_period: float = Field(
        default=10.0, ge=0, description="Seconds open connections get to close when the gateway drains."
    )
    drain_close_code: Literal[1001, 1012] = Field(
        default=1001, description="Close code sent when draining: 1001 going away or 1012 service restart."
    )
    policies: Policies = Field(
        default_factory=list, description=_POLICIES_DOC + " Global: they run first, for every API."
    )
    message_policies: MessagePoliciesConfig = Field(
        default_factory=MessagePoliciesConfig, description="Global message policies: they run first, for every API."
    )
    products: list[ProductConfig] = Field(default_factory=list, max_length=MAX_APIS)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list, max_length=MAX_SUBSCRIPTIONS)
    subscription_key: SubscriptionKeyConfig = Field(default_factory=SubscriptionKeyConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Addresses or networks of proxies whose forwarding header names the client (client.ip).",
    )
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        default="x-forwarded-for", description="The header trusted proxies put the client address in."
    )
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    handshake_limits: HandshakeLimitsConfig = Field(
        default_factory=HandshakeLimitsConfig,
        description="Size limits of handshake requests, checked before any policy (see docs/security.md).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Connections one gateway process serves at once, handshakes in progress included (each "
        "worker of --workers has its own); past it: 503 over_capacity with Retry-After, before any policy or "
        "upstream connect. Default (null): as many as the process's open-file limit has room for, two "
        "descriptors a connection after 64 in reserve; a larger value is lowered to that, with a warning.",
    )
    expose_error_details: bool = Field(
        default=False,
        description="Development only: 5xx handshake refusals tell the client the internal detail (backend URL, "
        "error text) instead of a generic problem. Off: the detail goes only to the log and the span.",
    )
    management: ManagementConfig = Field(
        default_factory=ManagementConfig, description="Rules for the management API (not changeable through it)."
    )


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


PolicyCheck = Callable[[GatewayConfig], list[str]]
"""Checks a configuration's policies (by building them) and returns their problems by field path.

The configuration layer knows no policy: the caller passes this in (``policies/build.py``).
"""


def _no_policy_check(config: GatewayConfig) -> list[str]:
    return []


def parse_config(
    source: GatewayConfig | Mapping[str, Any] | str | Path,
    *,
    import_plugins: bool = True,
    check_policies: PolicyCheck = _no_policy_check,
) -> GatewayConfig:
    """Load and validate a configuration's data; its policies only through ``check_policies``.

    Args:
        source: a :class:`GatewayConfig`, a mapping, or the path of a ``.yaml``/``.yml``/``.json`` file.
        import_plugins: import the modules ``plugins`` names (once per process) before the policies
            are checked. False (the management API): import nothing; modules not already loaded are
            problems.
        check_policies: called with the parts that validated (imports deferred), and once more with
            imports allowed when the configuration named objects to import; its problems are
            reported with the others. :func:`asgi_ws_gateway.policies.build.load_policies` passes
            one that builds the policies it then serves with.

    Raises:
        ConfigError: with every problem found, each as ``field.path: message``; a plugin that cannot
            be imported stops validation there (its policy types would all be unknown).
    """
    origin: str | None = None
    if isinstance(source, GatewayConfig):
        config = source
    else:
        if isinstance(source, str | Path):
            origin = str(source)
            source = _read_file(Path(source))
        try:
            config = GatewayConfig.model_validate(source)
        except ValidationError as exc:
            problems = describe_errors(exc.errors())
            if import_plugins:  # so the parts that did validate are checked with the plugins' types known
                with contextlib.suppress(ConfigError):
                    load_plugins(_named_plugins(source))
            found = _check_what_validated(source, exc, problems, check_policies)
            raise ConfigError(problems + found, origin) from None
    try:  # plugins register policy types: before the policies' settings are checked
        load_plugins(config.plugins, allow_import=import_plugins)
    except ConfigError as exc:
        raise ConfigError(exc.problems, origin) from None
    with deferred_imports() as imports:
        problems = cross_check(config) + check_policies(config)
    if problems:
        raise ConfigError(problems, origin)
    if problems := non_finite_numbers(config.model_dump(mode="python", by_alias=True)):
        raise ConfigError(problems, origin)  # typed fields refused them above: these are free-form values
    # Imports happen only now that everything else is known to be valid: in-process apps, then
    # the functions policies call (building the policies again, for real this time).
    problems = resolve_apps(config)
    if imports and not problems:
        problems = check_policies(config)
    if problems:
        raise ConfigError(problems, origin)
    return config


def _named_plugins(source: Any) -> list[str]:
    """The ``plugins`` of a configuration that did not validate, when that list itself is sound."""
    plugins = source.get("plugins") if isinstance(source, Mapping) else None
    if isinstance(plugins, list) and all(isinstance(p, str) and re.fullmatch(MODULE_NAME, p) for p in plugins):
        return plugins
    return []


# The top-level lists checked entry by entry when the whole configuration does not validate.
_LISTS: dict[str, type[BaseModel]] = {"apis": ApiConfig, "products": ProductConfig, "subscriptions": SubscriptionConfig}
_TOP_REF = re.compile(r"(?<![\w.\]])(apis|products|subscriptions)\[(\d+)\]")


def _check_what_validated(
    source: Any, exc: ValidationError, reported: list[str], check_policies: PolicyCheck
) -> list[str]:
    """Cross-field problems among the parts that did validate, so one bad field hides nothing else.

    Each top-level list keeps its valid entries (renumbered back to their places in the file);
    other top-level fields with errors fall back to their defaults.
    """
    if not isinstance(source, Mapping):
        return []
    broken = {error["loc"][0] for error in exc.errors() if error["loc"]}
    if any(len(error["loc"]) == 1 and error["loc"][0] in _LISTS for error in exc.errors()):
        return []  # a whole list is wrong (too long, not a list): nothing sound to cross-check
    partial: dict[str, Any] = {k: v for k, v in source.items() if k not in broken or k in _LISTS}
    places: dict[str, list[int]] = {}
    for key, model in _LISTS.items():
        entries = source.get(key)
        if key not in broken or not isinstance(entries, list):
            places[key] = list(range(len(entries))) if isinstance(entries, list) else []
            continue
        kept = [i for i, entry in enumerate(entries) if _valid(model, entry)]
        places[key], partial[key] = kept, [entries[i] for i in kept]
    try:
        config = GatewayConfig.model_validate(partial)
    except ValidationError:
        return []  # e.g. a list longer than allowed: nothing sound to cross-check
    # An entry dropped for its own errors must not also show up as "unknown" elsewhere.
    dropped = {
        entry.get("name") if key != "subscriptions" else entry.get("id")
        for key in _LISTS
        for i, entry in enumerate(source.get(key) or [])
        if isinstance(entry, Mapping) and i not in places[key]
    }
    found = []
    with deferred_imports():  # the configuration is invalid: import nothing
        checked = cross_check(config) + check_policies(config)
    for problem in checked:
        problem = _TOP_REF.sub(lambda m: f"{m.group(1)}[{places[m.group(1)][int(m.group(2))]}]", problem)
        if problem not in reported and not any(
            f"unknown API '{n}'" in problem or f"unknown product '{n}'" in problem for n in dropped
        ):
            found.append(problem)
    return found


def _valid(model: type[BaseModel], entry: Any) -> bool:
    try:
        model.model_validate(entry)
    except ValidationError:
        return False
    return True


def resolve_apps(config: GatewayConfig) -> list[str]:
    """Import the ``asgi:module:attr`` upstreams of a validated configuration; the problems found."""
    problems: list[str] = []
    for i, api in enumerate(config.apis):
        for k, upstream in enumerate(api.upstreams):
            if upstream.kind != "asgi" or upstream.app is not None:
                continue
            target = upstream.url.removeprefix("asgi:")
            try:
                app = import_object(target)
            except ValueError as exc:
                problems.append(f"apis[{i}].upstreams[{k}]: {exc}")
                continue
            if not is_asgi_app(app):
                problems.append(f"apis[{i}].upstreams[{k}]: '{target}' is not an ASGI app (an async callable)")
                continue
            object.__setattr__(upstream, "app", app)
    return problems


def is_asgi_app(app: Any) -> bool:
    """An ASGI 3 app: an async function, or an object whose ``__call__`` is one (not e.g. ``os.system``)."""
    while isinstance(app, functools.partial):
        app = app.func
    if inspect.isclass(app):
        return False  # calling a class builds an instance: ASGI 2 style, which the gateway does not run
    return callable(app) and (inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__))


def cross_check(config: GatewayConfig) -> list[str]:
    """Rules that span fields: unique names, valid and non-overlapping paths, known placeholders.

    Policy settings are the policies' to check (``check_policies`` of :func:`parse_config`).
    """
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    templated: list[tuple[int, PathTemplate]] = []
    exact: dict[str, list[tuple[int, PathTemplate]]] = {}
    for i, api in enumerate(config.apis):
        if api.name in seen_names:
            problems.append(f"apis[{i}].name: duplicate API name '{api.name}' (also apis[{seen_names[api.name]}])")
        seen_names.setdefault(api.name, i)
        try:
            template = PathTemplate(api.path)
        except PathTemplateError as exc:
            problems.append(f"apis[{i}].path: {exc}")
            continue
        # Exact paths clash only when equal (a dictionary lookup); templates are compared pairwise,
        # so a thousand exact paths cost a thousand lookups rather than half a million comparisons.
        clashes = [j for j, other in templated if overlapping(template, other)]
        if template.params:
            clashes += [j for same in exact.values() for j, other in same if overlapping(template, other)]
        else:
            clashes += [j for j, _ in exact.get(api.path, [])]
        for j in sorted(clashes):
            problems.append(f"apis[{i}].path: '{api.path}' overlaps apis[{j}].path '{config.apis[j].path}'")
        if template.params:
            templated.append((i, template))
        else:
            exact.setdefault(api.path, []).append((i, template))
        for k, upstream in enumerate(api.upstreams):
            for field, value in (("url", upstream.url), ("path", upstream.path or "")):
                unknown = sorted(set(_PLACEHOLDER.findall(value)) - set(template.params))
                if unknown:
                    problems.append(
                        f"apis[{i}].upstreams[{k}].{field}: placeholder(s) {', '.join(unknown)} "
                        f"not defined by path '{api.path}'"
                    )
    return problems


def _read_file(path: Path) -> Any:
    try:
        text = read_regular_file(path).decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text"], str(path)) from None
    try:
        if path.suffix == ".json":
            return load_unique(text)
        data = safe_load(text) or {}
    except DuplicateName as exc:
        raise ConfigError([f"{path}:{exc.lineno}:{exc.colno}: {exc}"], str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)], str(path)) from None
    except RecursionError:  # the parsers recurse per level of nesting
        raise ConfigError([f"{path}: nested too deeply to read"], str(path)) from None
    except ValueError:  # JSON: Python reads no integer of more than 4,300 digits (sys.get_int_max_str_digits)
        raise ConfigError([f"{_long_number(path, text)}: an integer too long to read"], str(path)) from None
    problem = alias_problem(data)
    if problem:
        raise ConfigError([f"{path}: {problem}"], str(path))
    return data


def _long_number(path: Path, text: str) -> str:
    """``file:line:column`` of the first integer Python will not read, or the file alone."""
    found = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1}}}", text)
    if found is None:
        return str(path)
    start = found.start()
    return f"{path}:{text.count(chr(10), 0, start) + 1}:{start - text.rfind(chr(10), 0, start)}"


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: not valid YAML: what`` (PyYAML's own text names ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "cannot parse"
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def config_warnings(config: GatewayConfig) -> list[str]:
    """What is valid but probably not meant: no API at all; passthrough asked for where it cannot be; a
    trusted proxy network so wide that clients on the internet name their own address."""
    broad = [
        f"trusted_proxies: {network} trusts more addresses than any proxy fleet has (a /{net.prefixlen}): "
        "a client there chooses the address ip-filter, limits and the log see, by sending "
        f"{config.forwarded_header}; list the proxies' own addresses"
        for network in config.trusted_proxies
        if (net := parse_network(network)).prefixlen < (8 if net.version == 4 else 16)
    ]
    if not config.apis:
        return [
            "no WebSocket APIs are configured (an empty file, perhaps): every WebSocket request gets 404 "
            "until APIs are added, e.g. through the management API",
            *broad,
        ]
    return [
        *(
            f"API {api.name}: passthrough: true cannot splice an in-process (asgi:) upstream; it is relayed"
            for api in config.apis
            if api.passthrough is True and any(u.kind == "asgi" for u in api.upstreams)
        ),
        *broad,
    ]


_OWN_ERRORS = ("ws_url", "url_", "asgi_", "tls_", "path_", "policy_", "limit_", "text_")


def union_member(part: object) -> bool:
    """A union member pydantic puts in an error's location (``passthrough.literal['auto']``, ``.bool``)."""
    return isinstance(part, str) and _UNION_MEMBER.match(part) is not None


_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none|[a-z-]+\[.*\]|[A-Z][A-Za-z]*Settings)$")


def describe_errors(errors: Sequence[Any]) -> list[str]:
    """Pydantic's errors as ``apis[1].upstreams[0].url: message``, one problem per field.

    A value every member of a union refused is one problem whose message names what each member
    wanted (``passthrough: Input should be 'auto'; Input should be a valid boolean (got 'AUTO')``).
    """
    fields: dict[tuple[Any, ...], list[Any]] = {}
    for error in errors:
        loc = error["loc"]
        key = len(loc) - 1 if error["type"] == "extra_forbidden" else len(loc)  # an unknown key named "bool" stays
        field = tuple(part for i, part in enumerate(loc) if i >= key or not union_member(part))
        fields.setdefault(field, []).append(error)
    return [_describe(field, found) for field, found in fields.items()]


def _describe(loc: tuple[Any, ...], errors: list[Any]) -> str:
    where = ""
    for part in loc:
        if isinstance(part, str) and len(part) > MAX_NAME:  # an unknown key is echoed: never a huge one
            part = part[:MAX_NAME] + "..."
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    first = errors[0]
    message = "; ".join(dict.fromkeys(error["msg"] for error in errors))
    if first["type"] in {"extra_forbidden"}:
        message = "unknown field"
    elif _credential_field(loc):  # its value is never quoted, not even by a validator's message
        message = redact_values(message, first.get("input"))
    elif first["type"] != "missing" and not first["type"].startswith(_OWN_ERRORS):
        message = f"{message} (got {redact_free_text(shorten(first['input']))})"
    return f"{where or '(top level)'}: {message}"


def _credential_field(loc: tuple[Any, ...]) -> bool:
    """Whether the field is named as a credential (``key_sha256``, a ``password``): the error about a
    wrong value must not quote it (``check`` and start-up write errors to terminals and logs)."""
    name = next((part for part in reversed(loc) if isinstance(part, str)), "")
    return is_credential_name(name) and name not in _NAMED_LIKE_CREDENTIALS


_NAMED_LIKE_CREDENTIALS = frozenset({"passthrough", "max_keys"})  # a mode and a count


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error must not echo a 10 MB field back."""
    text = repr(value) if not isinstance(value, str | bytes) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[:limit] + "..."


__all__ = [
    "ApiConfig",
    "ErrorReplyConfig",
    "GatewayConfig",
    "HandshakeLimitsConfig",
    "ManagementConfig",
    "MessagePoliciesConfig",
    "MessagePolicyEntry",
    "PolicyEntry",
    "ProductConfig",
    "StoreConfig",
    "SubscriptionConfig",
    "SubscriptionKeyConfig",
    "TelemetryConfig",
    "UpstreamConfig",
    "bounded",
    "config_warnings",
    "cross_check",
    "describe_errors",
    "is_asgi_app",
    "mark_policies",
    "parse_config",
    "resolve_apps",
    "shorten",
    "union_member",
]
