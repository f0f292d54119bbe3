"""A WebSocket API's models: :class:`ApiConfig`, its backends (:class:`UpstreamConfig`) and its message
policies (:class:`MessagePoliciesConfig`, :class:`ErrorReplyConfig`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ..loading import LoadRefused, check_import
from .ca_bundles import CaBundleProblem, checked_ca_bundle
from .client_certificates import CertificateProblem, ClientCertificate, checked_certificate
from .fields import (
    DAY,
    MAX_SECONDS,
    MIN_TIMEOUT,
    POLICIES_DOC,
    ConfigModel,
    CookieDomain,
    CookieName,
    CookiePath,
    MessagePolicies,
    Name,
    Policies,
    Text,
    Url,
)
from .limits import (
    MAX_CAP,
    MAX_FAILURES,
    MAX_ITEMS,
    MAX_NAME,
    MAX_POLICIES,
    MAX_SETTING,
    MAX_UPSTREAMS,
    MAX_URL,
    MIB,
    bounded,
)
from .upstream_networks import ApiUpstreamNetworksConfig


class ErrorReplyConfig(ConfigModel):
    """The message a dropped message's sender gets (when the policy answers it)."""

    format: Literal["json", "text"] = Field(default="json", description="json: a JSON object; text: a text template.")
    template: Annotated[
        Annotated[str, Field(max_length=MAX_SETTING)] | Annotated[dict[str, Any], Field(max_length=MAX_ITEMS)] | None,
        AfterValidator(bounded),
    ] = Field(
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


class MessagePoliciesConfig(ConfigModel):
    """Policies on every message of open connections, per direction (see docs/message-policies.md)."""

    inbound: MessagePolicies = Field(default_factory=list, description="Client to upstream, in order.")
    outbound: MessagePolicies = Field(default_factory=list, description="Upstream to client, in order.")
    error_reply: ErrorReplyConfig | None = Field(
        default=None, description="How dropped messages are answered (the nearest scope that sets it wins)."
    )


class UpstreamConfig(ConfigModel):
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
        description="asgi: upstreams only: the path the in-process app sees (default: the client's path as the API "
        "matched it, less the root path it was routed under).",
    )
    ca_bundle: Url | None = Field(
        default=None, description="wss:// only: a PEM file of CA certificates to verify the upstream with."
    )
    verify_tls: bool = Field(default=True, description="wss:// only: verify the upstream's certificate.")
    client_cert: Url | None = Field(
        default=None,
        description="wss:// only: a PEM file of the client certificate (then its chain) presented to the "
        "upstream's own host and port (mutual TLS), never to a host set-backend-service picks.",
    )
    client_key: Url | None = Field(
        default=None, description="wss:// only: a PEM file of client_cert's private key (default: in client_cert)."
    )
    client_key_password_env: Name | None = Field(
        default=None,
        description="wss:// only: the environment variable holding the passphrase of an encrypted private key.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CAP,
        description="Connections to this backend at once, its connects under way included (per gateway process: "
        "each worker of --workers has its own count), 1 to 10000000. A backend at its cap is skipped in balancing "
        "order; when every backend is, the handshake is refused with 503 upstream_full and Retry-After. "
        "Default (null): no cap.",
    )
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
        if self.kind != "wss" and self._client_fields:
            raise PydanticCustomError(
                "tls_option", "client_cert, client_key and client_key_password_env apply to wss:// upstreams only"
            )
        if self.client_cert is None and self._client_fields:
            raise PydanticCustomError("tls_option", "client_key and client_key_password_env need client_cert")
        if self.ca_bundle is not None:
            try:
                checked_ca_bundle(self.ca_bundle)
            except LoadRefused as exc:
                raise PydanticCustomError("tls_refused", str(exc)) from None
            except CaBundleProblem as exc:
                raise PydanticCustomError("tls_ca_bundle", "ca_bundle: {problem}", {"problem": str(exc)}) from None
        certificate = self.client_certificate
        if certificate is not None:
            try:
                checked_certificate(certificate)
            except LoadRefused as exc:
                raise PydanticCustomError("tls_refused", str(exc)) from None
            except CertificateProblem as exc:  # fixed words: no file content, no passphrase
                raise PydanticCustomError("tls_client_certificate", str(exc)) from None
        if self.path is not None and self.kind != "asgi":
            raise PydanticCustomError("path_option", "path applies to asgi: upstreams only")
        return self

    @functools.cached_property
    def kind(self) -> Literal["ws", "wss", "asgi"]:
        # Read at every handshake (three times): worked out once (~3.5 k instructions a read as a property
        # of a pydantic model: its ``__getattr__`` hook, the URL read twice, two ``startswith``). The model
        # is frozen; kept in its ``__dict__``, which pydantic's ``__eq__`` and ``model_dump`` leave out.
        url = self.url
        if url.startswith("wss://"):
            return "wss"
        return "ws" if url.startswith("ws://") else "asgi"

    @property
    def _client_fields(self) -> bool:
        return any(value is not None for value in (self.client_cert, self.client_key, self.client_key_password_env))

    @property
    def client_certificate(self) -> ClientCertificate | None:
        """What a connection to this upstream's own host presents (mutual TLS), or None."""
        if self.client_cert is None:
            return None
        return ClientCertificate(self.client_cert, self.client_key, self.client_key_password_env)

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


MAX_MESSAGE_SIZE = 1024 * MIB
"""The largest ``max_message_size``: a relayed message is held whole in a worker's memory. Before, any
integer passed (``10**30``), and every compressed message the relay inflated was an ``OverflowError``
traceback (zlib takes at most a C ``ssize_t``) and a 1011."""


def _held_in_memory(size: int) -> int:
    # A validator, not ``le``: the published JSON Schema stays as generated (schema/gateway.schema.json).
    if size > MAX_MESSAGE_SIZE:
        raise PydanticCustomError(
            "less_than_equal",
            "Input should be less than or equal to {le} (1 GiB: a relayed message is held whole in memory)",
            {"le": MAX_MESSAGE_SIZE},
        )
    return size


def _url_or_mapping(schema: dict[str, Any]) -> None:
    """The published schema of ``upstreams``: each entry its URL or an :class:`UpstreamConfig` mapping, as
    ``UpstreamConfig._check_url`` takes it. With the mapping alone, an editor flagged every
    ``upstreams: ["ws://..."]``, the shape of nearly every example."""
    url = {"type": "string", "maxLength": MAX_URL, "description": "The upstream's url, alone."}
    schema["items"] = {"anyOf": [url, schema["items"]]}


class ApiConfig(ConfigModel):
    """A WebSocket API: a public path the gateway owns and the backends it proxies to."""

    name: Annotated[Name, Field(description="Unique identifier (logs, metrics, management).")]
    display_name: Text | None = Field(default=None, description="Human name; defaults to name.")
    path: Url = Field(description="Public path: exact (/ws/chat) or a template (/ws/rooms/{room}).")
    upstreams: list[UpstreamConfig] = Field(
        min_length=1,
        max_length=MAX_UPSTREAMS,
        description="Backends, tried in balancing order.",
        json_schema_extra=_url_or_mapping,
    )
    balancing: Literal["round-robin", "least-connections"] = "round-robin"
    forward_query: bool = Field(default=True, description="Append the client's query string upstream.")
    connect_timeout: float = Field(
        default=10.0,
        ge=MIN_TIMEOUT,
        le=300,  # as handshake_limits.policy_timeout: no client waits longer for its 101
        description="Seconds to open one upstream (TCP+TLS+handshake), 0.01 to 300.",
    )
    max_connecting: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CAP,
        description="Upstream handshakes of this API in flight at once, to all its backends together (per gateway "
        "process), 1 to 10000000; the next wait their turn in order, each at most connect_timeout, then 503 "
        "upstream_queue_timeout with Retry-After. Default (null): no limit.",
    )
    dns_ttl: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds an upstream host name's addresses are used before it is resolved again (the system "
        "resolver gives no TTL); 0: resolved for every handshake.",
    )
    upstream_networks: ApiUpstreamNetworksConfig = Field(
        default_factory=ApiUpstreamNetworksConfig,
        description="This API's own rule on the addresses its connections may reach: allow narrows the "
        "top-level upstream_networks.allow, deny adds to its deny (see docs/security.md). Default: none.",
    )
    max_message_size: Annotated[int, AfterValidator(_held_in_memory)] = Field(
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
        le=DAY,
        description="Seconds between keepalive pings to the upstream (null: off; 0.1 to 86400); spliced, each "
        "side silent for this long is pinged.",
    )
    ping_timeout: float | None = Field(
        default=20.0,
        ge=MIN_TIMEOUT,
        le=3600,
        description="Seconds to wait for a pong before the upstream is declared dead (1011), 0.01 to 3600.",
    )
    close_timeout: float = Field(
        default=5.0,
        ge=MIN_TIMEOUT,
        le=300,
        description="Seconds the upstream gets to finish a closing handshake before TCP is dropped; also the bound "
        "on each of the gateway's own closing steps (0.01 to 300). A spliced closing handshake waits another "
        "close_timeout each time a side still reading what is queued to it took some in since the last "
        "(a slow reader's backlog and the close frame behind it), 32 times at most and not past 16 MiB (and a "
        "message) taken in by a side since the close began, except at the server's shutdown.",
    )
    passthrough: Literal["auto"] | bool = Field(
        default="auto",
        description="Splice the client's and the upstream's TCP streams after the handshake when the server "
        "offers it (asgi_ws_gateway.server:GatewayWebSocketProtocol, what 'run' serves with), every upstream is "
        "ws:// or wss:// and no message policy applies; extensions are then negotiated end to end. 'auto' "
        "(default) and true splice whenever they can (true also warns where it cannot); false always relays "
        "(see docs/performance.md).",
    )
    # At least 0.1 s: 1e-300 closed every connection before its first message.
    idle_timeout: float | None = Field(
        default=None,
        ge=0.1,
        le=DAY,
        description="Close with 1001 after this many seconds with no message either way (0.1 to 86400).",
    )
    max_lifetime: float | None = Field(
        default=None,
        ge=0.1,
        le=MAX_SECONDS,
        description="Close with 1001 this many seconds after the connection opened (0.1 to 31536000, a year).",
    )
    unhealthy_after: int = Field(
        default=3,
        ge=1,
        le=MAX_FAILURES,  # 10**9 was valid: passive health off in all but name, and nothing said so
        description="Consecutive failures (a failed connect, or a connection the backend failed within 5 s of its "
        "101) after which a backend cools down, 1 to 100 (to never skip a backend, set cooldown: 0).",
    )
    cooldown: float = Field(
        default=10.0, ge=0, le=DAY, description="Seconds a failing backend is skipped (0 to 86400)."
    )
    response_cookies: list[CookieName] | None = Field(
        default=None,
        max_length=MAX_ITEMS,
        description="The cookies this API's upstreams may set on the gateway's origin (Set-Cookie in their 101 "
        "or refusal), by name, compared as policies compare cookie names; any other is dropped, and so is a "
        "cookie a policy of any API reads (a validate-jwt cookie token, a {cookie.*} template), listed or not. "
        "Unset (default): any cookie but those. [] lets none through.",
    )
    response_cookie_domains: list[CookieDomain] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="The Domain attributes this API's upstreams may give a cookie (the cookie then reaches every "
        "host under it), or a domain under one, compared without a leading dot and case. Any other Domain is "
        "removed: the cookie is "
        "the request host's alone. A top-level domain or a public suffix (com, co.uk, github.io) is refused. "
        "Default: none.",
    )
    response_cookie_paths: list[CookiePath] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="The Path attributes beyond the API's own path ('/' for the whole origin) this API's "
        "upstreams may give a cookie. Any other Path, or none, becomes the API's path (its literal "
        "segments: /ws/rooms of /ws/rooms/{room}), and a __Host- cookie is dropped unless '/' is listed. "
        "Default: none.",
    )
    policies: Policies = Field(default_factory=list, description=POLICIES_DOC + " Run after inherited ones.")
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


__all__ = [
    "ApiConfig",
    "ErrorReplyConfig",
    "MessagePoliciesConfig",
    "UpstreamConfig",
]
