"""A subscription's ``expires_at`` given as a number is POSIX seconds, always.

Pydantic reads a number above 2e10 as milliseconds: ``"expires_at": 253402300799`` (the seconds of
9999-12-31T23:59:59Z) was stored as 1978-01-11, and the subscription, meant to last, was expired at
once (its key refused with 403). A number (or numeric text) is now seconds from 0 to 253402300799, and
anything outside is refused by field path (422 through the management API). Real uvicorn, the
management API, a real upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.policies import hash_key
from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

KEY = "file-subscription-key"


def _config(upstream: str, **top: Any) -> dict[str, Any]:
    chat = {"name": "chat", "path": "/chat", "upstreams": [upstream]}
    return {"apis": [chat], "products": [{"name": "gold", "apis": ["chat"]}], **top}


def _subscription(expires_at: object) -> dict[str, Any]:
    return {"id": "bob", "product": "gold", "key_sha256": hash_key(KEY), "expires_at": expires_at}


@pytest.mark.parametrize(
    ("number", "instant"),
    [
        (253402300799, "9999-12-31T23:59:59+00:00"),
        ("253402300799", "9999-12-31T23:59:59+00:00"),
        (20000000001, "2603-10-11T11:33:21+00:00"),
        (1700000000.5, "2023-11-14T22:13:20.500000+00:00"),
        (0, "1970-01-01T00:00:00+00:00"),
    ],
)
def test_a_number_in_the_file_is_seconds(number: object, instant: str) -> None:
    config = load_config(_config("ws://127.0.0.1:9/", subscriptions=[_subscription(number)]))
    expires_at = config.subscriptions[0].expires_at
    assert expires_at is not None and expires_at.isoformat() == instant


@pytest.mark.parametrize("number", [253402300800, 1.5e15, -1, "-5", 1e300])
def test_a_number_outside_the_seconds_of_years_1970_to_9999_is_refused(number: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config("ws://127.0.0.1:9/", subscriptions=[_subscription(number)]))
    (problem,) = info.value.problems
    assert problem.startswith("subscriptions[0].expires_at: a number is POSIX seconds, from 0"), problem


async def test_the_management_api_reads_the_seconds_of_9999_as_9999(tmp_path: Path, upstream: UpstreamServer) -> None:
    """Fails before: stored as 1978-01-11T21:31:40.799Z, the subscription expired, its key a 403."""
    with managed_gateway({"apis": [api("chat", "/chat", upstream)], "products": [{"name": "gold", "apis": ["chat"]}]},
                         tmp_path / "state.json") as running:  # fmt: skip
        async with running.http() as http:
            created = await http.post("subscriptions", json={"product": "gold", "id": "a", "expires_at": 253402300799})
            assert created.status_code == 201, created.text
            assert (created.json()["expires_at"], created.json()["state"]) == ("9999-12-31T23:59:59Z", "active")
            refused = await http.post("subscriptions", json={"product": "gold", "id": "b", "expires_at": 253402300800})
            assert refused.status_code == 422, refused.text
            assert any(p.startswith("expires_at: a number is POSIX seconds") for p in refused.json()["problems"])
            assert (await http.get("subscriptions/b")).status_code == 404
        async with await connect(
            running.url("/chat"), additional_headers={"X-Subscription-Key": created.json()["key"]}
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
