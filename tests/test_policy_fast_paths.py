"""The handshake policies' fast paths read and decide exactly as the general ones.

Each cut of a policy handshake's cost took a shortcut for the usual case: the pipeline's deadlines
share one timer (``handshake.pipeline``), the Redis pipe reads a decision's integers in one go
(``state.redis_pipe``), ``validate-jwt`` splits a bearer value without a regular expression
(``policies.token_sources``). These tests hold each shortcut to the general path's answer, and the
shared timer to each run's own deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ConnectionError

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.pipeline import FunctionPolicy, HandshakePipeline
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.policies.token_sources import TokenSource, token_copies, token_readings
from asgi_ws_gateway.state.base import Decision
from asgi_ws_gateway.state.redis_pipe import _parse


def _context(headers: list[tuple[bytes, bytes]] | None = None) -> HandshakeContext:
    scope = {"type": "websocket", "path": "/ws", "headers": headers or [], "query_string": b"",
             "client": ("10.0.0.1", 1)}  # fmt: skip
    return HandshakeContext("api", RequestView(scope, {}))


# -- the pipeline's deadlines: one timer for every run -----------------------------------------------


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


async def test_runs_that_ended_leave_the_deadline_queue() -> None:
    """Sequential handshakes hold no deadline once each has ended (the queue is bounded by the runs going)."""

    async def passes(context: HandshakeContext) -> None:
        await asyncio.sleep(0)

    pipeline = HandshakePipeline([FunctionPolicy(passes)], timeout=5)
    for _ in range(50):
        await pipeline.run(_context())
    assert pipeline._deadlines is not None and len(pipeline._deadlines) == 0


async def test_a_run_started_after_an_ended_one_still_gets_its_own_deadline() -> None:
    """The timer, set for the first run, finds it ended and waits for the next run's deadline: a 504."""
    release = asyncio.Event()

    async def waits_or_hangs(context: HandshakeContext) -> None:
        if context.request.header("x-hang") is not None:
            await _forever()
        await release.wait()

    pipeline = HandshakePipeline([FunctionPolicy(waits_or_hangs)], timeout=0.2)
    first = asyncio.ensure_future(pipeline.run(_context()))
    await asyncio.sleep(0.1)
    hanging = asyncio.ensure_future(pipeline.run(_context([(b"x-hang", b"1")])))
    await asyncio.sleep(0)
    release.set()
    await first  # ended within its deadline
    with pytest.raises(HandshakeDenied) as denied:
        await asyncio.wait_for(hanging, 5)
    assert (denied.value.status, denied.value.reason, denied.value.policy) == (504, "policy_timeout", "waits_or_hangs")
    assert pipeline._deadlines is not None and len(pipeline._deadlines) == 0


async def test_concurrent_hanging_runs_each_get_their_504_and_the_others_pass() -> None:
    async def hangs_when_asked(context: HandshakeContext) -> None:
        if context.request.header("x-hang") is not None:
            await _forever()

    pipeline = HandshakePipeline([FunctionPolicy(hangs_when_asked)], timeout=0.1)
    runs = [pipeline.run(_context([(b"x-hang", b"1")] if i % 3 == 0 else [])) for i in range(12)]
    results = await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 5)
    refused = [i for i, result in enumerate(results) if isinstance(result, HandshakeDenied) and result.status == 504]
    assert refused == [0, 3, 6, 9]
    assert all(result is None for i, result in enumerate(results) if i not in refused)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


# -- the Redis pipe: a decision's integers read in one go ---------------------------------------------

DECISIONS = [
    b"*3\r\n:1\r\n:99999\r\n:0\r\n",
    b"*4\r\n:0\r\n:0\r\n:1500\r\n:1767225600\r\n",
    b"*3\r\n:-1\r\n:-0\r\n:12345678901234567890\r\n",
    b"*1\r\n:7\r\n",
    b"*2\r\n:1\r\r\n:2\r\n",  # a CR inside an item: read as the item-by-item reading reads it
    b"*2\r\n: 1\r\n:2 \r\n",
]


@pytest.mark.parametrize("wire", DECISIONS)
def test_an_array_of_integers_is_read_as_item_by_item(wire: bytes) -> None:
    """Alone in the buffer (the shortcut) or followed by another reply (item by item): the same reply."""
    followed = _parse(wire + b"+OK\r\n", 0)
    assert followed is not None and followed[1] == len(wire)
    assert _parse(wire, 0) == (followed[0], len(wire))
    for cut in range(len(wire)):
        assert _parse(wire[:cut], 0) is None


class _Sent:
    """The connection's transport: what it writes is dropped."""

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        raise AssertionError("the connection was closed")


@pytest.mark.parametrize("wire", DECISIONS)
async def test_the_connection_reads_an_array_of_integers_as_parse_reads_it(wire: bytes) -> None:
    """The connection's own shortcut (an array of integers read whole by one match, before ``_parse``):
    each reply as ``_parse`` reads it, followed by an integer reply, however two reads cut the stream."""
    from asgi_ws_gateway.state.redis_pipe import _Connection

    stream = wire + b":5\r\n" + wire
    expected = _parse(wire, 0)
    assert expected is not None
    for cut in range(len(stream) + 1):
        connection = _Connection(timeout=60)
        connection.connection_made(_Sent())  # type: ignore[arg-type]
        calls = [connection.call(b"EVALSHA") for _ in range(3)]
        connection.data_received(stream[:cut])
        connection.data_received(stream[cut:])
        assert [call.result() for call in calls] == [expected[0], 5, expected[0]], cut


@pytest.mark.parametrize(
    "wire",
    [b"*2\r\n:1\r\n\r\n:2\r\n", b"*2\r\n:1\r\n:2x\r\n", b"*2\r\n:1\r\n?2\r\n", b"*1\r\n:1_\r\n"],
)
def test_an_array_that_is_not_integers_is_still_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ConnectionError, match="Protocol error"):
        _parse(wire, 0)


def test_a_shorter_or_longer_array_than_announced_is_not_taken_whole() -> None:
    assert _parse(b"*3\r\n:1\r\n:2\r\n", 0) is None  # the third item is still to come
    assert _parse(b"*1\r\n:1\r\n:2\r\n", 0) == ([1], 8)  # the second integer is the next reply


def test_a_decision_stays_frozen_and_compares_by_value() -> None:
    decision = Decision(True, 4)
    assert decision == Decision(True, 4, 0.0, 0.0) and hash(decision) == hash(Decision(True, 4, 0.0, 0.0))
    assert dataclasses.replace(decision, remaining=3) == Decision(True, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]


# -- validate-jwt's bearer value: split without a regular expression when it holds no tab --------------


@pytest.mark.parametrize(
    "value",
    ["Bearer abc", "Bearer   abc", "  Bearer abc  ", "bearer abc\x0b", "Bearer", "Bearer ", "Bearer  a b",
     "Basic abc", "Bearer:abc", "Bearer\tabc", "Bearer \t abc", "\tBearer abc", "Bearer\xa0abc"],
)  # fmt: skip
def test_a_bearer_value_is_read_as_the_blank_separated_reading_reads_it(value: str) -> None:
    """``given`` is the text before the first run of spaces and tabs, the token what follows it, stripped."""
    import re

    stripped = value.strip(" \t")
    given, *rest = re.split(r"[ \t]+", stripped, maxsplit=1)
    token = (rest[0] if rest else "").strip()
    expected = ([token], 0) if given.lower() == "bearer" else ([], 1)
    readings = token_readings([TokenSource(header="Authorization")])
    assert token_copies(readings, _context([(b"authorization", value.encode("latin-1"))])) == expected


# -- the upstream request's header edits: in place on the request's own copy ---------------------------


@given(
    st.lists(st.tuples(st.sampled_from(["x-a", "x-b", "host"]), st.text(max_size=3)), max_size=6),
    st.lists(st.tuples(st.sampled_from(["x-a", "x-b", "x-c"]), st.sampled_from(["override", "skip", "append",
                                                                                 "delete"]), st.text(max_size=3))),
)  # fmt: skip
def test_header_edits_in_place_make_what_the_general_edit_makes(
    headers: list[tuple[str, str]], edits: list[tuple[str, Any, str]]
) -> None:
    """Each edit, in order: the list edited in place equals the general editor's new list, and the request's
    headers the edits started from are not changed."""
    from asgi_ws_gateway.handshake.upstream_edits import _edit, _edit_header

    sent = list(headers)
    expected, edited = list(headers), list(headers)
    for name, action, value in edits:
        expected = _edit(expected, name, None if action == "delete" else value, action)
        _edit_header(edited, name, None if action == "delete" else value, action)
        assert edited == expected
    assert headers == sent
