"""What telemetry derives once from each configured API and backend, at start-up: span names and the
attributes every handshake, upstream attempt and metric of it repeats (shared, never changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from ..config.apis import ApiConfig, UpstreamConfig
from . import names as n
from .server_addresses import AUTHORITY as _AUTHORITY
from .server_addresses import connected_to


@dataclass(frozen=True)
class ApiInfo:
    """What telemetry derives from an API once, at start-up (``attributes`` is shared: copy, never change)."""

    name: str
    route: str
    handshake_span: str
    connect_span: str
    connection_span: str
    attributes: MappingProxyType[str, AttributeValue]
    """The handshake span's attributes that are the same for every handshake of this API."""

    @classmethod
    def of(cls, api: ApiConfig) -> ApiInfo:
        attributes = MappingProxyType({
            n.HTTP_METHOD: "GET", n.HTTP_ROUTE: api.path, n.API: api.name, n.PROTOCOL_NAME: n.PROTOCOL,
        })  # fmt: skip
        return cls(api.name, api.path, f"{n.SPAN_HANDSHAKE} {api.path}", f"{n.SPAN_UPSTREAM_CONNECT} {api.name}",
                   f"{n.SPAN_CONNECTION} {api.name}", attributes)  # fmt: skip


@dataclass(frozen=True)
class BackendInfo:
    """Bounded attributes of one configured backend (its label never has a query or credentials)."""

    span: dict[str, str | int]
    metric: dict[str, str | int]
    network: bool
    """A ``ws://``/``wss://`` backend (an in-process ASGI app has no URL or address)."""
    inline: dict[str, str | int]
    """The same, named for the handshake span (``attempt_spans: failover``)."""
    origin: str = "\0"
    """The backend URL's ``scheme://authority/`` (never matched when it has none, or userinfo): an attempt's
    URL that starts with it connects where :attr:`connected` says."""
    connected: tuple[str, int] | None = None
    """``server_addresses.connected_to`` of a URL under :attr:`origin`, found once (it depends on the scheme
    and authority alone): an attempt spared its URL's parsing (a set-backend-service URL is parsed)."""

    @classmethod
    def of(cls, api: str, upstream: UpstreamConfig) -> BackendInfo:
        span: dict[str, str | int] = {n.BACKEND: upstream.label}
        if upstream.kind != "asgi":
            url = urlsplit(upstream.label)
            if url.hostname:
                span[n.SERVER_ADDRESS] = url.hostname
            span[n.SERVER_PORT] = url.port or (443 if upstream.kind == "wss" else 80)
        metric = {n.API: api, **span, n.PROTOCOL_NAME: n.PROTOCOL}
        renamed = {n.SERVER_ADDRESS: n.UPSTREAM_ADDRESS, n.SERVER_PORT: n.UPSTREAM_PORT}
        inline = {renamed.get(key, key): value for key, value in span.items()}
        span[n.HTTP_METHOD] = "GET"
        origin = _origin(upstream.label) if upstream.kind != "asgi" else None
        if origin is None:
            return cls(span, metric, upstream.kind != "asgi", inline)
        return cls(span, metric, True, inline, origin, connected_to(origin))


def _origin(url: str) -> str | None:
    """``scheme://authority/`` of ``url`` when its path follows (None: no path, or userinfo in it)."""
    authority = _AUTHORITY(url)
    if authority is None or "@" in authority[0] or url[authority.end() : authority.end() + 1] != "/":
        return None
    return authority[0] + "/"


__all__ = ["ApiInfo", "BackendInfo"]
