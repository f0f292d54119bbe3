"""End to end: a handshake policy whose I/O hangs costs the client a timely refusal, not a wait.

Two ways a policy's I/O can hang: a custom policy's own call that never returns (bounded by
``handshake_limits.policy_timeout``: 504 ``policy_timeout``, the policies' resources released), and
a JWKS host that answers a byte at a time (``validate-jwt``'s ``jwks_timeout`` bounds the whole
fetch, not each read: 503 ``jwks_unavailable``, and the fetch hangs up). Real
uvicorn, a real upstream, a real (trickling) HTTP server; the pipeline's own rules below.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway, load_config
from asgi_ws_gateway.errors import ConfigError, HandshakeDenied
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.pipeline import FunctionPolicy, HandshakePipeline
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.jwts import signing_key, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


async def _forever() -> None:
    """What a call that never returns awaits."""
    await asyncio.get_running_loop().create_future()


async def hangs_when_asked(context: HandshakeContext) -> None:
    """A custom policy whose (pretend) remote call never returns when the client sends ``X-Hang``."""
    if context.request.header("x-hang") is not None:
        await _forever()


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, **limits: Any) -> str:
    policies = [{"limit-concurrency": {"key": "{client.ip}", "max": 1}}, hangs_when_asked]
    config = {"apis": [api_entry(upstream, policies=policies)], "handshake_limits": limits}
    return uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")


async def test_a_hanging_policy_is_a_504_naming_it_and_releases_what_earlier_policies_took(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    url = _gateway(uvicorn_server, upstream, policy_timeout=0.3)
    # The client waits up to 5 s (connect's open timeout): the gateway answers well before.
    status, _, body = await expect_status(url, additional_headers={"X-Hang": "1"})
    assert status == 504
    assert json.loads(body)["status"] == 504
    assert b"hangs_when_asked" not in body  # a 5xx's detail is for the log, not the client
    denials = [r.getMessage() for r in caplog.records if "denied with 504" in r.getMessage()]
    assert denials and "(policy_timeout)" in denials[0] and "hangs_when_asked did not finish" in denials[0]
    # limit-concurrency's lease (max 1 per client) went with the refusal: the next client is admitted,
    # and holds the only lease while it is open.
    async with await connect(url) as ws:
        await ws.send("after")
        assert await ws.recv() == "after"
        assert (await expect_status(url))[0] == 429


async def test_policies_that_finish_in_time_are_untouched(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    url = _gateway(uvicorn_server, upstream)  # the default deadline, 10 s
    async with await connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"


# -- a JWKS host that trickles ---------------------------------------------------------------------


class TricklingJwks:
    """An HTTP server that promises a 100 kB JWKS and sends a byte every 0.2 s; ``closed`` is set when
    the reader hangs up on it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/jwks.json"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if conn.recv(1) == b"":  # the reader hung up
                        self.closed.set()
                        return
                except TimeoutError:
                    pass
                except OSError:
                    self.closed.set()
                    return
                try:
                    conn.sendall(b" ")
                except OSError:
                    self.closed.set()
                    return

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def __enter__(self) -> TricklingJwks:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def trickling_jwks() -> Iterator[TricklingJwks]:
    with TricklingJwks() as server:
        yield server


async def test_a_trickling_jwks_host_fails_the_fetch_within_jwks_timeout(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, trickling_jwks: TricklingJwks,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Before, urllib's timeout bounded each read: a byte every 0.2 s kept the fetch, and every handshake
    waiting for the keys, going for as long as the host liked (the client's own timeout ran out first)."""
    policy = {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": trickling_jwks.url, "jwks_timeout": 0.5}}
    config = {"apis": [api_entry(upstream, policies=[policy])]}
    url = uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")
    bearer = {"Authorization": f"Bearer {token(signing_key('RS256'))}"}
    status, _, _ = await expect_status(url, additional_headers=bearer)
    assert status == 503
    assert any("fetch failed: no answer within 0.5 s" in r.getMessage() for r in caplog.records)
    # The fetch hangs up at jwks_timeout too, instead of reading the trickle for its whole length.
    assert await asyncio.to_thread(trickling_jwks.closed.wait, 5.0)


# -- the pipeline's deadline (pure) ----------------------------------------------------------------


def _context() -> HandshakeContext:
    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b"", "client": ("10.0.0.1", 1)}
    return HandshakeContext("api", RequestView(scope, {}))


async def test_the_deadline_names_the_subscription_check_when_that_hangs() -> None:
    async def hanging_products(context: HandshakeContext) -> list[str]:
        await _forever()
        return []

    pipeline = HandshakePipeline(products=hanging_products, timeout=0.05)
    with pytest.raises(HandshakeDenied) as denied:
        await pipeline.run(_context())
    assert (denied.value.status, denied.value.reason, denied.value.policy) == (504, "policy_timeout", "subscription")


async def test_a_policys_own_timeout_is_not_the_deadline() -> None:
    """A policy that raises TimeoutError itself fails as before (500 at the middleware), not as a 504."""

    async def own_timeout(context: HandshakeContext) -> None:
        async with asyncio.timeout(0):
            await _forever()

    with pytest.raises(TimeoutError):
        await HandshakePipeline([FunctionPolicy(own_timeout)], timeout=5).run(_context())


async def test_the_deadlines_cancellation_is_taken_back_with_its_504() -> None:
    """The task that ran out of time is not left cancelling: the middleware goes on to send the 504."""

    async def hangs(context: HandshakeContext) -> None:
        await _forever()

    with pytest.raises(HandshakeDenied) as denied:
        await HandshakePipeline([FunctionPolicy(hangs)], timeout=0.05).run(_context())
    assert (denied.value.status, denied.value.policy) == (504, "hangs")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # not cancelled


async def test_a_task_cancelled_for_its_own_reasons_stays_cancelled() -> None:
    """The client gone while a policy waits: a cancellation, not a 504."""

    async def hangs(context: HandshakeContext) -> None:
        await _forever()

    run = asyncio.ensure_future(HandshakePipeline([FunctionPolicy(hangs)], timeout=5).run(_context()))
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_a_denial_inside_the_deadline_is_the_policys_own() -> None:
    async def refuses(context: HandshakeContext) -> None:
        raise HandshakeDenied(403, "no", reason="nope")

    with pytest.raises(HandshakeDenied) as denied:
        await HandshakePipeline(api_policies=[FunctionPolicy(refuses)], timeout=5).run(_context())
    assert (denied.value.status, denied.value.reason, denied.value.policy) == (403, "nope", "refuses")


@pytest.mark.parametrize("value", [0, -1, 301, "soon", float("inf")])
def test_an_invalid_policy_timeout_is_refused_by_field_path(value: object) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"apis": [api_entry()], "handshake_limits": {"policy_timeout": value}})
    assert "handshake_limits.policy_timeout" in str(refused.value)
