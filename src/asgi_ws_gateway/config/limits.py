"""The configuration's size limits, and :func:`bounded`, their check on free-form data (a policy's settings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError

from ..plugins import MAX_MODULE, MAX_PLUGINS  # modules a configuration's plugins imports, their names

MIB = 1024 * 1024
# Size limits: generous for any real configuration, small enough that no request can bloat the
# gateway's memory or state file (docs/security.md lists them).
MAX_NAME = 128  # names and ids
MAX_TEXT = 256  # display names
MAX_HANDSHAKE_CONDITIONS = 4096  # conditions one handshake may test: handshake_limits.max_conditions
MAX_URL = 2048  # paths and URLs
MAX_UPSTREAMS = 64
MAX_POLICIES = 64  # per list
MAX_APIS = 1000  # per configuration (file and management API together); products too
MAX_SUBSCRIPTIONS = 100_000
MAX_SETTING = 16384  # characters of one string in a policy's settings (a PEM certificate chain fits)
MAX_ITEMS = 1024  # entries of one list or mapping in a policy's settings
MAX_DEPTH = 16  # nesting of a policy's settings
# 2026-12-05: what had no bound (docs/security.md's limits table lists each).
MAX_PREFIX = 64  # a Redis key namespace (store.prefix, --redis-prefix): every counter's key carries it
MAX_NETWORKS = 1024  # trusted_proxies entries, as an ip-filter list (looked up by bisection; CloudFront's list fits)
MAX_KEY_HEADERS = 16  # subscription_key.headers: each is looked up for each handshake
MAX_NETWORK = 64  # an address or network as text: IPv6 with a prefix length is 43 characters
MAX_CAP = 10_000_000  # a backend's max_connections, an API's max_connecting: as the process's max_connections
MAX_FAILURES = 100  # unhealthy_after: past it passive health is off in all but name (cooldown: 0 says so)


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


__all__ = [
    "MAX_APIS",
    "MAX_DEPTH",
    "MAX_FAILURES",
    "MAX_HANDSHAKE_CONDITIONS",
    "MAX_ITEMS",
    "MAX_KEY_HEADERS",
    "MAX_MODULE",
    "MAX_NAME",
    "MAX_NETWORK",
    "MAX_NETWORKS",
    "MAX_PLUGINS",
    "MAX_POLICIES",
    "MAX_PREFIX",
    "MAX_SETTING",
    "MAX_SUBSCRIPTIONS",
    "MAX_TEXT",
    "MAX_UPSTREAMS",
    "MAX_URL",
    "MIB",
    "bounded",
]
