"""The message policies' per-message shortcuts decide as the code they stand for: CaseVariants' one-level
check against its walk as it was, and a rate limit's shortcut against ``take`` at the same moment."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.json_names import AmbiguousJson
from asgi_ws_gateway.policies.message_rates import LocalBudget
from asgi_ws_gateway.policies.schema_names import CaseVariants
from bench.message_policies import message_policies

FLAT = message_policies()["inbound"][2]["validate-message"]["schema"]  # the bench's: one object, four names
NESTED = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "user": {"type": "object", "properties": {"role": {"type": "string"}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}}},
    },
}
FREE_BELOW = {"type": "object", "properties": {"type": {"type": "string"}}, "additionalProperties": {"type": "object"}}
_NAMES = st.sampled_from(["type", "TYPE", "Type", "room", "ROOM", "text", "seq", "SEQ", "user", "USER", "role", "Role",
                          "items", "id", "ID", "other", "\u017fEQ", "meta"])  # fmt: skip
_VALUES = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=4),
    max_leaves=10,
)


def _walk_as_it_was(variants: CaseVariants, value: Any) -> None:
    """CaseVariants.check before its one-level shortcut (every place walked, every name looked at)."""
    pending = [(value, variants.root)]
    while pending:
        node, place = pending.pop()
        if isinstance(node, dict):
            if place.folded:
                for name in node:
                    if name not in place.exact and name.casefold() in place.folded:
                        raise AmbiguousJson("a name is one the schema declares, in another case")
            for name, child in node.items():
                if isinstance(child, dict | list):
                    below = place.named.get(name, place.other)
                    if below is not None:
                        pending.append((child, below))
        elif isinstance(node, list) and place.items is not None:
            pending += [(child, place.items) for child in node if isinstance(child, dict | list)]


def _refused(check: Any, value: Any) -> bool:
    try:
        check(value)
    except AmbiguousJson:
        return True
    return False


@pytest.mark.parametrize("schema", [FLAT, NESTED, FREE_BELOW], ids=["flat", "nested", "free-form-below"])
@settings(max_examples=300, deadline=None)
@given(value=_VALUES | st.dictionaries(_NAMES, _VALUES, max_size=5))
def test_case_variants_refuse_what_the_walk_refused(schema: dict[str, Any], value: Any) -> None:
    variants = CaseVariants.for_schema(schema, lambda uri: None)
    assert variants is not None
    assert _refused(variants.check, value) == _refused(lambda v: _walk_as_it_was(variants, v), value)


def test_a_flat_schema_needs_no_walk_and_still_refuses_a_case_variant() -> None:
    variants = CaseVariants.for_schema(FLAT, lambda uri: None)
    assert variants is not None and not variants.root.named and variants.root.other is None
    variants.check({"type": "chat", "room": "lobby", "text": "hi", "seq": 1, "extra": {"TYPE": 1}})
    with pytest.raises(AmbiguousJson):
        variants.check({"type": "chat", "ROOM": "lobby"})


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5]), st.integers(0, 40)), max_size=40))
def test_a_rate_limits_shortcut_takes_what_take_takes_at_the_same_moment(steps: list[tuple[float, int]]) -> None:
    """Windows of 1 s, 5 messages and 100 bytes: within a window, at its very end and past it (waits
    that add up exactly)."""
    now = [1000.0]
    shortcut, reference = LocalBudget((5, 100), 1.0), LocalBudget((5, 100), 1.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "monotonic", lambda: now[0])
        for wait, size in steps:
            now[0] += wait
            assert shortcut.passes(b"", size) == reference.take(now[0], size)
            assert (shortcut.messages_left, shortcut.bytes_left, shortcut.ends) == (
                reference.messages_left, reference.bytes_left, reference.ends)  # fmt: skip
