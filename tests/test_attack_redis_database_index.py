"""A Redis URL's database the server does not have is refused before ``run`` serves.

``store: {type: redis, url: redis://127.0.0.1:6379/99999}`` passed ``check``, and ``run`` served:
every Redis call failed with ``DB index is out of range`` (the server's ``databases`` is 16 by
default), so a ``rate-limit-by-key`` of 5 admitted a 7th handshake and every one after it, unchecked
(fail-open), with a WARNING. ``check`` does no I/O, and a server may have more databases than 16: it
refuses an index no server can have (past 2,147,483,646, ``tests/test_attack_redis_urls.py``), and
``run`` asks the server once before serving, exit 2 with the field path. A server that does not
answer is not a refusal: the gateway starts without its Redis, as before. Against the real Redis.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asgi_ws_gateway.redis_client import database_refusal
from support.processes import cli_env
from support.redis import redis_available
from support.servers import free_port

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis at 127.0.0.1:6379")

SECRET = "s3cretpw-db"


def _run(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(f'apis: []\nstore: {{type: redis, url: "{url}"}}\n')
    command = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", str(free_port())]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=20)


def test_run_refuses_a_database_the_server_does_not_have(tmp_path: Path) -> None:
    """Fails before: the gateway served (this run would not end; the timeout says so)."""
    try:
        done = _run(tmp_path, "redis://127.0.0.1:6379/99999")
    except subprocess.TimeoutExpired:
        pytest.fail("run served with a database the server refuses")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "store.url: the Redis server refuses the URL's database (DB index is out of range)" in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr


async def test_the_server_is_asked_for_a_database_other_than_0() -> None:
    assert await database_refusal("redis://127.0.0.1:6379/99999", 2.0) == "DB index is out of range"
    assert await database_refusal("redis://127.0.0.1:6379/99999?socket_timeout=1", 2.0) == "DB index is out of range"
    assert await database_refusal("redis://127.0.0.1:6379/15", 2.0) is None  # the default 16 databases


async def test_a_server_that_does_not_answer_is_no_refusal() -> None:
    """The gateway starts without its Redis (limits fail open until it answers): not a start-up error."""
    assert await database_refusal(f"redis://:{SECRET}@127.0.0.1:{free_port()}/99999", 0.5) is None
    assert await database_refusal(f"redis://127.0.0.1:{free_port()}/0", 0.5) is None  # database 0: nothing asked
