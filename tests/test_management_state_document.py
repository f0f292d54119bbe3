"""The state document is written as ``json.dumps(document, indent=1)`` writes it, byte for byte, though
its APIs' and products' texts are kept from one state to the next (pure logic)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.management.overlay import Drain, Overlay

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
_DOCS = st.dictionaries(st.text(max_size=6), _VALUES, max_size=4)


def _reference(overlay: Overlay) -> str:
    document = {
        "format": 1,
        "epoch": overlay.epoch,
        "revision": overlay.revision,
        "apis": overlay.apis,
        "products": overlay.products,
        "subscriptions": overlay.subscriptions,
        "drains": {str(revision): drain.to_json() for revision, drain in overlay.drains.items()},
    }
    return json.dumps(document, indent=1, sort_keys=False)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), _DOCS | st.none(), max_size=4),
    st.dictionaries(st.text(max_size=6), _DOCS, max_size=3),
    st.dictionaries(st.text(max_size=6), _DOCS, max_size=2),
)
def test_the_document_is_the_indented_json_of_the_state(
    apis: dict[str, Any], products: dict[str, Any], subscriptions: dict[str, Any]
) -> None:
    """Tombstones, empty mappings, nested lists, newlines and non-ASCII in strings: the same text."""
    first = Overlay().next(apis=apis, products=products, subscriptions=subscriptions).draining(Drain(apis=("a",)))
    assert first.to_json() == _reference(first)
    assert Overlay.from_json(first.to_json()) == first
    # The next state keeps the same documents (their texts kept), with one more API.
    second = first.next(apis={**first.apis, "added\n": {"path": "/ws/é\u2028", "x": [1, {}, []]}})
    assert second.to_json() == _reference(second)
