"""The process-wide sections of a configuration: the counters' store, telemetry, handshake limits, and
what the management API may do.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ..loading import LoadRefused, allowed_modules
from ..redis_client import parse_redis_url
from ..safe_regex import MAX_HANDSHAKE_PROGRAM_SIZE
from .fields import MIN_TIMEOUT, ConfigModel
from .hosts import HostPattern
from .limits import MAX_APIS, MAX_HANDSHAKE_CONDITIONS, MAX_PREFIX, MAX_URL
from .redis_tls_files import TlsFileProblem, check_redis_tls_files


def _redis_url(url: str) -> str:
    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise PydanticCustomError("policy_redis_url", str(exc)) from None  # no "(got url)": it may hold a password
    try:
        check_redis_tls_files(url)
    except LoadRefused as exc:
        raise PydanticCustomError("tls_refused", str(exc)) from None
    except TlsFileProblem as exc:
        raise PydanticCustomError("tls_redis_file", str(exc)) from None
    return url


class StoreConfig(ConfigModel):
    """Where limits, quotas and concurrency leases are counted."""

    type: Literal["memory", "redis"] = Field(
        default="memory", description="memory: this process only; redis: shared by every worker and host."
    )
    url: Annotated[str, Field(max_length=MAX_URL), AfterValidator(_redis_url)] | None = Field(
        default=None,
        description="redis only: redis://host:port/db (rediss:// for TLS), redis+cluster://host:port,host:port "
        "or redis+sentinel://host:port,host:port/service[/db].",
    )
    prefix: str = Field(
        default="asgi-ws-gw",
        pattern=r"^[A-Za-z0-9_.:-]+$",
        max_length=MAX_PREFIX,
        description="Key namespace: letters, digits and _.:-, at most 64 characters (every counter's key carries "
        "it: a long one is stored, and sent to Redis, once per key and call).",
    )
    timeout: float = Field(
        default=0.5, ge=MIN_TIMEOUT, le=300, description="Seconds to connect to or hear back from Redis (0.01 to 300)."
    )
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
        if self.type == "memory" and self.url:
            # Ignored without a word: a forgotten `type: redis` counted every limit in each process
            # while the file named the Redis that was to share them.
            raise PydanticCustomError("policy_store", "url is for type: redis, and this store is type: memory")
        return self


class TelemetryConfig(ConfigModel):
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
    trust_client_trace: bool | Literal["trusted_proxies"] = Field(
        default=False,
        description="Continue the client's traceparent/tracestate (and baggage): true = any client's; "
        "trusted_proxies = only when the TCP peer is one of trusted_proxies (a proxy that sets or sanitises them); "
        "false = never: a new trace, linked to the client's.",
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
        ge=MIN_TIMEOUT,
        le=300,
        description="Seconds the gateway's own OTLP exporters get to send what they hold at shutdown; past "
        "it they are closed and the rest is dropped, with a WARNING (a collector that is down or never "
        "answers would otherwise hold the process for each signal's OTEL_EXPORTER_OTLP_TIMEOUT and retries).",
    )


class HandshakeLimitsConfig(ConfigModel):
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
    max_regex_weight: int = Field(
        default=MAX_HANDSHAKE_PROGRAM_SIZE,
        ge=64,
        le=1_000_000,
        description="Most RE2 instructions the regular expressions one API's handshake may run weigh together "
        "(its policies', the global ones' and its products': conditions' matches, validate-jwt claims, "
        "check-header patterns; each pattern 64 at least; default 4000); more: the configuration is refused. "
        "Each is matched against what a client sends: an API of thousands held a worker for minutes a handshake. "
        "Set only in the configuration file, never by the management API.",
    )
    max_conditions: int = Field(
        default=MAX_HANDSHAKE_CONDITIONS,
        ge=1,
        le=1_000_000,
        description="Most conditions one API's handshake may test (its policies', the global ones' and its "
        "products': choose branches, validate-jwt claims; default 4096); more: the configuration is refused. "
        "Each is tested against what a client sends, on the worker's event loop: 16 products of 20,000 held a "
        "worker seconds a handshake. Set only in the configuration file, never by the management API.",
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
        ge=MIN_TIMEOUT,
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


class ManagementConfig(ConfigModel):
    """What the management API may do beyond changing APIs, products and subscriptions."""

    allowed_asgi_upstreams: list[Annotated[str, Field(max_length=MAX_URL), AfterValidator(_allowed_module)]] = Field(
        default_factory=list,
        max_length=MAX_APIS,
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


__all__ = [
    "HandshakeLimitsConfig",
    "ManagementConfig",
    "StoreConfig",
    "TelemetryConfig",
]
