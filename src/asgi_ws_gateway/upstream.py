"""The upstream leg: what a connection to a backend looks like, and the ``websockets`` connector.

A connector opens an :class:`UpstreamConnection` for one client handshake. Two exist: this module's
:class:`WebSocketsConnector` (``ws://`` and ``wss://`` over the network) and
:class:`~asgi_ws_gateway.inprocess.InProcessConnector` (an ASGI app in this process). Both raise
the :class:`~asgi_ws_gateway.errors.UpstreamError` subclasses when the handshake fails, and both
end a live connection by raising :class:`UpstreamClosed` from ``recv``/``send``.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHeaderValue, InvalidStatus, InvalidURI, WebSocketException
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.typing import Subprotocol

from ._types import Data, Headers, Scope
from .config import ApiConfig, UpstreamConfig
from .errors import HandshakeDenied, UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from .redact import redact_text
from .routing import split_path

# Headers that describe one hop of the connection and must not cross the gateway.
HOP_BY_HOP = frozenset(
    {
        "host", "connection", "upgrade", "keep-alive", "proxy-connection", "te", "trailer",
        "transfer-encoding", "proxy-authenticate", "proxy-authorization", "content-length",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
        "sec-websocket-protocol", "sec-websocket-accept",
    }
)  # fmt: skip
# ``WebSocketsConnection.send``'s hot path uses these attributes of websockets' asyncio connection
# (all of ``_FastSend``, checked with websockets 14 to 17); a connection without them takes
# ``Connection.send`` every time.
_FAST_SEND_ATTRIBUTES = (
    "protocol", "paused", "send_in_progress", "send_data", "drain", "transport", "connection_lost_waiter",
)  # fmt: skip
# Response headers of the upstream's handshake that describe it rather than the application.
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}


class UpstreamClosed(Exception):
    """The upstream connection is over.

    Attributes:
        code: the close code the upstream sent (``by_peer``), or the one this side sent when it
            failed the connection (1006 when the TCP connection was lost without a close frame).
        reason: the matching close reason.
        by_peer: True if the upstream closed; False if this side failed the connection (a
            protocol error, an oversize message, a keepalive timeout, a lost connection).
    """

    def __init__(self, code: int, reason: str, *, by_peer: bool) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class UpstreamConnection(Protocol):
    """An open WebSocket connection to a backend, as the relay uses it."""

    subprotocol: str | None
    response_headers: Headers

    async def recv(self) -> Data:
        """Next message; raises :class:`UpstreamClosed` when the connection is over."""
        ...

    async def send(self, data: Data) -> None:
        """Send one message, waiting while the upstream applies backpressure."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close (idempotent, bounded in time); never raises for an already-closed connection."""
        ...


@dataclass
class UpstreamRequest:
    """The upstream handshake being built for one client (later stages may change it)."""

    url: str
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    scope: Scope = field(repr=False)
    path_params: dict[str, str] = field(default_factory=dict)


class Connector(Protocol):
    async def connect(self, request: UpstreamRequest) -> UpstreamConnection: ...


def upstream_headers(scope: Scope, *, trust_forwarded: bool = False) -> list[tuple[str, str]]:
    """End-to-end request headers plus ``X-Forwarded-For/Proto/Host`` for the upstream handshake.

    The client's own ``X-Forwarded-For``, ``Forwarded`` and ``X-Real-IP`` go upstream only when
    ``trust_forwarded`` (the TCP peer is one of ``trusted_proxies``): from anyone else they are
    forgeries, and an upstream that reads them would believe them.
    """
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    named_in_connection = {
        token.strip().lower()
        for name, value in raw
        if name == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    kept: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    host = ""
    for name_b, value_b in raw:
        name, value = name_b.decode("latin-1").lower(), value_b.decode("latin-1")
        if name == "host":
            host = value
        if name == "x-forwarded-for":
            if trust_forwarded:
                forwarded_for.append(value)
        elif name in HOP_BY_HOP or name in named_in_connection or name.startswith("x-forwarded-"):
            continue
        elif trust_forwarded or name not in ("forwarded", "x-real-ip"):
            kept.append((name, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(client[0])
    if forwarded_for:
        kept.append(("x-forwarded-for", ", ".join(forwarded_for)))
    kept.append(("x-forwarded-proto", "https" if scope.get("scheme") == "wss" else "http"))
    if host:
        kept.append(("x-forwarded-host", host))
    return kept


# What stays as is in a path segment and in a query string; everything else is percent-encoded.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
_QUERY_SAFE = _SEGMENT_SAFE + "/?%"


def fill_template(template: str, params: dict[str, str]) -> str:
    """Substitute ``{name}`` placeholders with percent-encoded path parameter values.

    Every character that could end the segment (``/``, ``?``, ``#``, ``%``, ``\\``) is encoded;
    values that would be a dot segment are refused earlier (``request_checks.check_path_params``).
    """
    for name, value in params.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def with_query(url: str, query: bytes) -> str:
    """``url`` with the client's query string appended; bytes a URL cannot carry are percent-encoded."""
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{quote(query, safe=_QUERY_SAFE)}"


def request_path(scope: Scope) -> str:
    """The client's path, percent-encoded segment by segment as it was split for routing."""
    return "/" + "/".join(quote(part, safe=_SEGMENT_SAFE) for part in split_path(scope["path"], scope.get("raw_path")))


def build_request(
    api: ApiConfig, upstream: UpstreamConfig, scope: Scope, params: dict[str, str], *, trust_forwarded: bool = False
) -> UpstreamRequest:
    query = scope.get("query_string", b"") if api.forward_query else b""
    if upstream.kind == "asgi":
        url = with_query(fill_template(upstream.path or request_path(scope), params), query)
    else:
        url = with_query(fill_template(upstream.url, params), query)
    return UpstreamRequest(
        url=url,
        headers=upstream_headers(scope, trust_forwarded=trust_forwarded),
        subprotocols=list(scope.get("subprotocols") or ()),
        scope=scope,
        path_params=params,
    )


def kept_response_headers(headers: list[tuple[str, str]]) -> Headers:
    """The upstream's response headers worth passing to the client, as ASGI raw headers."""
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in _RESPONSE_DROP
    ]


def tls_context(upstream: UpstreamConfig) -> ssl.SSLContext | None:
    """The TLS context of a ``wss://`` upstream (None for ``ws://``): verified unless told not to."""
    if upstream.kind != "wss":
        return None
    context = ssl.create_default_context(cafile=upstream.ca_bundle)
    if not upstream.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _NoRedirects(connect):
    """``websockets`` connect that never follows a redirect: a gateway must not wander off."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def bad_request(detail: str) -> HandshakeDenied:
    """A 400 for an upstream request the client's values made unsendable (never a backend failure)."""
    return HandshakeDenied(400, detail, reason="bad_request")


class WebSocketsConnector:
    """Opens ``ws://``/``wss://`` upstream connections with the ``websockets`` asyncio client."""

    def __init__(self, api: ApiConfig, upstream: UpstreamConfig) -> None:
        self.api = api
        self.label = upstream.label
        self.ssl_context = tls_context(upstream)

    async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
        api = self.api
        try:
            ws = await _NoRedirects(
                request.url,
                additional_headers=request.headers,
                user_agent_header=None,  # the client's own User-Agent is forwarded instead
                subprotocols=[Subprotocol(p) for p in request.subprotocols] or None,
                compression=api.compression,
                proxy=None,
                open_timeout=api.connect_timeout,
                ping_interval=api.ping_interval,
                ping_timeout=api.ping_timeout,
                close_timeout=api.close_timeout,
                max_size=api.max_message_size,
                max_queue=4,
                ssl=self.ssl_context,
            )
        except InvalidStatus as exc:
            response = exc.response
            if 300 <= response.status_code < 400:
                raise UpstreamUnreachable(
                    f"{self.label} answered with a redirect ({response.status_code}), which is not followed"
                ) from None
            raise UpstreamRejected(
                response.status_code, kept_response_headers(list(response.headers.raw_items())), bytes(response.body)
            ) from None
        except TimeoutError:
            raise UpstreamTimeout(f"{self.label} did not complete the handshake in {api.connect_timeout:g} s") from None
        except (InvalidURI, InvalidHeaderValue) as exc:
            # websockets refused the request it was given before sending a byte: not the backend's fault.
            # The message names the URL or the value: the client learns only the kind of problem.
            kind = "URL" if isinstance(exc, InvalidURI) else "header"
            raise bad_request(f"the upstream request cannot be sent (invalid {kind})") from None
        except (OSError, WebSocketException) as exc:
            raise UpstreamUnreachable(f"{self.label} is unreachable: {redact_text(str(exc))}") from None
        return WebSocketsConnection(ws)


class _FastSend(Protocol):
    """What the send hot path may touch of a ``websockets`` asyncio connection, and nothing more.

    The connection's own ``close_exc`` is not here: websockets 14 has it only on ``protocol``.
    """

    # Read-only here (properties), so that the connection's narrower attribute types conform.
    @property
    def protocol(self) -> WsProtocol: ...
    @property
    def paused(self) -> bool: ...
    @property
    def send_in_progress(self) -> object: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def connection_lost_waiter(self) -> asyncio.Future[None]: ...

    def send_data(self) -> None: ...

    async def drain(self) -> None: ...


class WebSocketsConnection:
    """Adapts a ``websockets`` client connection to :class:`UpstreamConnection`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        fast: _FastSend | None = ws if all(hasattr(ws, name) for name in _FAST_SEND_ATTRIBUTES) else None
        self._fast = fast
        self.subprotocol: str | None = ws.subprotocol
        self.response_headers = kept_response_headers(
            list(ws.response.headers.raw_items()) if ws.response is not None else []
        )

    @property
    def _fast_send(self) -> bool:
        return self._fast is not None

    async def recv(self) -> Data:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, data: Data) -> None:
        ws = self._fast
        if ws is not None and ws.protocol.state is State.OPEN and ws.send_in_progress is None:
            # Hot path: what ``Connection.send`` does for one unfragmented message on an open
            # connection, without its per-message async context manager (measured: 5-18% less
            # gateway CPU per 64 B echo, ~10% per 16 KiB; docs/performance.md). Frame, write, and
            # wait while the transport's buffer is over its high-water mark, as ``send`` does.
            # Anything else (closing, a fragmented send in progress) takes the full path.
            if isinstance(data, str):
                ws.protocol.send_text(data.encode())
            else:
                ws.protocol.send_binary(data)
            ws.send_data()
            if ws.paused:
                try:
                    await ws.drain()
                except Exception:  # the connection was lost while paused: end it as ``send`` does
                    ws.transport.abort()
                    await asyncio.shield(ws.connection_lost_waiter)  # the protocol is CLOSED after it
                    raise _closed(ws.protocol.close_exc) from None
            return
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _closed(exc: ConnectionClosed) -> UpstreamClosed:
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return UpstreamClosed(exc.rcvd.code, exc.rcvd.reason, by_peer=True)
    if exc.sent is not None:
        return UpstreamClosed(exc.sent.code, exc.sent.reason, by_peer=False)
    return UpstreamClosed(1006, "", by_peer=False)


__all__ = [
    "HOP_BY_HOP",
    "Connector",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamRequest",
    "WebSocketsConnector",
    "bad_request",
    "build_request",
    "tls_context",
    "upstream_headers",
]
