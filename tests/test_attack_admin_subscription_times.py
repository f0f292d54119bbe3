"""A subscription's ``expires_at`` written without a time zone, through the management API or the file.

An attack pass sent ``POST /subscriptions`` with ``"expires_at": "2030-01-01T00:00:00"`` (or a date
alone): the subscription was saved, then its answer, the one that shows the key once, was a 500 (a
time without a zone compared with the clock's), so the key was lost; and from then on every
``GET /subscriptions`` was a 500 too, for every subscription, until that one was deleted by an id the
admin had to find in the state file. A file subscription without a zone did the same to the listing.
The handshake has always read such a time as UTC; now the API does too, and shows it with its zone.
Real uvicorn, the management API, a real upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.management.subscriptions import SubscriptionResource
from asgi_ws_gateway.policies import hash_key
from support.clients import connect, expect_status
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

FILE_KEY = "file-subscription-key"


def _config(upstream: UpstreamServer, **top: Any) -> dict[str, Any]:
    return {"apis": [api("chat", "/chat", upstream)], "products": [{"name": "gold", "apis": ["chat"]}], **top}


@pytest.mark.parametrize(
    ("sent", "shown", "state"),
    [
        ("2999-01-01T00:00:00", "2999-01-01T00:00:00Z", "active"),
        ("2999-01-01", "2999-01-01T00:00:00Z", "active"),
        ("2000-01-01T00:00:00", "2000-01-01T00:00:00Z", "expired"),
    ],
)
async def test_a_time_without_a_zone_is_utc_and_the_subscription_is_listed(
    tmp_path: Path, upstream: UpstreamServer, sent: str, shown: str, state: str
) -> None:
    """All 3 fail before: the creation and every listing answered 500."""
    with managed_gateway(_config(upstream), tmp_path / "state.json") as running:
        async with running.http() as http:
            created = await http.post("subscriptions", json={"product": "gold", "id": "alice", "expires_at": sent})
            assert created.status_code == 201, created.text
            assert (created.json()["expires_at"], created.json()["state"]) == (shown, state)
            key = created.json()["key"]
            listed = await http.get("subscriptions")
            assert listed.status_code == 200, listed.text
            assert [(s["id"], s["expires_at"], s["state"]) for s in listed.json()["subscriptions"]] == [
                ("alice", shown, state)
            ]
            one = await http.get("subscriptions/alice")
            assert (one.status_code, one.json()["expires_at"]) == (200, shown)
        if state == "active":
            async with await connect(running.url("/chat"), additional_headers={"X-Subscription-Key": key}) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
        else:
            status, _, _ = await expect_status(running.url("/chat"), additional_headers={"X-Subscription-Key": key})
            assert status == 403


async def test_a_file_subscription_without_a_zone_is_listed(tmp_path: Path, upstream: UpstreamServer) -> None:
    """Fails before: ``GET /subscriptions`` answered 500 from start-up on."""
    subscription = {
        "id": "bob",
        "product": "gold",
        "key_sha256": hash_key(FILE_KEY),
        "expires_at": "2999-01-01T00:00:00",
    }
    with managed_gateway(_config(upstream, subscriptions=[subscription]), tmp_path / "state.json") as running:
        async with running.http() as http:
            listed = await http.get("subscriptions")
            assert listed.status_code == 200, listed.text
            assert [(s["id"], s["expires_at"]) for s in listed.json()["subscriptions"]] == [
                ("bob", "2999-01-01T00:00:00Z")
            ]
        async with await connect(running.url("/chat"), additional_headers={"X-Subscription-Key": FILE_KEY}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


def test_a_subscription_stored_without_a_zone_before_is_read_as_utc() -> None:
    """A state saved by an earlier version kept the time as sent; it is shown, not a 500, once read."""
    stored = {"id": "alice", "product": "gold", "key_sha256": "0" * 64, "expires_at": "2000-01-01T00:00:00"}
    shown = SubscriptionResource.model_validate(stored).public()
    assert (shown["expires_at"], shown["state"]) == ("2000-01-01T00:00:00Z", "expired")
