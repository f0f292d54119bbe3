"""Pure logic: ``url.full`` redaction, ``server.address``/``server.port``, batch delay, exported log attributes."""

from __future__ import annotations

from typing import Any, cast

import pytest
from opentelemetry._logs import Logger
from opentelemetry.sdk.trace import TracerProvider

from asgi_ws_gateway import TelemetryConfig, redact
from asgi_ws_gateway.redact import redact_url as redacted_url
from asgi_ws_gateway.redact import text as text_redaction
from asgi_ws_gateway.telemetry.access import AccessLog
from asgi_ws_gateway.telemetry.providers import SCHEDULE_DELAY_MS, resolve_providers
from asgi_ws_gateway.telemetry.server_addresses import addressed_server as _server


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://h:9000/a/b", "ws://h:9000/a/b"),
        ("wss://h/rooms/1?token=s3cr3t", "wss://h/rooms/1?token=REDACTED"),
        ("ws://h/p?a=1&b=2&a=3", "ws://h/p?a=REDACTED&b=REDACTED&a=REDACTED"),  # repeated names
        ("ws://h/p?bare-s3cr3t", "ws://h/p?REDACTED"),  # a bare item may be the key itself
        ("ws://h/p?empty=&=s3cr3t", "ws://h/p?empty=REDACTED&=REDACTED"),
        ("ws://h/p?k=a=b=s3cr3t", "ws://h/p?k=REDACTED"),  # '=' inside the value
        ("ws://h/p?k=%73%33cr%33t&n=x%26s3cr3t", "ws://h/p?k=REDACTED&n=REDACTED"),  # encoded
        ("ws://h/p?k=v;s3cr3t=1", "ws://h/p?k=REDACTED"),  # ';' is not a separator: one value
        ("ws://h/p?&&k=s3cr3t&&", "ws://h/p?k=REDACTED"),
        ("ws://user:s3cr3t@h:1/p", "ws://h:1/p"),  # userinfo dropped
        ("ws://s3cr3t@h/p", "ws://h/p"),
        ("ws://u:p@ss@h/p", "ws://h/p"),  # '@' in the password
        ("ws://h/p#s3cr3t", "ws://h/p"),  # fragment dropped
        ("ws://h/p?k=s3cr3t#frag", "ws://h/p?k=REDACTED"),
        ("ws://[::1]:8000/p?k=s3cr3t", "ws://[::1]:8000/p?k=REDACTED"),
        # A client's path parameter goes upstream in the path: read as the client's path is.
        ("ws://h/rooms/token%3Ds3cr3t", "ws://h/rooms/token=REDACTED"),
        ("ws://h/rooms/Bearer%20s3cr3t/x", "ws://h/rooms/Bearer%20REDACTED"),  # to its end, as in a path
        ("ws://h/rooms/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzM2NyM3QifQ.c2lnbmF0dXJl", "ws://h/rooms/REDACTED"),
        ("ws://h/rooms/api_key:%20s3cr3t", "ws://h/rooms/api_key:REDACTED"),
        ("ws://h/rooms/a%2Fb%20c", "ws://h/rooms/a%2Fb%20c"),  # nothing to redact: as it was
    ],
)
def test_redacted_url_keeps_names_and_drops_every_value_and_userinfo(url: str, expected: str) -> None:
    """No value, userinfo or fragment of the URL survives; scheme, host, port, path and names do."""
    assert redacted_url(url) == expected
    assert "s3cr3t" not in redacted_url(url) and "%73%33" not in redacted_url(url)


def _remembered(text: str, redact_fn: Any, clean: dict[str, tuple[str, ...]]) -> str:
    """What ``redact.redact_url_remembered`` does, with the test's own store."""
    return text_redaction._remembered(text, redact_fn, clean, text_redaction._HEADER_NAMES)


def test_a_url_with_a_secret_is_redacted_every_time_and_never_remembered() -> None:
    """Only texts that redaction left unchanged are remembered: no secret stays in the cache."""
    clean: dict[str, tuple[str, ...]] = {}
    for _ in range(2):
        assert _remembered("wss://h/rooms/1?token=s3cr3t", redacted_url, clean) == "wss://h/rooms/1?token=REDACTED"
    assert clean == {}


def test_a_url_without_a_secret_is_remembered_and_not_redacted_again() -> None:
    clean: dict[str, tuple[str, ...]] = {}
    assert _remembered("ws://h:9000/a/b", redacted_url, clean) == "ws://h:9000/a/b"

    def fails(text: str) -> str:
        raise AssertionError(f"redacted again: {text}")

    assert _remembered("ws://h:9000/a/b", fails, clean) == "ws://h:9000/a/b"
    assert redact.redact_url_remembered("ws://h:9000/a/b") == "ws://h:9000/a/b"


def test_the_remembered_texts_are_bounded() -> None:
    clean: dict[str, tuple[str, ...]] = {}
    for index in range(text_redaction._UNCHANGED_LIMIT + 1):
        _remembered(f"/ws/{index}", redacted_url, clean)
    assert list(clean) == [f"/ws/{text_redaction._UNCHANGED_LIMIT}"]


@pytest.mark.parametrize(
    ("host", "server", "scheme", "expected"),
    [
        (b"example.test:8443", ("10.0.0.1", 8000), "wss", ("example.test", 8443)),
        (b"example.test", ("10.0.0.1", 8000), "wss", ("example.test", 443)),  # default port of the scheme
        (b"example.test", None, "ws", ("example.test", 80)),
        (b"[::1]:9000", None, "ws", ("::1", 9000)),
        (b"[2001:db8::1]", None, "wss", ("2001:db8::1", 443)),
        (b"example.test:99999", None, "ws", ("example.test", 80)),  # not a port
        (b"example.test:x", None, "ws", ("example.test", 80)),
        (None, ("127.0.0.1", 8000), "ws", ("127.0.0.1", 8000)),  # no Host: the listening socket
        (b"", ("127.0.0.1", 8000), "ws", ("127.0.0.1", 8000)),
        (None, None, "ws", ("", None)),
    ],
)
def test_server_address_is_the_host_the_client_addressed(
    host: bytes | None, server: tuple[str, int] | None, scheme: str, expected: tuple[str, int | None]
) -> None:
    assert _server(host, server, scheme) == expected


def _delay(environ: dict[str, str]) -> float:
    providers = resolve_providers(TelemetryConfig(exporter="otlp"), environ=environ)
    try:
        assert isinstance(providers.tracer, TracerProvider)
        processor = providers.tracer._active_span_processor._span_processors[0]
        return processor._batch_processor._schedule_delay_millis  # type: ignore[attr-defined,no-any-return]
    finally:
        providers.shutdown(timeout=5.0)


def test_own_span_batches_leave_within_a_second_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ended handshake spans wait at most 1 s (not the SDK's 5 s); ``OTEL_BSP_SCHEDULE_DELAY`` still wins."""
    monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY", raising=False)
    assert _delay({"OTEL_METRICS_EXPORTER": "none"}) == SCHEDULE_DELAY_MS == 1000
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")  # the SDK reads it from the process environment
    assert _delay({"OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "250"}) == 250


class _Recorder:
    """Stands in for an OpenTelemetry ``Logger``: keeps what ``emit`` got."""

    def __init__(self) -> None:
        self.attributes: list[dict[str, object]] = []

    def emit(self, **record: Any) -> None:
        self.attributes.append(record["attributes"])


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("10.1.2.3:4567", {"client.address": "10.1.2.3", "client.port": 4567}),
        ("::1:4567", {"client.address": "::1", "client.port": 4567}),  # IPv6, as the text line writes it
        ("-", {}),  # no client in the scope
    ],
)
def test_exported_access_records_use_semconv_names(client: str, expected: dict[str, object]) -> None:
    """``client`` splits into ``client.address``/``client.port``; path, route and status get their semconv names."""
    recorder = _Recorder()
    fields = {"api": "chat", "route": "/ws/{room}", "path": "/ws/a", "client": client, "subject": None,
              "subscription": None, "status": 403, "outcome": "denied", "reason": "nope", "policy": None,
              "duration": 0.001}  # fmt: skip
    AccessLog("text", cast(Logger, recorder)).write(fields, None)
    (attributes,) = recorder.attributes
    assert attributes == {
        **expected, "url.path": "/ws/a", "http.route": "/ws/{room}", "http.response.status_code": 403,
        "ws_gateway.access.api": "chat", "ws_gateway.access.outcome": "denied", "ws_gateway.access.reason": "nope",
        "ws_gateway.access.duration": 0.001,
    }  # fmt: skip
