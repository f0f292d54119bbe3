"""Message policies without sockets: pipeline actions, each policy's logic, scopes, config errors, the store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from asgi_ws_gateway.errors import CloseConnection, ConfigError, DropMessage
from asgi_ws_gateway.handshake.context import Subscription
from asgi_ws_gateway.log_throttle import OutageLog
from asgi_ws_gateway.messages.context import WRITABLE_DEPTH, ConnectionContext, ErrorReply, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePipeline, MessagePolicySet
from asgi_ws_gateway.policies.build import GatewayPolicies, load_config
from asgi_ws_gateway.policies.message_rates import SharedBudget
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.state.base import Reservation, StoreUnavailable
from asgi_ws_gateway.state.memory import MemoryState
from support.policies import context
from support.redis import SHARED_REDIS, redis_available, unique_prefix


class Controls:
    """Records what policies asked the relay to do."""

    def __init__(self) -> None:
        self.to_client: list[str | bytes] = []
        self.to_upstream: list[str | bytes] = []
        self.closed: list[tuple[int, str, int, str]] = []

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
        self.closed.append((client_code, client_reason, upstream_code, upstream_reason))

    async def send_to_client(self, data: str | bytes) -> bool:
        self.to_client.append(data)
        return True

    async def send_to_upstream(self, data: str | bytes) -> bool:
        self.to_upstream.append(data)
        return True

    def start(self, task: Any) -> None:
        pass


def _connection(**claims: Any) -> tuple[ConnectionContext, Controls]:
    handshake = context("/ws/chat", params={"room": "lobby"})
    handshake.claims = claims or None
    controls = Controls()
    return ConnectionContext(handshake, RelayStats(), controls), controls


def _policies(inbound: Sequence[Any] = (), outbound: Sequence[Any] = (), **api: Any) -> GatewayPolicies:
    config = load_config(
        {"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"],
                   "message_policies": {"inbound": list(inbound), "outbound": list(outbound)}, **api}]}
    )  # fmt: skip
    return GatewayPolicies(config, store=MemoryState())


def _pipelines(
    *args: Any, **claims: Any
) -> tuple[MessagePipeline | None, MessagePipeline | None, ConnectionContext, Controls]:
    policies = _policies(*args)
    connection, controls = _connection(**claims)
    chosen = policies.message_policies(connection.handshake)
    assert chosen is not None
    inbound, outbound = chosen.attach(connection)
    return inbound, outbound, connection, controls


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


def test_no_message_policies_means_no_set_and_the_plain_relay() -> None:
    policies = _policies()
    assert policies.message_policies(context("/ws/chat")) is None


async def test_drop_answers_the_sender_in_the_default_format_and_counts() -> None:
    inbound, _, connection, controls = _pipelines([{"limit-message-size": {"max": 3, "action": "drop"}}])
    assert inbound is not None
    assert await inbound.process("abc", 3) == "abc"
    assert await inbound.process("abcd", 4) is None
    assert [json.loads(m) for m in controls.to_client] == [
        {"type": "error", "error": "message_too_big", "detail": "message larger than 3 bytes",
         "policy": "limit-message-size"}
    ]  # fmt: skip
    assert connection.stats.policy_actions == {("limit-message-size", "drop", "inbound", "message_too_big"): 1}


async def test_outbound_drop_answers_the_upstream() -> None:
    _, outbound, _, controls = _pipelines([], [{"limit-message-size": {"max": 1, "action": "drop"}}])
    assert outbound is not None
    assert await outbound.process(b"xx", 2) is None
    assert len(controls.to_upstream) == 1 and not controls.to_client


async def test_close_action_is_raised_to_the_relay_with_codes() -> None:
    inbound, _, connection, _ = _pipelines([{"limit-message-size": {"max": 1}}])
    assert inbound is not None
    with pytest.raises(CloseConnection) as info:
        await inbound.process("xx", 2)
    close = info.value
    assert (close.code, close.detail, close.peer_code, close.peer_reason) == (
        1009, "message too big", 1001, "client message too big")  # fmt: skip
    assert connection.stats.policy_actions == {("limit-message-size", "close", "inbound", "message_too_big"): 1}


async def broken(message: WsMessage) -> None:
    raise RuntimeError("bug")


async def test_a_failing_policy_closes_with_1011() -> None:
    inbound, _, _, _ = _pipelines([broken])
    assert inbound is not None
    with pytest.raises(CloseConnection) as info:
        await inbound.process("x", 1)
    assert info.value.code == 1011


async def test_user_function_may_replace_drop_or_return_json() -> None:
    async def upper(message: WsMessage) -> str:
        assert isinstance(message.data, str)
        return message.data.upper()

    async def veto(message: WsMessage) -> None:
        if message.data == "VETO":
            raise DropMessage("vetoed", reply=False)

    async def wrap(message: WsMessage) -> dict[str, Any]:
        return {"wrapped": message.data}

    inbound, _, _, controls = _pipelines([upper, veto, wrap])
    assert inbound is not None
    assert await inbound.process("hi", 2) == '{"wrapped":"HI"}'
    assert await inbound.process("veto", 4) is None and controls.to_client == []


def test_message_replace_and_set_json_keep_sizes_and_frame_types() -> None:
    connection, _ = _connection()
    message = WsMessage(b'{"a":1}', 7, "inbound", connection)
    assert message.json() == {"a": 1}
    message.set_json({"a": "é"})
    assert message.data == '{"a":"é"}'.encode() and message.size == 10
    message.replace("é")
    assert (message.is_text, message.size) == (True, 2)


async def test_validate_message_binary_pass_and_close_codes() -> None:
    schema = {"type": "object"}
    inbound, _, _, _ = _pipelines([{"validate-message": {"schema": schema, "binary": "pass"}}])
    assert inbound is not None
    assert await inbound.process(b"\x00", 1) == b"\x00"
    inbound, _, _, _ = _pipelines([{"validate-message": {"schema": schema, "action": "close", "close_code": 1008}}])
    assert inbound is not None
    with pytest.raises(CloseConnection) as info:
        await inbound.process("[]", 2)
    assert (info.value.code, info.value.reason) == (1008, "schema_mismatch")


async def test_json_only_validation_without_a_schema() -> None:
    inbound, _, _, _ = _pipelines([{"validate-message": {}}])
    assert inbound is not None
    assert await inbound.process("[1]", 3) == "[1]"
    assert await inbound.process("{", 1) is None


async def test_transform_keeps_types_of_single_references_and_handles_non_objects() -> None:
    transform = {"transform-message": {"set": {"uid": "{jwt.uid}", "who": "user {jwt.uid}", "room": "{path.room}"},
                                       "non_object": "pass"}}  # fmt: skip
    inbound, _, _, _ = _pipelines([transform], uid=42)
    assert inbound is not None
    assert json.loads(await inbound.process("{}", 2) or "") == {"uid": 42, "who": "user 42", "room": "lobby"}
    assert await inbound.process("[1]", 3) == "[1]"
    inbound, _, _, controls = _pipelines([{"transform-message": {"remove": ["a.b"]}}])
    assert inbound is not None
    assert await inbound.process('{"a": {"b": 1, "c": 2}}', 1) == '{"a":{"c":2}}'
    assert await inbound.process("text", 4) is None
    assert json.loads(controls.to_client[0])["error"] == "not_json_object"


def test_credential_expiry_without_an_expiring_credential_does_nothing() -> None:
    policies = _policies([{"credential-expiry": {}}])
    connection, _ = _connection()
    chosen = policies.message_policies(connection.handshake)
    assert chosen is not None and chosen.attach(connection) == (None, None)


def test_error_reply_json_template_renders_connection_values() -> None:
    connection, _ = _connection(sub="ann")
    reply = ErrorReply({"kind": "{error.reason}", "user": "{jwt.sub}", "fixed": 1})
    text = reply.render(connection, DropMessage("r", "d"), "p", "inbound")
    assert json.loads(text) == {"kind": "r", "user": "ann", "fixed": 1}


def test_config_problems_are_reported_by_field_path() -> None:
    api = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"]}
    problems = _problems({
        "message_policies": {"inbound": [{"validate-jwt": {}}]},
        "apis": [{**api, "message_policies": {
            "inbound": [{"rate-limit-messages": {"window": 1}}, {"transform-message": {"set": {"u": "{nope.x}"}}},
                        {"transform-message": {"call": "no_such_module:f"}}],
            "outbound": [{"credential-expiry": {}}, {"validate-message": {"schema": {"type": 12}}}],
            "error_reply": {"format": "text", "template": "{error.nope}"}}}],
    })  # fmt: skip
    assert [p.split(":")[0] for p in problems] == [
        "message_policies.inbound[0]",
        "apis[0].message_policies.inbound[0].rate-limit-messages",
        "apis[0].message_policies.inbound[1].transform-message.set",
        # inbound[2]'s call is not imported while anything else is invalid (nothing is, before validation passed)
        "apis[0].message_policies.outbound[1].validate-message.schema",
        "apis[0].message_policies.outbound[0]",
        "apis[0].message_policies.error_reply.template",
    ]
    assert "unknown message policy type 'validate-jwt'" in problems[0]


def test_scopes_run_global_product_api_and_skip_removes_inherited() -> None:
    size = {"limit-message-size": {"max": 10}}
    config = load_config({
        "message_policies": {"inbound": [{"limit-message-size": {"max": 5, "name": "global-size"}}]},
        "products": [{"name": "gold", "apis": ["chat"], "message_policies": {"inbound": [{"validate-message": {}}]}},
                     {"name": "open", "apis": ["chat"], "subscription_required": False,
                      "message_policies": {"outbound": [size]}}],
        "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"],
                  "skip_policies": ["global-size"], "message_policies": {"inbound": [size]}}],
    })  # fmt: skip
    policies = GatewayPolicies(config, store=MemoryState())
    handshake = context("/ws/chat")
    chosen = policies.message_policies(handshake)
    assert isinstance(chosen, MessagePolicySet)
    assert [p.name for p in chosen.inbound] == ["limit-message-size"]
    assert [p.name for p in chosen.outbound] == ["limit-message-size"]
    handshake.subscription = Subscription(id="acme", product="gold", name="ACME")
    gold = policies.message_policies(handshake)
    assert gold is not None
    assert [p.name for p in gold.inbound] == ["validate-message", "limit-message-size"] and gold.outbound == []


def test_skip_naming_nothing_inherited_is_an_error() -> None:
    api = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"], "skip_policies": ["nothing"]}
    assert _problems({"apis": [api]})[0].startswith("apis[0].skip_policies[0]: no inherited policy")


class CountingStore(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        self.calls += 1
        return await super().reserve(key, window, requests)


async def test_shared_budget_reserves_in_batches_and_stops_asking_when_spent() -> None:
    store = CountingStore()
    budget = SharedBudget(store, "k", (100, 2**62), 60.0, 0.1, fail_open=True)
    admitted = [await budget.refill(0.0, 1) == 0 for _ in range(150)]
    assert admitted.count(True) == 100
    assert store.calls <= 11  # ten batches of ten, then one answer that the window is spent


def _store(kind: str) -> Any:
    """A store of ``kind``: in memory, or the shared Redis under a prefix of its own (skipped without one)."""
    if kind == "redis":
        if not redis_available():
            pytest.skip("Redis is not running")
        from asgi_ws_gateway.state.redis import RedisState

        return RedisState(SHARED_REDIS, prefix=unique_prefix())
    return MemoryState()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_store_reserve_grants_what_is_left_in_the_window(kind: str) -> None:
    store = _store(kind)
    try:
        first = await store.reserve(f"{store.prefix}:r", 60, [(7, 10), (500, 1000)])
        second = await store.reserve(f"{store.prefix}:r", 60, [(7, 10), (100, 1000)])
        assert first.granted == (7, 500) and second.granted == (3, 100)
        assert second.window == first.window and 0 < second.resets_in <= 60
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_store_refund_gives_back_only_into_its_window_and_never_below_zero(kind: str) -> None:
    """What a worker reserved and did not use goes back into the window it was granted in; a window that
    rolled (another index) is left alone, and a counter never goes below 0."""
    store = _store(kind)
    key = f"{store.prefix}:r"
    try:
        first = await store.reserve(key, 60, [(7, 10), (500, 1000)])
        await store.refund(key, first.window - 1, [7, 500])  # a window gone by: nothing
        assert (await store.reserve(key, 60, [(0, 10), (0, 1000)])).granted == (0, 0)
        await store.refund(key, first.window, [5, 400])
        assert (await store.reserve(key, 60, [(10, 10), (1000, 1000)])).granted == (8, 900)
        await store.refund(key, first.window, [50, 5000])  # more than counted: down to 0, not below
        assert (await store.reserve(key, 60, [(20, 10), (2000, 1000)])).granted == (10, 1000)
    finally:
        await store.aclose()


async def test_a_shared_budget_is_given_back_when_its_last_holder_ends_not_before() -> None:
    """Two connections of a key on one worker: the first's end gives nothing back (the other spends on);
    the last's gives back the unused part and empties the budget, so what comes next reserves afresh."""
    store = CountingStore()
    budget = SharedBudget(store, "k", (100, 2**62), 60.0, 0.1, fail_open=True)

    async def counted() -> int:
        """What the store counts in the window: a probe takes the rest, then gives it back."""
        probe = await store.reserve("k", 60.0, [(100, 100)])
        await store.refund("k", probe.window, probe.granted)
        return 100 - probe.granted[0]

    first, second = (asyncio.create_task(budget.held()) for _ in range(2))
    await asyncio.sleep(0)  # both hold it
    assert await budget.refill(time.monotonic(), 1) == 0  # a batch of 10 reserved, 1 spent
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert budget.left[0] == 9 and await counted() == 10
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert budget.left[0] == 0 and await counted() == 1
    calls = store.calls
    assert await budget.refill(time.monotonic(), 1) == 0
    assert store.calls == calls + 1  # reserved afresh, not spent from what was given back


class DownStore(MemoryState):
    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        raise StoreUnavailable("Redis failed: ConnectionError")


async def test_a_store_outage_is_one_log_line_for_all_the_policys_keys(caplog: pytest.LogCaptureFixture) -> None:
    """Each key's window used to log its own line: thousands of users, thousands of lines a second."""
    log = OutageLog()
    budgets = [
        SharedBudget(DownStore(), f"user-{i}", (10, 2**62), 1.0, 0.1, fail_open=True, log=log) for i in range(50)
    ]
    assert all([await budget.refill(0.0, 1) == 0 for budget in budgets])  # fail-open: admitted
    lines = [r.getMessage() for r in caplog.records if "unchecked" in r.getMessage()]
    assert lines == [
        "message rate limit unchecked (fail-open) for 1 key window(s) of 1 s since the last such line: "
        "Redis failed: ConnectionError"
    ]


def _nested_text(levels: int, kind: str) -> str:
    return '{"a":' * levels + "1" + "}" * levels if kind == "object" else "[" * levels + "]" * levels


@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("levels", [200, 300, 1000])
async def test_a_deeply_nested_message_that_fails_the_schema_is_dropped_not_a_policy_failure(
    kind: str, levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    """jsonschema-rs cannot describe an error in a value nested over ~255 levels: the drop says less.
    Nested deeper than Python's parser goes, the names cannot be checked for duplicates: dropped too."""
    schema = {"type": "string"}
    inbound, _, _, controls = _pipelines([{"validate-message": {"schema": schema}}])
    assert inbound is not None
    assert await inbound.process(_nested_text(levels, kind), 1) is None
    reason = "ambiguous_json" if (levels, kind) == (1000, "object") else "schema_mismatch"
    assert json.loads(controls.to_client[-1])["error"] == reason
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("levels", [WRITABLE_DEPTH + 1, 1000])
async def test_a_message_too_deep_to_write_back_is_dropped_with_a_reply(
    levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    inbound, _, _, controls = _pipelines([{"transform-message": {"set": {"b": "1"}}}])
    assert inbound is not None
    assert await inbound.process(_nested_text(levels, "object"), 1) is None
    reply = json.loads(controls.to_client[-1])
    expected = "too_deep" if levels == WRITABLE_DEPTH + 1 else "ambiguous_json"  # deeper than names are checked
    assert (reply["error"], reply["policy"]) == (expected, "transform-message")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    written = await inbound.process(_nested_text(WRITABLE_DEPTH, "object"), 1)  # as deep as orjson writes
    assert written is not None and json.loads(written)["b"] == "1"


async def test_a_policy_that_sets_json_nothing_can_write_still_fails_the_policy() -> None:
    async def unwritable(message: WsMessage) -> None:
        message.set_json({"when": {1, 2}})  # a set: a bug of the policy, not the client's message

    inbound, _, _, _ = _pipelines([unwritable])
    assert inbound is not None
    with pytest.raises(CloseConnection) as info:
        await inbound.process("{}", 2)
    assert (info.value.code, info.value.reason) == (1011, "policy_error")


async def test_a_message_written_again_larger_than_max_message_size_is_dropped() -> None:
    """``1e15`` is written ``1000000000000000.0``: what the transport admitted may not grow past its limit."""
    policies = _policies([{"transform-message": {"set": {"via": "gateway"}}}], max_message_size=100)
    connection, controls = _connection()
    chosen = policies.message_policies(connection.handshake)
    assert chosen is not None
    inbound, _ = chosen.attach(connection)
    assert inbound is not None
    grows = '{"n": [' + ",".join(["1e15"] * 18) + "]}"
    assert len(grows) <= 100
    assert await inbound.process(grows, len(grows)) is None
    assert json.loads(controls.to_client[0])["error"] == "message_too_big"
    assert connection.stats.policy_actions == {("transform-message", "drop", "inbound", "message_too_big"): 1}
    assert await inbound.process('{"n": [1]}', 10) == '{"n":[1],"via":"gateway"}'
