"""A change that one worker accepts and another worker's own configuration does not fit (a rolling deploy).

An attack pass ran two workers on one store whose configuration files differ, as during a rolling
deploy (the new file adds an API at ``/ws/new``), and created an API at ``/ws/new`` through the worker
still on the old file. It answered ``201`` (with Redis, after waiting its 3 s for the other worker,
then warning that it "did not answer"), and the other worker, which cannot run that state:

- logged a traceback at every poll of the store (``cannot read the state store``: it had read it), one a
  second, 2.5 KB each, for as long as it ran, and validated the whole configuration again each time
  (13 % of a core at 1,000 APIs);
- answered ``GET /apis`` (anything that reads the store first) with a bare ``500``;
- kept serving its old state, which no answer said.

Now that worker logs one ERROR per state it cannot run, naming what does not fit, and answers ``503``
with it; on the Redis bus it tells the worker that took the change, whose answer carries it as a
warning. The change stays saved: once the store's state fits again, it runs it. Real uvicorn, two
management apps on a shared Redis or state file, a real upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import FileStore, GatewayManagement
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.management import TOKEN, api
from support.redis import SHARED_REDIS
from support.servers import UvicornServer
from support.upstream import UpstreamServer

POLL = 0.02


def _configs(upstream: UpstreamServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The old file, and the new one with an API at /ws/new."""
    old = {"apis": [api("chat", "/ws/chat", upstream)]}
    new = {"apis": [api("chat", "/ws/chat", upstream), api("fresh", "/ws/new", upstream)]}
    return old, new


@contextmanager
def _workers(old: dict[str, Any], new: dict[str, Any], **shared: Any) -> Iterator[tuple[UvicornServer, UvicornServer]]:
    """A worker on each file, sharing ``shared`` (``redis_url``, or ``state``: a file store's path)."""
    with ExitStack() as stack:
        servers = []
        for config in (old, new):
            options = dict(shared)
            if "state" in options:
                options["store"] = FileStore(options.pop("state"))
            management = GatewayManagement(
                WebSocketGateway(not_found, config=config), admin_token=TOKEN, poll_interval=POLL, **options
            )
            servers.append(stack.enter_context(UvicornServer(management, lifespan="on", proxy_headers=False)))
        yield servers[0], servers[1]


def _http(server: UvicornServer) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx2.AsyncClient(base_url=server.url("/_gateway/", scheme="http"), headers=headers, trust_env=False)


CONFLICT = "API 'x' path: '/ws/new' overlaps API 'fresh' path '/ws/new'"
X = {"name": "x", "path": "/ws/new"}


async def test_the_change_is_answered_with_the_worker_that_cannot_run_it(
    upstream: UpstreamServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails before: the answer had no warning (it came after 3 s, and the log said the worker did not answer)."""
    old, new = _configs(upstream)
    with _workers(old, new, redis_url=SHARED_REDIS, redis_prefix=redis_prefix) as (taking, other):
        async with _http(taking) as http:
            created = await http.post("apis", json=api(X["name"], X["path"], upstream))
        assert created.status_code == 201, created.text
        (warning,) = created.json()["warnings"]
        assert "cannot run revision 1 and keeps serving revision 0" in warning and CONFLICT in warning
        assert not [r for r in caplog.records if "did not answer" in r.getMessage()]
        async with _http(other) as http:
            refused = await http.get("apis")
        assert refused.status_code == 503, refused.text
        assert refused.json()["problems"] == [CONFLICT]
        assert "cannot run revision 1" in refused.json()["detail"]


@pytest.mark.parametrize("shared", ["redis", "file"])
async def test_the_worker_that_cannot_run_a_state_logs_it_once_and_runs_the_next_that_fits(
    tmp_path: Path,
    upstream: UpstreamServer,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    shared: str,
) -> None:
    """Both fail before: a traceback per poll, and ``GET /apis`` a 500."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    old, new = _configs(upstream)
    options = (
        {"redis_url": SHARED_REDIS, "redis_prefix": redis_prefix} if shared == "redis" else {"state": tmp_path / "s"}
    )
    with _workers(old, new, **options) as (taking, other):
        async with _http(taking) as http:
            assert (await http.post("apis", json=api(X["name"], X["path"], upstream))).status_code == 201
        await asyncio.sleep(50 * POLL)  # fifty polls of the other worker
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.exc_info for r in errors] == [None], [r.getMessage()[:200] for r in errors]
        assert "cannot run revision 1" in errors[0].getMessage() and CONFLICT in errors[0].getMessage()
        async with _http(other) as http:
            assert (await http.get("apis")).status_code == 503
        # The other worker still serves its own file's API there.
        async with await connect(other.url("/ws/new")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        async with _http(taking) as http:
            assert (await http.delete("apis/x")).status_code == 204
        async with _http(other) as http:
            listed = await http.get("apis")
        assert listed.status_code == 200, listed.text
        assert (listed.json()["revision"], [a["name"] for a in listed.json()["apis"]]) == (2, ["chat", "fresh"])
