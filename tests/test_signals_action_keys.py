"""The key a message policy's action is counted under (``messages.action_keys``): every part bounded, every
action counted. The ``ws_gateway.policy.actions`` metric makes one series per key."""

from __future__ import annotations

import itertools

import pytest

from asgi_ws_gateway.messages import action_keys
from asgi_ws_gateway.messages.action_keys import MAX_POLICIES, MAX_REASONS, OTHER, action_key

_names = itertools.count()


@pytest.fixture
def policy() -> str:
    """A policy name no other test counted under (the kept reasons are the process's)."""
    return f"signals-policy-{next(_names)}"


def test_the_builtin_keys_are_kept(policy: str) -> None:
    assert action_key(policy, "drop", "inbound", "message_too_big") == (policy, "drop", "inbound", "message_too_big")
    assert action_key(policy, "delay", "outbound", "rate_limited") == (policy, "delay", "outbound", "rate_limited")
    assert action_key(policy, "refresh", "inbound", "") == (policy, "refresh", "inbound", "")


def test_the_metric_spelling_of_a_direction_is_the_pipelines(policy: str) -> None:
    """docs/telemetry.md's example for policy authors counts ``client_to_upstream``."""
    assert action_key(policy, "drop", "client_to_upstream", "x")[2] == "inbound"
    assert action_key(policy, "drop", "upstream_to_client", "x")[2] == "outbound"
    assert action_key(policy, "drop", "sideways", "x")[2] == OTHER


def test_an_action_no_doc_names_is_other(policy: str) -> None:
    assert action_key(policy, "Dropped by <script>", "inbound", "x")[1] == OTHER


@pytest.mark.parametrize("reason", ["Alice's secret", "has space", "UPPER", "x" * 65, "é", "a\nb", "_x", "1abc"])
def test_a_reason_that_is_not_a_code_is_other(policy: str, reason: str) -> None:
    assert action_key(policy, "drop", "inbound", reason)[3] == OTHER


def test_a_policy_keeps_its_first_reasons_only(policy: str) -> None:
    kept = [action_key(policy, "drop", "inbound", f"r{i}")[3] for i in range(MAX_REASONS + 10)]
    assert kept == [f"r{i}" for i in range(MAX_REASONS)] + [OTHER] * 10
    assert action_key(policy, "close", "outbound", "r3")[3] == "r3"  # a kept one stays kept
    other = f"{policy}-b"
    assert action_key(other, "drop", "inbound", "r99")[3] == "r99"  # each policy its own


def test_policy_names_past_the_bound_are_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(action_keys, "_reasons", {})
    for i in range(MAX_POLICIES):
        action_key(f"p{i}", "drop", "inbound", "x")
    assert action_key("one-more", "drop", "inbound", "x") == (OTHER, "drop", "inbound", "x")
    assert action_key("p7", "drop", "inbound", "y")[0] == "p7"
