"""``handshake_limits``: the pure check and its configuration (the end-to-end tests are in test_e2e_server_edges)."""

from __future__ import annotations

import pytest

from asgi_ws_gateway.config.settings import HandshakeLimitsConfig
from asgi_ws_gateway.errors import ConfigError, HandshakeDenied
from asgi_ws_gateway.handshake.header_limits import check_header_limits
from asgi_ws_gateway.policies.build import load_config

LIMITS = HandshakeLimitsConfig(max_header_bytes=1024, max_headers=10, max_target_bytes=300)


def headers(n: int, size: int = 1) -> list[tuple[bytes, bytes]]:
    return [(b"x-h%d" % i, b"v" * size) for i in range(n)]


def test_defaults_are_documented_values() -> None:
    """32 KiB of headers, 100 headers, an 8 KiB target: what the docs and the schema state."""
    limits = load_config({"apis": []}).handshake_limits
    assert (limits.max_header_bytes, limits.max_headers, limits.max_target_bytes) == (32768, 100, 8192)


@pytest.mark.parametrize(
    ("given", "target"),
    [(headers(10), b"/"), (headers(1, 1024 - 4 - 4), b"/"), ([], b"/" * 300), ([], b"/a?" + b"q" * 297)],
    ids=["count-at-limit", "bytes-at-limit", "target-at-limit", "target-with-query-at-limit"],
)
def test_requests_at_the_limits_pass(given: list[tuple[bytes, bytes]], target: bytes) -> None:
    """Exactly at each limit is still accepted: the limits are inclusive."""
    check_header_limits(given, target, LIMITS)


@pytest.mark.parametrize(
    ("given", "target", "status"),
    [
        (headers(11), b"/", 431),
        (headers(1, 1024 - 4 - 4 + 1), b"/", 431),
        (headers(4, 300), b"/", 431),  # each small, the sum too large
        ([(b"x", b"")] * 11, b"/", 431),  # empty headers still count
        ([], b"/" * 301, 414),
        ([], b"/a?" + b"q" * 298, 414),  # the query string counts
        (headers(11), b"/" * 301, 414),  # the target is checked first
    ],
    ids=["count", "one-large", "sum", "empty-values", "path", "query", "both"],
)
def test_requests_over_a_limit_are_refused(given: list[tuple[bytes, bytes]], target: bytes, status: int) -> None:
    with pytest.raises(HandshakeDenied) as denied:
        check_header_limits(given, target, LIMITS)
    assert denied.value.status == status
    assert denied.value.reason == ("target_too_large" if status == 414 else "headers_too_large")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_header_bytes", 10, "handshake_limits.max_header_bytes: "),
        ("max_headers", 0, "handshake_limits.max_headers: "),
        ("max_target_bytes", "big", "handshake_limits.max_target_bytes: "),
        ("max_body", 1, "handshake_limits.max_body: "),
    ],
)
def test_invalid_limits_fail_with_the_field_path(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config({"apis": [], "handshake_limits": {field: value}})
    assert message in str(error.value)
