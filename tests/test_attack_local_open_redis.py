"""The management store on a Redis that asks no password is named in a WARNING (real ``run --management
--redis`` processes, private ``redis-server``s, with and without ``requirepass``).

Whatever writes to that Redis is the management API without its token: it rewrites the stored changes the
workers apply (APIs, policies) and publishes the bus's commands (close, message a connection). On
127.0.0.1 that is every local user of the host. Before, nothing said so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import EXE, ServerProcess
from support.redis import RedisServer
from support.servers import free_port

PASSWORD = "p" * 32
WARNING = "which asks no password: whoever can write to that Redis (on 127.0.0.1: every local user) can change"


@pytest.fixture
def open_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def guarded_redis() -> Iterator[RedisServer]:
    with RedisServer("--requirepass", PASSWORD) as server:
        yield server


def _started(tmp_path: Path, redis_url: str) -> str:
    """What ``run --management --redis URL`` wrote by the time it served (the URL given by its variable)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    port = free_port()
    args = [str(EXE), "run", str(config), "--port", str(port), "--management", "/_gateway"]
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 40, "ASGI_WS_GATEWAY_REDIS": redis_url}
    with ServerProcess(args, port=port, cwd=tmp_path, env=env) as server:
        server.wait_ready()
        assert server.stop() == 0, server.output()
        return server.output()


def test_a_management_store_on_a_redis_without_a_password_is_warned_of(tmp_path: Path, open_redis: RedisServer) -> None:
    output = _started(tmp_path, open_redis.url)
    assert f"management API: its changes and commands go through {open_redis.url}, {WARNING}" in output, output


def test_a_management_store_on_a_redis_with_a_password_is_not(tmp_path: Path, guarded_redis: RedisServer) -> None:
    output = _started(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{guarded_redis.port}/0")
    assert "asks no password" not in output and PASSWORD not in output, output


def test_a_password_given_in_the_query_is_a_password(tmp_path: Path, guarded_redis: RedisServer) -> None:
    """redis-py reads ``?password=`` as the userinfo's: that store asks a password, and is not warned of."""
    output = _started(tmp_path, f"redis://127.0.0.1:{guarded_redis.port}/0?password={PASSWORD}")
    assert "asks no password" not in output and PASSWORD not in output, output
