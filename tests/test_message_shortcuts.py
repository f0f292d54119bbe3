"""The pipeline's shortcut: a message that passes every check's ``passes`` goes on without the handlers.

Each built-in check is run twice over the same messages: through a pipeline with the shortcuts and
through one made of the same handlers without them; results, counts, replies and closes must match.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest

from asgi_ws_gateway._types import Data
from asgi_ws_gateway.errors import CloseConnection, DropMessage
from asgi_ws_gateway.messages.context import ConnectionContext, Direction, MessageCheck, MessageHandler, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePipeline, MessagePolicySet
from asgi_ws_gateway.policies.build import GatewayPolicies, load_config
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.state.memory import MemoryState
from support.policies import context

SCHEMA = {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["chat"]}}}
FOLDING_ALIKE = {"type": "object", "properties": {"id": {}, "ID": {}, "ss": {}, "\u00df": {}, "type": {}, "text": {}}}
"""Declared names of which some fold alike (id/ID, ss/ß): two of those in one message are one name twice."""
AT_LIMIT = '{"type":"chat","text":"' + "x" * 16 + '"}'  # 40 bytes
OVER_LIMIT = '{"type":"chat","text":"' + "x" * 17 + '"}'  # 41 bytes


class Controls:
    def __init__(self) -> None:
        self.to_client: list[Data] = []
        self.to_upstream: list[Data] = []

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
        raise AssertionError("no policy here closes from outside the pumps")

    async def send_to_client(self, data: Data) -> bool:
        self.to_client.append(data)
        return True

    async def send_to_upstream(self, data: Data) -> bool:
        self.to_upstream.append(data)
        return True

    def start(self, task: Any) -> None:
        pass


def _attach(inbound: Sequence[Any]) -> tuple[MessagePipeline, ConnectionContext, Controls]:
    config = load_config({"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"],
                                    "message_policies": {"inbound": list(inbound)}}]})  # fmt: skip
    controls = Controls()
    connection = ConnectionContext(context("/ws/chat"), RelayStats(), controls)
    chosen = GatewayPolicies(config, store=MemoryState()).message_policies(connection.handshake)
    assert chosen is not None
    pipeline = chosen.attach(connection)[0]
    assert pipeline is not None
    return pipeline, connection, controls


def _twins(inbound: Sequence[Any]) -> tuple[tuple[MessagePipeline, ConnectionContext, Controls], ...]:
    """The policies attached twice: with the shortcuts, and the same handlers without them."""
    fast = _attach(inbound)
    slow, connection, controls = _attach(inbound)
    plain = MessagePipeline(list(slow.handlers), "inbound", connection, slow.reply)
    assert fast[0].checks is not None and plain.checks is None
    return fast, (plain, connection, controls)


async def _outcome(pipeline: MessagePipeline, data: Data) -> object:
    size = len(data.encode() if isinstance(data, str) else data)
    try:
        result = pipeline.process_now(data, size)
        if result is None or isinstance(result, str | bytes):
            return ("now", result)
        return ("awaited", await result)
    except CloseConnection as close:
        return ("close", close.code, close.reason, close.peer_code, close.peer_reason)


CHECKS = [
    pytest.param([{"limit-message-size": {"max": 40, "action": "drop"}}], id="size-drop"),
    pytest.param([{"limit-message-size": {"max": 40}}], id="size-close"),
    pytest.param([{"validate-message": {"schema": SCHEMA}}], id="schema-drop"),
    pytest.param([{"validate-message": {"schema": SCHEMA, "action": "close", "close_code": 1008}}], id="schema-close"),
    pytest.param([{"validate-message": {"binary": "pass"}}], id="json-binary-pass"),
    pytest.param([{"validate-message": {"schema": FOLDING_ALIKE}}], id="schema-names-folding-alike"),
    pytest.param([{"rate-limit-messages": {"messages": 3, "window": 3600, "action": "drop"}}], id="rate-drop"),
    pytest.param([{"rate-limit-messages": {"bytes": 100, "window": 3600, "action": "close"}}], id="rate-bytes-close"),
    pytest.param(
        [
            {"limit-message-size": {"max": 40, "action": "drop"}},
            {"rate-limit-messages": {"messages": 4, "window": 3600, "action": "drop"}},
            {"validate-message": {"schema": SCHEMA}},
        ],
        id="size-rate-schema",
    ),
]
MESSAGES: list[Data] = [AT_LIMIT, OVER_LIMIT, "{", '{"type":"other"}', b'{"type":"chat"}', "[]", b"\x89PNG",
                        b'\xef\xbb\xbf{"type":"chat"}', AT_LIMIT, AT_LIMIT, '{"id":1,"ID":2}', '{"ss":1,"\u00df":2}',
                        '{"type":"chat","TYPE":"x"}', '{"type":"chat","id":1,"text":"x"}']  # fmt: skip


@pytest.mark.parametrize("inbound", CHECKS)
async def test_the_shortcuts_decide_as_the_handlers_do(inbound: list[Any]) -> None:
    """Same results, counts and error replies with and without the shortcuts, message by message."""
    (fast, fast_connection, fast_controls), (plain, plain_connection, plain_controls) = _twins(inbound)
    for data in MESSAGES:
        assert await _outcome(fast, data) == await _outcome(plain, data), data
    assert fast_connection.stats.policy_actions == plain_connection.stats.policy_actions
    assert fast_controls.to_client == plain_controls.to_client
    assert fast_connection.stats.policy_actions  # the messages exercised at least one refusal


async def test_a_message_exactly_at_the_size_limit_passes_and_one_byte_more_does_not() -> None:
    (fast, connection, controls), _ = _twins([{"limit-message-size": {"max": 40, "action": "drop"}}])
    assert fast.process_now(AT_LIMIT, 40) is AT_LIMIT
    assert connection.stats.policy_actions == {}
    assert await _outcome(fast, OVER_LIMIT) == ("awaited", None)  # dropped, once its sender is answered
    assert len(controls.to_client) == 1
    assert connection.stats.policy_actions == {("limit-message-size", "drop", "inbound", "message_too_big"): 1}


async def test_a_delayed_message_still_meets_the_checks_after_the_wait() -> None:
    """A rate limit that waits hands over to its handler; the schema check after it then runs in full."""
    rate = {"rate-limit-messages": {"messages": 1, "window": 0.01, "action": "delay"}}
    (fast, connection, controls), _ = _twins([rate, {"validate-message": {"schema": SCHEMA}}])
    assert fast.process_now('{"type":"chat"}', 15) == '{"type":"chat"}'
    waiting = fast.process_now('{"type":"other"}', 16)
    assert not isinstance(waiting, str | bytes) and waiting is not None
    assert await waiting is None  # waited for the window, then refused by the schema
    assert connection.stats.policy_actions == {
        ("rate-limit-messages", "delay", "inbound", "rate_limited"): 1,
        ("validate-message", "drop", "inbound", "schema_mismatch"): 1,
    }
    assert len(controls.to_client) == 1


class Recorder:
    """A check whose shortcut and handler record each call; the shortcut passes per ``verdict``."""

    def __init__(self, name: str, calls: list[str], verdict: str = "pass") -> None:
        self.name, self.calls, self.verdict = name, calls, verdict

    def handle(self, message: WsMessage) -> Awaitable[None] | None:
        self.calls.append(f"{self.name}.handle")
        if self.verdict == "drop":
            raise DropMessage("no", reply=False)
        return None

    def passes(self, data: Data, size: int) -> bool:
        self.calls.append(f"{self.name}.passes")
        if self.verdict == "raise":
            raise RuntimeError("the shortcut's own trouble")
        return self.verdict == "pass"

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        return MessageCheck(self.handle, self.passes)


def _pipeline(*policies: Any) -> tuple[MessagePipeline, ConnectionContext]:
    connection = ConnectionContext(context("/ws/chat"), RelayStats(), Controls())
    pipeline = MessagePolicySet(list(policies), []).attach(connection)[0]
    assert pipeline is not None
    return pipeline, connection


def test_every_shortcut_passing_runs_no_handler_and_keeps_the_message_object() -> None:
    calls: list[str] = []
    pipeline, _ = _pipeline(Recorder("a", calls), Recorder("b", calls))
    data = "hello"
    assert pipeline.process_now(data, 5) is data
    assert calls == ["a.passes", "b.passes"]


@pytest.mark.parametrize("verdict", ["fail", "raise"])
def test_the_first_shortcut_not_passing_hands_over_to_its_handler_and_the_rest_run_in_full(verdict: str) -> None:
    """Checks before it are not run again (their effects happened once); its handler and later ones run."""
    calls: list[str] = []
    pipeline, _ = _pipeline(Recorder("a", calls), Recorder("b", calls, verdict), Recorder("c", calls))
    assert pipeline.process_now("hello", 5) == "hello"
    assert calls == ["a.passes", "b.passes", "b.handle", "c.handle"]


def test_a_handler_refusing_after_its_shortcut_did_not_pass_is_counted_once() -> None:
    calls: list[str] = []
    pipeline, connection = _pipeline(Recorder("a", calls), Recorder("b", calls, "drop"))
    assert pipeline.process_now("hello", 5) is None
    assert calls == ["a.passes", "b.passes", "b.handle"]
    assert connection.stats.policy_actions == {("b", "drop", "inbound", "no"): 1}


def test_one_handler_without_a_shortcut_runs_every_handler_in_full() -> None:
    calls: list[str] = []

    class Plain:
        name = "plain"

        def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
            def handle(message: WsMessage) -> None:
                calls.append("plain.handle")

            return handle

    pipeline, _ = _pipeline(Recorder("a", calls), Plain(), Recorder("c", calls))
    assert pipeline.checks is None
    assert pipeline.process_now("hello", 5) == "hello"
    assert calls == ["a.handle", "plain.handle", "c.handle"]


async def test_a_step_that_waits_after_a_shortcut_returns_a_coroutine_and_the_rest_run_after_it() -> None:
    calls: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    class Waits(Recorder):
        def handle(self, message: WsMessage) -> Awaitable[None] | None:
            calls.append("w.handle")
            return gate

    pipeline, _ = _pipeline(Recorder("a", calls), Waits("w", calls, "fail"), Recorder("c", calls))
    pending = pipeline.process_now("hello", 5)
    assert pending is not None and not isinstance(pending, str | bytes)
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0)
    assert calls == ["a.passes", "w.passes", "w.handle"]  # c waits for w
    gate.set_result(None)
    assert await task == "hello"
    assert calls == ["a.passes", "w.passes", "w.handle", "c.handle"]


class SizeLimit(Recorder):
    """A size limit declared as such (``max_size``): the pipeline compares sizes without its shortcut."""

    def __init__(self, name: str, calls: list[str], limit: int) -> None:
        super().__init__(name, calls)
        self.limit = limit

    def handle(self, message: WsMessage) -> Awaitable[None] | None:
        self.calls.append(f"{self.name}.handle")
        if message.size > self.limit:
            raise DropMessage("too_big", reply=False)
        return None

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        return MessageCheck(self.handle, self.passes, max_size=self.limit)


def test_size_limits_are_compared_once_for_all_without_their_shortcuts() -> None:
    calls: list[str] = []
    pipeline, _ = _pipeline(SizeLimit("ten", calls, 10), Recorder("a", calls), SizeLimit("five", calls, 5))
    assert pipeline.max_size == 5
    assert pipeline.process_now("12345", 5) == "12345"
    assert calls == ["a.passes"]


def test_a_message_over_the_smallest_size_limit_runs_every_handler_from_the_first() -> None:
    """No shortcut ran for it (the size is compared first), so none of their effects happened yet."""
    calls: list[str] = []
    pipeline, connection = _pipeline(SizeLimit("ten", calls, 10), Recorder("a", calls), SizeLimit("five", calls, 5))
    assert pipeline.process_now("123456", 6) is None
    assert calls == ["ten.handle", "a.handle", "five.handle"]
    assert connection.stats.policy_actions == {("five", "drop", "inbound", "too_big"): 1}


def test_a_shortcut_failing_after_a_size_limit_hands_over_to_its_own_handler() -> None:
    calls: list[str] = []
    pipeline, _ = _pipeline(SizeLimit("ten", calls, 10), Recorder("a", calls, "fail"), Recorder("b", calls))
    assert pipeline.process_now("hello", 5) == "hello"
    assert calls == ["a.passes", "a.handle", "b.handle"]


@pytest.mark.parametrize("how", ["closed", "task-cancelled"])
async def test_a_waiting_step_closed_or_cancelled_before_it_started_leaves_no_awaitable_never_awaited(how: str) -> None:
    """The frame relay closes a step it drops before its task ran (a close, the connection's end): the
    handler's awaitable it was to await is closed with it, not left for the collector to warn about."""
    rate = {"rate-limit-messages": {"messages": 1, "window": 60, "action": "delay"}}
    (fast, _, _), _ = _twins([rate])
    assert fast.process_now("a", 1) == "a"
    step = fast.process_now("b", 1)
    assert step is not None and not isinstance(step, str | bytes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how == "closed":
            step.close()
        else:
            task = asyncio.create_task(step)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            step.close()  # as the frame relay's _close_step does
        del step
        gc.collect()
    assert [str(warning.message) for warning in caught] == []
