"""The upstream connect's ``connect_timeout`` under the splice (``open_raw``): one timer for every connect
of a timeout (``asgi_ws_gateway.deadlines``) keeps ``asyncio.timeout``'s behaviour.

A connect that runs out is an ``UpstreamTimeout``; one that finishes in time is not touched by the
others' deadlines; a connect cancelled for its own reasons (the client gone) stays cancelled, its
cancellation not taken for the deadline's; nothing is left queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from asgi_ws_gateway.config.apis import ApiConfig, UpstreamConfig
from asgi_ws_gateway.deadlines import Deadlines, DeadlinesByTimeout
from asgi_ws_gateway.errors import UpstreamTimeout
from asgi_ws_gateway.passthrough import raw_upstream
from asgi_ws_gateway.passthrough.raw_upstream import open_raw
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.tls import UpstreamTls
from support.upstream import SilentUpstream

TIMEOUT = 0.3


@contextlib.asynccontextmanager
async def _mute() -> AsyncIterator[int]:
    """A TCP server that accepts, reads and never answers: its port."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()


def _open(port: int, timeout: float = TIMEOUT) -> asyncio.Task[raw_upstream.RawUpstream]:
    url = f"ws://127.0.0.1:{port}/"
    api = ApiConfig(name="x", path="/x", upstreams=[UpstreamConfig(url=url)], connect_timeout=timeout)
    request = UpstreamRequest(url=url, headers=[], subprotocols=[], scope={"type": "websocket", "headers": []})
    return asyncio.ensure_future(open_raw(api, request, UpstreamTls(api.upstreams[0])))


def _queued(timeout: float = TIMEOUT) -> int:
    return len(raw_upstream._DEADLINES.get(asyncio.get_running_loop(), timeout))


async def test_a_connect_that_gets_no_answer_is_an_upstream_timeout() -> None:
    async with _mute() as port:
        with pytest.raises(UpstreamTimeout, match=f"did not complete the handshake in {TIMEOUT:g} s"):
            await asyncio.wait_for(_open(port), 10)
    assert _queued() == 0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's cancellation was taken back


async def test_connects_that_answer_are_not_cut_by_the_others_deadlines() -> None:
    """Silent and answering upstreams at once, of one timeout: each silent one times out, and the answering
    ones, started before, between and after, all connect."""
    async with _mute() as mute, SilentUpstream() as answering:
        tasks = []
        for _ in range(3):
            tasks.append(_open(answering.port))
            tasks.append(_open(mute))
            await asyncio.sleep(TIMEOUT / 4)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        for index, result in enumerate(results):
            if index % 2:
                assert isinstance(result, UpstreamTimeout), result
            else:
                assert isinstance(result, raw_upstream.RawUpstream), result
                result.transport.abort()
    assert _queued() == 0


async def test_a_connect_cancelled_for_its_own_reasons_stays_cancelled() -> None:
    """The client left: the connect's task is cancelled before its deadline, and that is no timeout."""
    async with _mute() as port:
        task = _open(port, timeout=5.0)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _queued(5.0) == 0


async def test_a_cancellation_racing_the_deadline_stays_the_tasks() -> None:
    """Cancelled from outside in the loop turn its deadline comes: it ends cancelled, as under
    asyncio.timeout (cancelled twice, one taken back): the caller's cancellation is not lost."""
    async with _mute() as port:
        task = _open(port, timeout=0.05)
        await asyncio.sleep(0.02)  # waiting for the answer
        time.sleep(0.1)  # noqa: ASYNC251 (the loop held on purpose: the deadline is due when it next turns)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _queued(0.05) == 0


async def test_the_deadlines_of_each_timeout_on_the_running_loop() -> None:
    kept = DeadlinesByTimeout(most=2)
    loop = asyncio.get_running_loop()
    first = kept.get(loop, 1.0)
    assert kept.get(loop, 1.0) is first and first.timeout == 1.0 and first.loop is loop
    assert kept.get(loop, 2.0) is not first
    kept.get(loop, 3.0)  # a third: the two kept are forgotten
    assert kept.get(loop, 1.0) is not first


def test_deadlines_of_another_loop_are_not_reused() -> None:
    kept = DeadlinesByTimeout()

    async def deadlines() -> Deadlines:
        return kept.get(asyncio.get_running_loop(), 1.0)

    first = asyncio.run(deadlines())
    assert asyncio.run(deadlines()) is not first


async def test_a_deadline_is_kept_for_a_task_only() -> None:
    """Outside a task (a loop's callback) there is nothing to cancel: a RuntimeError, as asyncio.timeout's."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, 1.0)
    raised: asyncio.Future[BaseException | None] = loop.create_future()

    def callback() -> None:
        try:
            deadlines.start()
        except RuntimeError as exc:
            raised.set_result(exc)
        else:
            raised.set_result(None)

    loop.call_soon(callback)
    assert isinstance(await raised, RuntimeError) and len(deadlines) == 0
