"""Limits whose valid settings make a store call per connection or per message are warned about.

A ``limit-concurrency`` lease of a few seconds: its renewals are a store call per key every
``lease_ttl / 3``, for every open connection (1 s: 300 connections made 5,900 Redis commands a
second, 30 times the default's). A keyed ``rate-limit-messages`` window under a second: its budget is
reserved afresh each window, up to a store call per message (0.01 s: 50 connections sending 50
messages a second made 17,000 Redis commands a second, 500 at 1 s).
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway.policies.build import load_policies
from support.configs import api_entry

LEASE = "apis[0].policies[0].limit-concurrency.lease_ttl"
WINDOW = "apis[0].message_policies.inbound[0].rate-limit-messages.window"


def _lease_warnings(lease_ttl: float) -> list[str]:
    policy = {"limit-concurrency": {"key": "{client.network}", "max": 5, "lease_ttl": lease_ttl}}
    return load_policies({"apis": [api_entry(policies=[policy])]}).warnings


def _window_warnings(**settings: Any) -> list[str]:
    policy = {"rate-limit-messages": {"messages": 1000, **settings}}
    return load_policies({"apis": [api_entry(message_policies={"inbound": [policy]})]}).warnings


def test_a_one_second_lease_is_warned_about() -> None:
    (warning,) = _lease_warnings(1)
    assert warning.startswith(f"{LEASE}: 1 s renews every open connection's lease 3 times a second")


@pytest.mark.parametrize("lease_ttl", [10, 30, 3600])
def test_a_lease_of_ten_seconds_or_more_is_not(lease_ttl: float) -> None:
    assert _lease_warnings(lease_ttl) == []


def test_a_keyed_message_window_under_a_second_is_warned_about() -> None:
    (warning,) = _window_warnings(key="{client.network}", window=0.01)
    assert warning.startswith(f"{WINDOW}: 0.01 s with a key: each window's budget is reserved from the store")


@pytest.mark.parametrize(
    "settings",
    [{"key": "{client.network}", "window": 1}, {"window": 0.01}],  # without a key: in memory, no store call
    ids=["keyed-one-second", "unkeyed-short"],
)
def test_a_keyed_window_of_a_second_or_an_unkeyed_one_is_not(settings: dict[str, Any]) -> None:
    assert _window_warnings(**settings) == []
