"""Shared set-up of the telemetry tests: export to an ``OtlpReceiver`` through ``OTEL_*`` variables."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.telemetry import names as n
from support.gateway import PASSTHROUGH, gateway_config
from support.otlp import OtlpReceiver, Protocol
from support.rawhttp import exchange, handshake, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

SECRETS = ("sekret-bearer-1", "sekret-query-2", "sekret-key-3", "sekret-cookie-4", "sekret-apim-5")
"""Credentials the tests send in every place a client puts them; none may be exported or logged."""


def export_to(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, protocol: Protocol) -> None:
    """Point the gateway's own OTLP exporters at ``receiver`` the way a user would: ``OTEL_*``."""
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
                 "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_RESOURCE_ATTRIBUTES"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms: spans leave soon after they end
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # metrics leave on force_flush and shutdown


async def a_server_refusal() -> None:
    """One handshake the gateway's server refuses itself (a ``Sec-WebSocket-Version`` it does not speak), before
    any app: ``ws_gateway.server.refusals`` counts it for the whole process, whichever gateway exports it."""
    with UvicornServer(not_found, ws=PASSTHROUGH) as server:
        assert status_of(await exchange(server.port, handshake(version=b"12"))) == 400


def refused_url() -> str:
    """A ws:// URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}/gone"


def telemetry_config(upstream: UpstreamServer, **telemetry: Any) -> dict[str, Any]:
    """The scripted upstream's APIs, one API whose two backends are down, and a telemetry section."""
    config = gateway_config(upstream)
    config["apis"].append({"name": "down", "path": "/ws/down", "upstreams": [refused_url(), refused_url()]})
    config["apis"].append(
        {
            "name": "guarded",
            "path": "/ws/guarded",
            "upstreams": [upstream.url("/echo")],
            # A real handshake policy: the test clients send no Origin, so every handshake is refused.
            "policies": [{"check-origin": {"name": "origin-check", "allowed": ["https://app.example"]}}],
        }
    )
    config["apis"].append(
        {
            "name": "filtered",
            "path": "/ws/filtered",
            "upstreams": [upstream.url("/echo")],
            "message_policies": {"inbound": [{"limit-message-size": {"max": 10, "action": "drop"}}]},
        }
    )
    config["telemetry"] = telemetry
    return config


def with_unchecked(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with an API ``unchecked`` whose limit fails open on a store nothing answers for."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    limit = {"key": "{client.ip}", "limit": 100, "window": 60, "on_store_error": "open"}
    upstream = next(api for api in config["apis"] if api["name"] == "echo")["upstreams"][0]
    unchecked = {"name": "unchecked", "path": "/ws/unchecked", "upstreams": [upstream],
                 "policies": [{"rate-limit-by-key": limit}]}  # fmt: skip
    return {**config, "store": {"type": "redis", "url": dead, "timeout": 0.5}, "apis": [*config["apis"], unchecked]}


def with_narrowed_cookie(config: dict[str, Any], upstream: UpstreamServer) -> dict[str, Any]:
    """``config`` with an API ``cookies`` whose upstream sets a cookie for the whole origin (``Path=/``): each
    accepted handshake counts one ``path_narrowed`` in ``ws_gateway.cookies.changed``."""
    cookies = {"name": "cookies", "path": "/ws/cookies", "upstreams": [upstream.url("/cookie")]}
    return {**config, "apis": [*config["apis"], cookies]}


def secret_headers() -> list[tuple[str, str]]:
    return [
        ("Authorization", f"Bearer {SECRETS[0]}"),
        ("Cookie", f"session={SECRETS[3]}"),
        ("Ocp-Apim-Subscription-Key", SECRETS[4]),
        ("X-Api-Key", SECRETS[2]),
    ]


SECRET_QUERY = f"?access_token={SECRETS[1]}&subscription-key={SECRETS[2]}"


def counter_values(reader: InMemoryMetricReader, name: str, *keys: str) -> dict[tuple[object, ...], int]:
    """The points of the counter ``name`` by the values of its attributes ``keys``."""
    found: dict[tuple[object, ...], int] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint) and point.attributes is not None
                        found[tuple(point.attributes[key] for key in keys)] = int(point.value)
    return found


def close_counts(reader: InMemoryMetricReader) -> dict[tuple[str, object], int]:
    """``ws_gateway.connection.closes`` by (side, code)."""
    counted = counter_values(reader, n.CONNECTION_CLOSES.name, n.CLOSE_SIDE, n.CLOSE_CODE)
    return {(str(side), code): value for (side, code), value in counted.items()}


def address_failures(reader: InMemoryMetricReader) -> dict[object, int]:
    """``ws_gateway.upstream.address.failures`` by ``error.type``: the metric users query."""
    counted = counter_values(reader, n.UPSTREAM_ADDRESS_FAILURES.name, "error.type")
    return {reason: value for (reason,), value in counted.items()}
