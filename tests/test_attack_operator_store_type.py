"""A Redis URL under a memory store is refused, not ignored.

``store: {url: redis://redis.internal:6379/0}`` without ``type: redis`` (the default is memory) was
valid: every worker counted each limit on its own while the file named the Redis meant to share them
(with ``--workers 4`` a limit of 30 a minute admitted 120), and ``check`` said nothing.
"""

from __future__ import annotations

import pytest

from asgi_ws_gateway import ConfigError, load_config


@pytest.mark.parametrize("store", [{"url": "redis://127.0.0.1:6379/0"}, {"type": "memory", "url": "redis://h:1/0"}])
def test_a_url_under_a_memory_store_is_a_problem_by_field_path(store: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [], "store": store})
    assert info.value.problems == ["store: url is for type: redis, and this store is type: memory"]


def test_each_store_as_documented_stays_valid() -> None:
    assert load_config({"apis": [], "store": {"type": "memory", "max_keys": 5}}).store.type == "memory"
    redis = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "max_connections": 5, "max_keys": 10}
    assert load_config({"apis": [], "store": redis}).store.url == "redis://127.0.0.1:6379/0"
