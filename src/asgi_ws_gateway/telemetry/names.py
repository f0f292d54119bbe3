"""Every span name, attribute key and metric instrument the gateway emits (docs/telemetry.md lists them).

Attribute keys reuse OpenTelemetry semantic conventions where one exists (``http.route``,
``client.address``, ``server.address``, ``network.protocol.name``, ``error.type``, ...); the rest
live in the ``ws_gateway.`` namespace. Metric attributes are bounded: API name, route template,
configured backend, status, close code, policy name; never a raw path, a client address or a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

SCOPE = "asgi_ws_gateway"
"""Instrumentation scope of every tracer, meter and logger."""
DEFAULT_SERVICE_NAME = "asgi-ws-gateway"
"""``service.name`` of the gateway's own providers unless ``OTEL_SERVICE_NAME`` (or the resource attributes) set one."""

# -- span names (suffixed with the API name: a bounded set) ----------------------------------------
SPAN_HANDSHAKE = "GET"
"""The handshake span is ``GET <route>``: the HTTP server-span convention ``{method} {http.route}``."""
SPAN_UPSTREAM_CONNECT = "upstream connect"
SPAN_CONNECTION = "connection"
EVENT_MESSAGE = "message"
LOG_EVENT_ACCESS = "ws_gateway.access"

# -- attribute keys: semantic conventions ----------------------------------------------------------
HTTP_ROUTE = "http.route"
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
CLIENT_ADDRESS = "client.address"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_TRANSPORT = "network.transport"
NETWORK_TRANSPORT_UNIX = "unix"
CLIENT_PORT = "client.port"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
USER_AGENT = "user_agent.original"
PROTOCOL_NAME = "network.protocol.name"
PROTOCOL_VERSION = "network.protocol.version"
URL_FULL = "url.full"
ERROR_TYPE = "error.type"
ENDUSER_ID = "enduser.id"
DB_SYSTEM = "db.system"
DB_OPERATION = "db.operation"
"""A store's call (``redis hit``): which store, which of its operations."""

# -- attribute keys: the gateway's own -------------------------------------------------------------
API = "ws_gateway.api.name"
OUTCOME = "ws_gateway.handshake.outcome"
POLICY = "ws_gateway.policy.name"
DENIAL_DETAIL = "ws_gateway.denial.detail"
POLICY_ACTION = "ws_gateway.policy.action"
POLICY_REASON = "ws_gateway.policy.reason"
UNCHECKED_POLICIES = "ws_gateway.handshake.unchecked_policies"
SUBPROTOCOL = "ws_gateway.subprotocol"
SUBSCRIPTION = "ws_gateway.subscription"
BACKEND = "ws_gateway.backend"
ATTEMPT = "ws_gateway.upstream.attempt"
ATTEMPTS = "ws_gateway.upstream.attempts"
# The first attempt recorded on the handshake span (``attempt_spans: failover``): the SERVER span's
# own url.full/server.*/http.response.status_code describe the client's request, so these are apart.
UPSTREAM_URL = "ws_gateway.upstream.url"
UPSTREAM_ADDRESS = "ws_gateway.upstream.address"
UPSTREAM_PORT = "ws_gateway.upstream.port"
UPSTREAM_STATUS = "ws_gateway.upstream.status_code"
UPSTREAM_ERROR = "ws_gateway.upstream.error_type"
HANDSHAKE_TRACE_ID = "ws_gateway.handshake.trace_id"
HANDSHAKE_SPAN_ID = "ws_gateway.handshake.span_id"
CLOSE_SIDE = "ws_gateway.close.side"
CLOSE_CODE = "ws_gateway.close.code"
CLOSE_REASON = "ws_gateway.close.reason"
MESSAGES_IN = "ws_gateway.client_to_upstream.messages"
BYTES_IN = "ws_gateway.client_to_upstream.bytes"
MESSAGES_OUT = "ws_gateway.upstream_to_client.messages"
BYTES_OUT = "ws_gateway.upstream_to_client.bytes"
DIRECTION = "ws_gateway.message.direction"
MESSAGE_TYPE = "ws_gateway.message.type"
MESSAGE_SIZE = "ws_gateway.message.size"
SIZE_CLASS = "ws_gateway.message.size_class"
COOKIE_REASON = "ws_gateway.cookie.reason"
"""Why the gateway dropped or narrowed an upstream's ``Set-Cookie`` (``ws_gateway.cookies.changed``)."""
TELEMETRY_SIGNAL = "ws_gateway.telemetry.signal"
"""``traces``, ``metrics`` or ``logs``: what ``ws_gateway.telemetry.dropped`` counted."""

PROTOCOL = "websocket"
"""Value of ``network.protocol.name``."""
PROTOCOL_VERSION_DEFAULT = "13"
"""Value of ``network.protocol.version`` when the client sent no ``Sec-WebSocket-Version`` (RFC 6455's)."""
TO_UPSTREAM = "client_to_upstream"
TO_CLIENT = "upstream_to_client"
Outcome = Literal["accepted", "denied", "error", "abandoned"]

SIZE_CLASSES = (
    "0-63",
    "64-255",
    "256-1023",
    "1024-4095",
    "4096-16383",
    "16384-65535",
    "65536-262143",
    "262144-1048575",
    "1048576+",
)
"""Message size classes in bytes (values of ``ws_gateway.message.size_class``): powers of 4 from 64 B."""


OTHER = "_OTHER"
"""A metric attribute's value for a peer-chosen number outside the set it keeps (OpenTelemetry's spelling,
as for ``http.request.method``)."""
_HTTP_STATUSES = frozenset(HTTPStatus)


def close_code_value(code: int) -> int | str:
    """The ``ws_gateway.close.code`` of a metric: one of a fixed set, whatever code a peer sent.

    The codes RFC 6455 and the IANA registry define, 1000-1015, as themselves (1006: the side
    vanished without a close frame); the ranges for libraries and for applications folded into
    ``"3xxx"`` and ``"4xxx"``; anything else (no peer may send it) :data:`OTHER`. So a side that sends
    one close code after another adds at most 19 series per API and side (spans and the access log
    keep the exact code).
    """
    if 1000 <= code <= 1015:
        return int(code)  # int(): wsproto reports its CloseReason enum
    if 3000 <= code <= 4999:
        return "3xxx" if code < 4000 else "4xxx"
    return OTHER


def status_value(status: int) -> int | str:
    """The ``http.response.status_code`` of a metric: a status in the IANA registry (``http.HTTPStatus``)
    as itself, another (an upstream's refusal is relayed as it came) folded into its class, ``"4xx"``
    or ``"5xx"`` (:data:`OTHER` outside 100-599)."""
    if status in _HTTP_STATUSES:
        return int(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def size_class_index(slot: int) -> int:
    """The :data:`SIZE_CLASSES` index of a ``RelayStats.sizes_*`` slot (sizes of that bit length)."""
    return 0 if slot <= 6 else min((slot - 7) // 2 + 1, len(SIZE_CLASSES) - 1)


# -- metric instruments ----------------------------------------------------------------------------
InstrumentKind = Literal["histogram", "observable_counter", "observable_up_down_counter"]

_BASE = (API, HTTP_ROUTE, PROTOCOL_NAME)
_BACKEND = (API, BACKEND, SERVER_ADDRESS, SERVER_PORT, PROTOCOL_NAME)
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Seconds; the HTTP semantic conventions' request-duration buckets."""
CONNECTION_BUCKETS = (0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
"""Seconds; from 100 ms to a day: WebSocket connections live long."""


@dataclass(frozen=True)
class Instrument:
    """One metric instrument: what docs/telemetry.md documents and a test checks after a session."""

    name: str
    kind: InstrumentKind
    unit: str
    description: str
    attributes: tuple[str, ...]
    optional: tuple[str, ...] = ()
    """Attributes set only on some points (``error.type`` on failures)."""
    buckets: tuple[float, ...] | None = None


ACTIVE_CONNECTIONS = Instrument(
    "ws_gateway.active_connections", "observable_up_down_counter", "{connection}",
    "Open proxied WebSocket connections (accepted, not yet closed).", _BASE,
)  # fmt: skip
UPSTREAM_CONNECTIONS = Instrument(
    "ws_gateway.upstream.connections", "observable_up_down_counter", "{connection}",
    "Connections to each configured backend, open or being opened: what its max_connections caps.", _BACKEND,
)  # fmt: skip
HANDSHAKES = Instrument(
    "ws_gateway.handshakes", "observable_counter", "{handshake}",
    "Finished handshakes by outcome and HTTP status (101 when accepted).",
    (*_BASE, OUTCOME, HTTP_STATUS), (ERROR_TYPE,),
)  # fmt: skip
HANDSHAKE_DURATION = Instrument(
    "ws_gateway.handshake.duration", "histogram", "s",
    "Time from the client's upgrade request to accept or denial (policies and upstream connect included).",
    (*_BASE, OUTCOME, HTTP_STATUS), (ERROR_TYPE,), HANDSHAKE_BUCKETS,
)  # fmt: skip
UPSTREAM_CONNECT_DURATION = Instrument(
    "ws_gateway.upstream.connect.duration", "histogram", "s",
    "Time to open one backend (TCP, TLS, WebSocket handshake), per attempt.",
    _BACKEND, (ERROR_TYPE, HTTP_STATUS), HANDSHAKE_BUCKETS,
)  # fmt: skip
UPSTREAM_CONNECT_FAILURES = Instrument(
    "ws_gateway.upstream.connect.failures", "observable_counter", "{attempt}",
    "Backend connect attempts that failed: unreachable, timed out, or refused by the upstream.",
    (*_BACKEND, ERROR_TYPE), (HTTP_STATUS,),
)  # fmt: skip
UPSTREAM_ADDRESS_FAILURES = Instrument(
    "ws_gateway.upstream.address.failures", "observable_counter", "{attempt}",
    "Connects to one address of an upstream host name that failed (timed out, refused, TLS, a certificate that "
    "does not verify), by error type: that address is left out until the name is resolved again.",
    (ERROR_TYPE,),
)  # fmt: skip
CONNECTION_DURATION_METRIC = Instrument(
    "ws_gateway.connection.duration", "histogram", "s",
    "Lifetime of proxied connections, from accept to both sides closed.",
    (*_BASE, CLOSE_SIDE), (), CONNECTION_BUCKETS,
)  # fmt: skip
CONNECTION_CLOSES = Instrument(
    "ws_gateway.connection.closes", "observable_counter", "{connection}",
    "Closed connections by the side that closed first and its close code.",
    (*_BASE, CLOSE_SIDE, CLOSE_CODE),
)  # fmt: skip
MESSAGES = Instrument(
    "ws_gateway.messages", "observable_counter", "{message}",
    "Messages relayed, by direction and type (text or binary); counted live, open connections included.",
    (*_BASE, DIRECTION, MESSAGE_TYPE),
)  # fmt: skip
IO = Instrument(
    "ws_gateway.io", "observable_counter", "By",
    "Message payload bytes relayed, by direction and type (UTF-8 length for text).",
    (*_BASE, DIRECTION, MESSAGE_TYPE),
)  # fmt: skip
MESSAGE_SIZES = Instrument(
    "ws_gateway.message.size_distribution", "observable_counter", "{message}",
    "Messages relayed by direction and payload size class (powers of 4 from 64 B): the size distribution.",
    (*_BASE, DIRECTION, SIZE_CLASS),
)  # fmt: skip
POLICY_DENIALS = Instrument(
    "ws_gateway.policy.denials", "observable_counter", "{handshake}",
    "Handshakes a policy denied, by policy and HTTP status.",
    (*_BASE, POLICY, HTTP_STATUS),
)  # fmt: skip
POLICY_ACTIONS = Instrument(
    "ws_gateway.policy.actions", "observable_counter", "{action}",
    "Actions message policies took (drop, close, delay, refresh), by policy, action, direction and reason.",
    (*_BASE, POLICY, POLICY_ACTION, DIRECTION, POLICY_REASON),
)  # fmt: skip
POLICY_UNCHECKED = Instrument(
    "ws_gateway.policy.unchecked", "observable_counter", "{handshake}",
    "Handshakes a policy admitted without checking them: its store failed and it fails open.",
    (*_BASE, POLICY),
)  # fmt: skip
COOKIES_CHANGED = Instrument(
    "ws_gateway.cookies.changed", "observable_counter", "{header}",
    "Set-Cookie headers of upstreams' answers (a 101 or a relayed refusal) the gateway dropped or narrowed, "
    "by reason: read_by_policy, not_in_response_cookies, host_prefix_dropped, api_path_too_long (dropped); "
    "domain_removed, path_narrowed (narrowed).",
    (*_BASE, COOKIE_REASON),
)  # fmt: skip
CONNECTIONS_SHED = Instrument(
    "ws_gateway.connections.shed", "observable_counter", "{connection}",
    "Connections closed before sending a request head to keep file descriptors for new ones: the process "
    "was near its open-file limit (a flood of idle connections).",
    (),
)  # fmt: skip
STORE_FAILURES = Instrument(
    "ws_gateway.store.failures", "observable_counter", "{operation}",
    "Limit-store calls that failed (a rate limit or quota unchecked, a lease not taken or not given back), by "
    "store, operation and error type.",
    (DB_SYSTEM, DB_OPERATION, ERROR_TYPE),
)  # fmt: skip
SERVER_REFUSALS = Instrument(
    "ws_gateway.server.refusals", "observable_counter", "{request}",
    "Requests the gateway's server answered itself, before any API saw them, by HTTP status: a request head "
    "it could not parse (400), too large (414, 431) or too slow (408), a WebSocket handshake header it refused.",
    (HTTP_STATUS,),
)  # fmt: skip
JWKS_FAILURES = Instrument(
    "ws_gateway.jwks.failures", "observable_counter", "{fetch}",
    "JWKS fetches that failed (validate-jwt's keys: none yet, 503 for every token; or cached, growing stale), "
    "by error type: timeout, fetch (no answer, or not a 200), invalid (no usable key set).",
    (ERROR_TYPE,),
)  # fmt: skip
LOG_DROPPED = Instrument(
    "ws_gateway.log.dropped", "observable_counter", "{line}",
    "Log lines dropped because their destination (stdout, stderr) took none for a while: a log reader stalled or "
    "gone. The output says how many in a line of its own once there is room again.",
    (),
)  # fmt: skip
TELEMETRY_DROPPED = Instrument(
    "ws_gateway.telemetry.dropped", "observable_counter", "{item}",
    "Spans, metric points and log records the gateway's own OTLP exporters lost, by signal and error type: "
    "queue_full (a batch processor's queue full: the collector too slow or down), export_failed (a batch "
    "the collector refused or never answered, after the exporter's retries).",
    (TELEMETRY_SIGNAL, ERROR_TYPE),
)  # fmt: skip
CONFIG_FILE_CHANGED = Instrument(
    "ws_gateway.config.file_changed", "observable_up_down_counter", "{file}",
    "1 while the configuration file this process serves holds something else now, or is gone or unreadable: "
    "a reload failed (the file invalid, deleted), or none was made. 0 otherwise, and without a file.",
    (),
)  # fmt: skip

INSTRUMENTS = (
    ACTIVE_CONNECTIONS,
    UPSTREAM_CONNECTIONS,
    HANDSHAKES,
    HANDSHAKE_DURATION,
    UPSTREAM_CONNECT_DURATION,
    UPSTREAM_CONNECT_FAILURES,
    UPSTREAM_ADDRESS_FAILURES,
    CONNECTION_DURATION_METRIC,
    CONNECTION_CLOSES,
    MESSAGES,
    IO,
    MESSAGE_SIZES,
    POLICY_DENIALS,
    POLICY_ACTIONS,
    POLICY_UNCHECKED,
    COOKIES_CHANGED,
    CONNECTIONS_SHED,
    STORE_FAILURES,
    SERVER_REFUSALS,
    JWKS_FAILURES,
    LOG_DROPPED,
    TELEMETRY_DROPPED,
    CONFIG_FILE_CHANGED,
)
