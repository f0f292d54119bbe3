"""The management store's Redis URL (a password in it) can stay off the command line.

``--redis redis://:password@host`` was the only way to give it, and ``ps`` (``/proc/<pid>/cmdline``)
shows every process's arguments to every local user, while the admin token was kept in the
environment for that very reason. ``ASGI_WS_GATEWAY_REDIS`` is now ``--redis``'s default, checked as
the option is; a malformed one is a usage error that does not repeat it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis.asyncio as redis

from support.processes import EXE, cli_env, standalone
from support.servers import free_port
from support.upstream import UpstreamServer

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_the_redis_url_from_the_environment_keeps_the_changes_and_is_not_on_the_command_line(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    async with standalone(config, "--redis-prefix", redis_prefix, env={"ASGI_WS_GATEWAY_REDIS": REDIS_URL}) as gateway:
        await gateway.client.create_api({"name": "late", "path": "/ws/late", "upstreams": [upstream.url("/echo")]})
        arguments = Path(f"/proc/{gateway.process.pid}/cmdline").read_bytes()  # noqa: ASYNC240
        assert b"redis://" not in arguments
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]  # kept in Redis
    finally:
        await client.aclose()
    assert not (tmp_path / "gateway.state.json").exists()  # not in the default state file


def test_a_malformed_redis_url_in_the_environment_is_a_usage_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = cli_env(ASGI_WS_GATEWAY_REDIS="nothing://user:sekret-value-9@host/0")
    command = [str(EXE), "run", str(config), "--management", "/_gateway", "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "$ASGI_WS_GATEWAY_REDIS: a Redis URL starts with" in done.stderr  # names the variable, not the flag
    assert "sekret-value-9" not in done.stdout + done.stderr
