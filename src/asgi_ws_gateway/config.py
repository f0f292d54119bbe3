"""The gateway's configuration: typed models, loading from YAML/JSON/dict, errors by field path.

A configuration is validated eagerly: :func:`load_config` either returns a :class:`GatewayConfig`
whose cross-field rules hold (unique names, non-overlapping paths, upstream URL placeholders that
the API path defines) or raises :class:`~asgi_ws_gateway.errors.ConfigError` listing every problem
as ``field.path: what is wrong``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .forwarded import parse_network
from .redis_client import parse_redis_url
from .routing import PathTemplate, TemplateError, overlapping

MIB = 1024 * 1024
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def _policy_entry(value: Any) -> Any:
    """A policy entry: ``{type-name: settings}`` in a file; in code also a policy object or async function."""
    if isinstance(value, Mapping):
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
"""``{validate-jwt: {...}}``; in code, also a ``Policy`` object or a plain ``async def f(context)``."""

_POLICIES_DOC = "Handshake policies, run in order (see docs/policies.md)."

_MESSAGE_POLICY_MARK = {"title": "asgi-ws-gateway message policy"}  # replaced by a $ref to MessagePolicy
MessagePolicyEntry = Annotated[Any, AfterValidator(_policy_entry), WithJsonSchema(_MESSAGE_POLICY_MARK)]
"""``{limit-message-size: {...}}``; in code, also a ``MessagePolicy`` or an ``async def f(message)`` transform."""


class ErrorReplyConfig(_Model):
    """The message a dropped message's sender gets (when the policy answers it)."""

    format: Literal["json", "text"] = Field(default="json", description="json: a JSON object; text: a text template.")
    template: str | dict[str, Any] | None = Field(
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

    inbound: list[MessagePolicyEntry] = Field(default_factory=list, description="Client to upstream, in order.")
    outbound: list[MessagePolicyEntry] = Field(default_factory=list, description="Upstream to client, in order.")
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

    url: str = Field(
        description="ws://host[:port]/path, wss://host[:port]/path, or asgi:module:attribute "
        "(an ASGI app run in this process). {name} placeholders take the API path's parameters.",
    )
    path: str | None = Field(
        default=None,
        description="asgi: upstreams only: the path the in-process app sees (default: the client's path).",
    )
    ca_bundle: str | None = Field(
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
            return {"url": "asgi:", **data} if url is None else data
        if isinstance(url, str) and not url.startswith(("ws://", "wss://", "asgi:")):
            raise PydanticCustomError("ws_url", "'{url}' is not a ws://, wss:// or asgi: URL", {"url": url})
        return data

    @model_validator(mode="after")
    def _resolve_app(self) -> UpstreamConfig:
        if self.kind == "asgi" and self.app is None:
            target = self.url.removeprefix("asgi:")
            module_name, _, attr = target.partition(":")
            if not module_name or not attr:
                raise PydanticCustomError(
                    "asgi_url", "'{url}' must name an app as asgi:module:attribute", {"url": self.url}
                )
            try:
                app = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise PydanticCustomError(
                    "asgi_import", "cannot import '{target}': {error}", {"target": target, "error": str(exc)}
                ) from exc
            object.__setattr__(self, "app", app)
        if self.kind != "wss" and (self.ca_bundle is not None or not self.verify_tls):
            raise PydanticCustomError("tls_option", "ca_bundle and verify_tls apply to wss:// upstreams only")
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
        """How logs and errors name this backend (never includes credentials or query)."""
        if self.kind == "asgi":
            return self.url if self.url != "asgi:" else f"asgi:{getattr(self.app, '__name__', 'app')}"
        return self.url.split("?", 1)[0]


class ApiConfig(_Model):
    """A WebSocket API: a public path the gateway owns and the backends it proxies to."""

    name: Annotated[str, Field(pattern=_NAME, description="Unique identifier (logs, metrics, management).")]
    display_name: str | None = Field(default=None, description="Human name; defaults to name.")
    path: str = Field(description="Public path: exact (/ws/chat) or a template (/ws/rooms/{room}).")
    upstreams: list[UpstreamConfig] = Field(min_length=1, description="Backends, tried in balancing order.")
    balancing: Literal["round-robin", "least-connections"] = "round-robin"
    forward_query: bool = Field(default=True, description="Append the client's query string upstream.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to open one upstream (TCP+TLS+handshake).")
    max_message_size: int = Field(
        default=MIB,
        gt=0,
        description="Bytes; a larger message closes its sender with 1009, its peer with 1001.",
    )
    compression: Literal["deflate"] | None = Field(
        default="deflate", description="permessage-deflate offered on the upstream leg (null: none)."
    )
    ping_interval: float | None = Field(
        default=20.0, gt=0, description="Seconds between keepalive pings to the upstream (null: off)."
    )
    ping_timeout: float | None = Field(
        default=20.0,
        gt=0,
        description="Seconds to wait for a pong before the upstream is declared dead (1011).",
    )
    close_timeout: float = Field(
        default=5.0, gt=0, description="Seconds the upstream gets to finish a closing handshake before TCP is dropped."
    )
    passthrough: bool = Field(
        default=False,
        description="Splice the client's and the upstream's TCP streams after the handshake, when the server "
        "offers it (asgi_ws_gateway.server:PassthroughWebSocketProtocol) and no message policy applies; "
        "extensions are then negotiated end to end (see docs/performance.md).",
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
    policies: list[PolicyEntry] = Field(default_factory=list, description=_POLICIES_DOC + " Run after inherited ones.")
    message_policies: MessagePoliciesConfig = Field(
        default_factory=MessagePoliciesConfig, description="Message policies, run after inherited ones."
    )
    skip_policies: list[str] = Field(
        default_factory=list,
        description="Inherited (global or product) handshake or message policies this API opts out of, "
        "by type or by their 'name'.",
    )

    @property
    def title(self) -> str:
        return self.display_name or self.name


class ProductConfig(_Model):
    """A product: a group of APIs that subscriptions grant access to, with its own policies."""

    name: Annotated[str, Field(pattern=_NAME, description="Unique identifier.")]
    display_name: str | None = None
    apis: list[str] = Field(default_factory=list, description="Names of the APIs in this product.")
    subscription_required: bool = Field(
        default=True, description="A subscription key is needed (false: an open product, its policies apply to all)."
    )
    policies: list[PolicyEntry] = Field(default_factory=list, description=_POLICIES_DOC)
    message_policies: MessagePoliciesConfig = Field(default_factory=MessagePoliciesConfig)


class SubscriptionConfig(_Model):
    """A subscription to a product. Only the SHA-256 of its key is stored."""

    id: Annotated[str, Field(pattern=_NAME, description="Unique identifier ({subscription.id}).")]
    product: str = Field(description="The product this subscription grants.")
    name: str | None = Field(default=None, description="Human name (the subscriber).")
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


class GatewayConfig(_Model):
    """Everything the gateway needs: its WebSocket APIs and process-wide settings."""

    apis: list[ApiConfig] = Field(default_factory=list)
    drain_grace_period: float = Field(
        default=10.0, ge=0, description="Seconds open connections get to close when the gateway drains."
    )
    drain_close_code: Literal[1001, 1012] = Field(
        default=1001, description="Close code sent when draining: 1001 going away or 1012 service restart."
    )
    policies: list[PolicyEntry] = Field(
        default_factory=list, description=_POLICIES_DOC + " Global: they run first, for every API."
    )
    message_policies: MessagePoliciesConfig = Field(
        default_factory=MessagePoliciesConfig, description="Global message policies: they run first, for every API."
    )
    products: list[ProductConfig] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (generated from the models)."""
    from .policies.registry import message_policies_json_schema, policies_json_schema

    schema: dict[str, Any] = mark_policies(GatewayConfig.model_json_schema())
    schema.setdefault("$defs", {}).update(policies_json_schema())
    schema["$defs"].update(message_policies_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asgi-ws-gateway configuration"
    return schema


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


def load_config(source: GatewayConfig | Mapping[str, Any] | str | Path) -> GatewayConfig:
    """Load and validate a configuration.

    Args:
        source: a :class:`GatewayConfig`, a mapping, or the path of a ``.yaml``/``.yml``/``.json`` file.

    Raises:
        ConfigError: with every problem found, each as ``field.path: message``.
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
            raise ConfigError([_describe(error) for error in exc.errors()], origin) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError(problems, origin)
    return config


def cross_check(config: GatewayConfig) -> list[str]:
    """Rules that span fields: unique names, valid and non-overlapping paths, known placeholders."""
    problems: list[str] = []
    seen_names: dict[str, int] = {}
    templates: list[tuple[int, PathTemplate]] = []
    for i, api in enumerate(config.apis):
        if api.name in seen_names:
            problems.append(f"apis[{i}].name: duplicate API name '{api.name}' (also apis[{seen_names[api.name]}])")
        seen_names.setdefault(api.name, i)
        try:
            template = PathTemplate(api.path)
        except TemplateError as exc:
            problems.append(f"apis[{i}].path: {exc}")
            continue
        for j, other in templates:
            if overlapping(template, other):
                problems.append(f"apis[{i}].path: '{api.path}' overlaps apis[{j}].path '{other.pattern}'")
        templates.append((i, template))
        for k, upstream in enumerate(api.upstreams):
            for field, value in (("url", upstream.url), ("path", upstream.path or "")):
                unknown = sorted(set(_PLACEHOLDER.findall(value)) - set(template.params))
                if unknown:
                    problems.append(
                        f"apis[{i}].upstreams[{k}].{field}: placeholder(s) {', '.join(unknown)} "
                        f"not defined by path '{api.path}'"
                    )
    from .policies.registry import check_policies  # policies import config: a deferred import

    problems.extend(check_policies(config))
    return problems


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror}"], str(path)) from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"], str(path)) from None


_OWN_ERRORS = ("ws_url", "asgi_", "tls_", "path_", "policy_")


def _describe(error: Any) -> str:
    """Render one pydantic error as ``apis[1].upstreams[0].url: message``."""
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = error["msg"]
    if error["type"] in {"extra_forbidden"}:
        message = "unknown field"
    elif error["type"] != "missing" and not error["type"].startswith(_OWN_ERRORS):
        message = f"{message} (got {error['input']!r})"
    return f"{where or '(top level)'}: {message}"


__all__ = [
    "ApiConfig",
    "ErrorReplyConfig",
    "GatewayConfig",
    "MessagePoliciesConfig",
    "MessagePolicyEntry",
    "PolicyEntry",
    "ProductConfig",
    "StoreConfig",
    "SubscriptionConfig",
    "SubscriptionKeyConfig",
    "TelemetryConfig",
    "UpstreamConfig",
    "cross_check",
    "json_schema",
    "load_config",
    "mark_policies",
]
