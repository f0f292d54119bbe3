"""The state's history, pure logic: epochs tell a successor from a store that went back, and what each
revision asked to drain travels with the state (``management/overlay.py``)."""

from __future__ import annotations

import json

from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.management.overlay import (
    DRAIN_BYTES,
    DRAIN_HISTORY,
    Drain,
    Overlay,
    compare_states,
    drain_reasons,
)


def test_states_compare_by_epoch_then_revision() -> None:
    """A successor is the same epoch at a higher revision; anything else is a store that went back."""
    first = Overlay().next()
    second = first.next()
    assert first.epoch and second.epoch == first.epoch
    assert compare_states(first, second) == "newer"
    assert compare_states(second, second) == "same"
    assert compare_states(second, first) == "diverged"  # restored from an older copy
    assert compare_states(second, Overlay()) == "diverged"  # emptied
    assert compare_states(Overlay(), first) == "newer"  # the first change made the epoch
    other = Overlay().next().next().next()
    assert compare_states(second, other) == "diverged"  # emptied and written again past it
    assert compare_states(Overlay(revision=4), second) == "diverged"  # a state without epoch, rewritten below it


def test_a_revisions_drains_are_kept_with_the_state_for_the_last_revisions() -> None:
    overlay = Overlay().next().draining(Drain(apis=("chat",)))
    for _ in range(DRAIN_HISTORY + 1):
        overlay = overlay.next()
    overlay = overlay.draining(Drain(subscriptions=("alice",)))
    assert list(overlay.drains) == [overlay.revision]  # revision 1's fell out of the history
    assert Overlay.from_json(overlay.to_json()) == overlay
    assert overlay.drains_since(overlay.revision - 1) == [Drain(subscriptions=("alice",))]
    assert overlay.drains_since(overlay.revision) == []


def test_drain_reasons_select_an_api_a_subscription_or_what_a_product_no_longer_grants() -> None:
    config = GatewayConfig.model_validate({
        "apis": [{"name": n, "path": f"/ws/{n}", "upstreams": ["ws://127.0.0.1:1/"]} for n in ("chat", "feed")],
        "products": [{"name": "silver", "apis": ["chat"]}],
        "subscriptions": [{"id": "bob", "product": "silver", "key_sha256": "0" * 64}],
    })  # fmt: skip
    reason = drain_reasons([Drain(apis=("feed",)), Drain(subscriptions=("carol",), ungranted=("chat",))], config)
    assert reason("feed", None) == "API configuration changed"
    assert reason("feed", "bob") == "API configuration changed"
    assert reason("chat", "carol") == "subscription revoked"
    assert reason("chat", "alice") == "subscription revoked"  # gold's, deleted: nothing grants chat to it
    assert reason("chat", "bob") is None  # silver still grants it
    assert reason("chat", None) is None


def test_the_drains_a_state_keeps_are_bounded_in_bytes_and_revisions() -> None:
    """Each ?drain=true of a deleted 999-API product kept its whole list: 123 of them filled the 16 MiB
    state and every change was refused (a re-attack pass)."""
    names = tuple(f"a{i:04d}" + "x" * 123 for i in range(999))
    overlay = Overlay()
    for _ in range(150):
        overlay = overlay.next().draining(Drain(ungranted=names))
    kept = json.dumps({str(r): d.to_json() for r, d in overlay.drains.items()})
    assert len(kept) <= DRAIN_BYTES + len(json.dumps(Drain(ungranted=names).to_json())) + 16
    assert max(overlay.drains) == overlay.revision  # the newest is always kept
    for _ in range(DRAIN_HISTORY):
        overlay = overlay.next()  # revisions without a drain let the old ones go too
    assert overlay.drains == {}


def test_two_states_under_one_epoch_and_revision_are_not_the_same() -> None:
    """Restored from an older copy, then changed again by a host that saw it: the revision number is reused."""
    base = Overlay().next()
    one = base.next(subscriptions={"alice": {"state": "active"}})
    other = base.next(subscriptions={"alice": {"state": "suspended"}})
    assert (one.epoch, one.revision) == (other.epoch, other.revision)
    assert compare_states(one, other) == "diverged"
    assert compare_states(one, Overlay.from_json(one.to_json())) == "same"
