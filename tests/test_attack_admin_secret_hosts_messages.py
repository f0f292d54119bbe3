"""A global inbound ``transform-message`` that writes the operator's credential into every message.

``set: {api_key: ...}`` sends the secret upstream in each message, as a ``set-header`` sends it in the
handshake; the secret-host rule did not count it, so an API created for the holder's own server
received it in the first message relayed there (the attacker's server echoes it back here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
WRITES_KEY = {"transform-message": {"set": {"api_key": SECRET, "via": "gateway"}}}


@pytest.fixture
def attacker() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


async def test_a_message_credential_goes_only_to_the_operators_hosts(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    config = {"apis": [api("chat", "/chat", upstream)], "message_policies": {"inbound": [WRITES_KEY]}}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=api("mine", "/mine", attacker))
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            assert "the global transform-message set api_key" in problem and SECRET not in problem
            skipped = await http.post("apis", json=api("mine", "/mine", attacker, skip_policies=["transform-message"]))
            assert skipped.status_code == 201, skipped.text
        async with await connect(running.url("/mine")) as ws:
            await ws.send('{"a": 1}')
            assert json.loads(await ws.recv()) == {"a": 1}
        async with await connect(running.url("/chat")) as ws:
            await ws.send('{"a": 1}')
            assert json.loads(await ws.recv()) == {"a": 1, "api_key": SECRET, "via": "gateway"}
