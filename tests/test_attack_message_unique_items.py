"""``uniqueItems`` costs a message time linear in its size, whatever integers it holds.

jsonschema-rs's ``uniqueItems`` hashes numbers coarsely: integers past 2**53 (a list of 64-bit ids,
``2**63 + i``) share a few buckets and its check turned quadratic. An attack pass (round five) sent
one 84 KB message of 4,000 such integers to an API whose schema says ``{type: array, items: {type:
integer}, uniqueItems: true}``: the worker's event loop, and every connection on it, stood still for
6.5 s; 20,000 (420 KB) for well over a minute. The gateway checks such a message with its own
``uniqueItems`` (``policies/unique_items.py``), which answers what jsonschema-rs answers.
A real ``asgi-ws-gateway run`` and a real upstream that echoes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.policies.unique_items import LONG_INTEGERS, SchemaValidators
from support.clients import connect
from support.processes import ServerProcess, ready_server
from support.upstream import UpstreamServer

IDS = {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}
TREE = {"type": "object", "properties": {"children": {"type": "array", "uniqueItems": True, "items": {"$ref": "#"}}}}
LONG_IDS = [2**63 + i for i in range(20_000)]
"""20,000 distinct ids past 2**63: 420 KB, far over a minute of the event loop before."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer) -> Iterator[ServerProcess]:
    def api(name: str, schema: dict[str, Any], **more: Any) -> dict[str, Any]:
        inbound = [{"validate-message": {"schema": schema}}]
        return {"name": name, "path": f"/{name}", "upstreams": [upstream_server.url("/echo")],
                "message_policies": {"inbound": inbound}, **more}  # fmt: skip

    config = {"apis": [api("ids", IDS), api("tree", TREE), api("relay", IDS, passthrough=False)]}
    path = Path(tmp_path_factory.mktemp("unique")) / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ready_server(lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port)]) as server:
        yield server


@pytest.mark.parametrize("path", ["/ids", "/relay"])
async def test_a_message_of_long_distinct_ids_passes_while_other_connections_are_served(
    gateway: ServerProcess, path: str
) -> None:
    """Before: the second connection's echo waited for the first message's check, over a minute."""
    async with (
        await connect(f"ws://127.0.0.1:{gateway.port}{path}") as first,
        await connect(f"ws://127.0.0.1:{gateway.port}{path}") as second,
    ):
        message = json.dumps({"ids": LONG_IDS})
        await first.send(message)
        await second.send('{"ids": [1, 2]}')
        async with asyncio.timeout(10):  # generous: the check takes milliseconds
            assert await second.recv() == '{"ids": [1, 2]}'
            assert await first.recv() == message


async def test_a_repeated_long_id_is_still_refused(gateway: ServerProcess) -> None:
    """The gateway's check refuses what jsonschema-rs refuses: the same id twice, or ``2**63`` and ``2.0**63``."""
    async with await connect(f"ws://127.0.0.1:{gateway.port}/ids") as ws:
        for ids in ([*LONG_IDS[:1000], LONG_IDS[999]], [*LONG_IDS[:100], float(2**63)]):  # described: < 64 KiB
            await ws.send(json.dumps({"ids": ids}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert answer["error"] == "schema_mismatch"
            assert answer["detail"].endswith("(uniqueItems)"), answer


async def test_a_tree_of_unique_children_is_read_once(gateway: ServerProcess) -> None:
    """A subtree nested under a hundred ``uniqueItems`` arrays is given its token once, not at each level."""
    node: dict[str, Any] = {"children": [{"children": [], "id": i} for i in LONG_IDS[:5000]]}
    for i in range(100):
        node = {"children": [{"children": [], "id": 2**63 - i}, node]}
    message = json.dumps(node)
    async with await connect(f"ws://127.0.0.1:{gateway.port}/tree") as ws:
        await ws.send(message)
        async with asyncio.timeout(10):
            assert await ws.recv() == message


# --- the same verdicts as jsonschema-rs -----------------------------------------------------------

VERDICTS: list[list[Any]] = [
    [1, 1.0], [True, 1], [False, 0], [None, 0], ["1", 1], [0.0, -0.0], [1e300, 1e300], [2**63, float(2**63)],
    [2**63 + 1, float(2**63)], ["a,b", "a", "b"], [["a,b"], ["a", "b"]], [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
    [[1], [1.0]], [[True], [1]], [{"a": [1]}, {"a": [1, 2]}], [{}, []], [[], []], [{"a": {"b": 1}}, {"a": {"b": 1.0}}],
    [{"a": "#0"}, {"a": {}}], ["True", True], [0.5, 0.25, 0.5], [[None], [False]],
]  # fmt: skip
"""Arrays on which a shortcut could get JSON Schema's equality wrong: numbers of two types, booleans
beside 0 and 1, names in another order, text that looks like a token."""


@pytest.mark.parametrize("items", VERDICTS, ids=[json.dumps(items) for items in VERDICTS])
def test_the_gateways_unique_items_answers_as_jsonschema_rs(items: list[Any]) -> None:
    long_ids = [2**63 + i for i in range(LONG_INTEGERS + 1)]  # past the bound: the gateway's check
    message = {"values": items, "ids": long_ids}
    schema = {"properties": {"values": {"uniqueItems": True}, "ids": {"uniqueItems": True}}}
    validators = SchemaValidators(schema, retriever=lambda uri: None)
    assert validators.for_value(message) is validators.linear
    assert validators.linear.is_valid(message) == validators.plain.is_valid({"values": items})


def test_a_schema_without_unique_items_has_one_validator() -> None:
    validators = SchemaValidators({"type": "array"}, retriever=lambda uri: None)
    assert validators.linear is None
    assert validators.for_value(LONG_IDS) is validators.plain
