"""Attacks on ``validate-message``'s cost per message: what one message that fails its schema
costs the gateway (the event loop serves every connection of the worker)."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any

import orjson
import pytest

from asgi_ws_gateway.json_names import check_unique_names
from asgi_ws_gateway.messages.context import ConnectionContext
from asgi_ws_gateway.messages.pipeline import MessagePipeline
from asgi_ws_gateway.policies.build import GatewayPolicies, load_config
from asgi_ws_gateway.policies.message_checks import ValidateMessage
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.state.memory import MemoryState
from support.policies import context

ITEMS = 20_000
"""Items of a message that all fail its schema (the message: 40 KB; max_message_size allows 1 MiB)."""
ARRAY = "[" + ",".join(["0"] * ITEMS) + "]"
OBJECT = "{" + ",".join(f'"k{i}":0' for i in range(ITEMS)) + "}"
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "items": ({"type": "array", "items": {"type": "string"}}, ARRAY),
    "prefixItems and items": ({"prefixItems": [{"type": "number"}], "items": {"type": "string"}}, ARRAY),
    "additionalProperties": ({"additionalProperties": {"type": "string"}}, OBJECT),
}


class _Controls:
    def __init__(self) -> None:
        self.to_client: list[str | bytes] = []

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
        pass

    async def send_to_client(self, data: str | bytes) -> bool:
        self.to_client.append(data)
        return True

    async def send_to_upstream(self, data: str | bytes) -> bool:
        return True

    def start(self, task: Any) -> None:
        pass


def _check(schema: dict[str, Any], controls: _Controls | None = None) -> MessagePipeline:
    """The inbound pipeline of a connection to an API with ``validate-message: {schema}``."""
    inbound = [{"validate-message": {"schema": schema}}]
    api = {
        "name": "chat",
        "path": "/ws/chat",
        "upstreams": ["ws://127.0.0.1:9/"],
        "message_policies": {"inbound": inbound},
    }
    config = load_config({"apis": [api]})
    policies = GatewayPolicies(config, store=MemoryState())
    connection = ConnectionContext(context("/ws/chat"), RelayStats(), controls or _Controls())
    chosen = policies.message_policies(connection.handshake)
    assert chosen is not None
    pipeline, _ = chosen.attach(connection)
    assert pipeline is not None
    return pipeline


@pytest.mark.parametrize("schema, message", CASES.values(), ids=CASES.keys())
def test_a_schema_mismatch_costs_its_first_error_not_one_per_failing_item(schema: dict[str, Any], message: str) -> None:
    """The drop's detail names the first error; every error was built first (an 800 KB message of
    400,000 numbers held the event loop 6 s). Measured in memory, not time: each error built is ~1 KB
    (19 MB for these 20,000 items), where reading the message as JSON takes 0.6 to 6.6 MB."""
    tracemalloc.start()
    try:
        orjson.loads(message)
        check_unique_names(message)
        reading = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        pending = _check(schema).process_now(message, len(message))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pending is not None and not isinstance(pending, str | bytes)  # a drop, to be answered
    pending.close()
    assert peak < 2 * reading + 256 * 1024, f"{peak} bytes to check one {len(message)}-byte message"


def test_a_schema_mismatch_quotes_no_long_name_of_the_message() -> None:
    """The detail names the failing value's path; a name in it is the sender's, and was quoted whole
    (a 100 KB name: a 100 KB answer)."""
    message = '{"%s": 0}' % ("n" * 100_000)
    controls = _Controls()
    pipeline = _check({"additionalProperties": {"type": "string"}}, controls)
    assert asyncio.run(pipeline.process(message, len(message))) is None  # dropped, and answered:
    detail = json.loads(controls.to_client[0])["detail"]
    assert detail == "the message does not match the schema"  # too large to describe: nothing quoted
    message = '{"%s": 0}' % ("n" * 10_000)  # described: the name cut
    assert asyncio.run(pipeline.process(message, len(message))) is None
    detail = json.loads(controls.to_client[1])["detail"]
    assert detail == f"the message does not match the schema at /{'n' * 40}... (type)"


class _Counting:
    """A validator's calls, counted: the checks the gateway makes of one message."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def is_valid(self, value: Any) -> bool:
        self.calls.append("is_valid")
        return bool(self.inner.is_valid(value))

    def validate(self, value: Any) -> None:
        self.calls.append("validate")
        self.inner.validate(value)


@pytest.mark.parametrize(
    ("message", "calls", "described"),
    [
        ('{"text": 1}', ["validate"], True),
        ('{"text": "ok"}', ["validate"], None),
        ('{"text": [' + ",".join(["1"] * 40_000) + "]}", ["is_valid"], False),  # past DESCRIBED_UP_TO (64 KiB)
    ],
    ids=["invalid", "valid", "large-invalid"],
)
def test_a_message_is_parsed_and_matched_once(message: str, calls: list[str], described: bool | None) -> None:
    """An attack pass found an invalid message checked (``is_valid``) and then described (``validate``):
    its patterns matched twice, and a 1 MiB one failing at its root built an error holding all of it
    (110-270 ms and 90 MB, against 1-2 ms to pass one)."""
    controls = _Controls()
    schema = {"properties": {"text": {"type": "string"}}}
    api = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"],
           "message_policies": {"inbound": [{"validate-message": {"schema": schema}}]}}  # fmt: skip
    policies = GatewayPolicies(load_config({"apis": [api]}), store=MemoryState())
    (policy,) = [built for built in policies._builder.built if isinstance(built, ValidateMessage)]
    assert policy.validator is not None
    counting = policy.validator.plain = _Counting(policy.validator.plain)
    connection = ConnectionContext(context("/ws/chat"), RelayStats(), controls)
    chosen = policies.message_policies(connection.handshake)
    assert chosen is not None
    pipeline, _ = chosen.attach(connection)
    assert pipeline is not None
    result = pipeline.process_now(message, len(message))
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    assert counting.calls == calls
    if described is None:
        assert result == message
    else:
        assert result is None
        detail = json.loads(controls.to_client[0])["detail"]
        assert detail.endswith("at /text (type)") == described
