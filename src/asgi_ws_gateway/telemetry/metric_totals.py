"""Each API's totals of the relay's counters (messages, bytes, message sizes, policy actions), as the
observable instruments report them: closed connections' final counts folded in, in C, in batches;
each open connection's live counts added when the metric reader collects.
"""

from __future__ import annotations

from collections import Counter as Tally
from itertools import zip_longest
from operator import add, attrgetter
from typing import TYPE_CHECKING

from . import names as n

if TYPE_CHECKING:
    from ..relay.stats import RelayStats
    from .metrics import MeteredConnection


ActionKey = tuple[str, str, str, str]
"""(policy, action, direction, reason), as ``RelayStats.policy_actions`` keys them."""
"""(policy, action, direction)."""


class ApiTotals:
    """Counters of one API: closed connections' final counts, to which open ones are added."""

    def __init__(self) -> None:
        self.messages = [0, 0, 0, 0]  # in text, in binary, out text, out binary
        self.bytes = [0, 0, 0, 0]
        self.slots_in = [0] * _SLOTS  # by RelayStats slot (size bit length): folded into classes when observed
        self.slots_out = [0] * _SLOTS
        self.actions: Tally[ActionKey] = Tally()
        self.open = 0

    def fold(self, stats: list[RelayStats]) -> None:
        """Add closed connections' counters, counter by counter in C: added one connection at a time, in
        Python, they were a fifth of the metrics' interpreter steps per connection."""
        m_in, b_in, m_out, b_out, by_in, bb_in, by_out, bb_out = map(sum, zip(*map(_COUNTS, stats), strict=True))
        messages, sizes = self.messages, self.bytes
        messages[0] += m_in - b_in
        messages[1] += b_in
        messages[2] += m_out - b_out
        messages[3] += b_out
        sizes[0] += by_in - bb_in
        sizes[1] += bb_in
        sizes[2] += by_out - bb_out
        sizes[3] += bb_out
        for slots, column in ((self.slots_in, _SIZES_IN), (self.slots_out, _SIZES_OUT)):
            summed = list(map(sum, zip_longest(*map(column, stats), fillvalue=0)))
            slots[: len(summed)] = map(add, slots, summed)
        for actions in filter(None, map(_ACTIONS, stats)):
            self.actions.update(actions)  # what message policies did, counted by the relay

    def add(self, live: MeteredConnection) -> None:
        # Once per closed connection on the event loop, and per open one at each collection: the slot
        # lists are added in C (a Python loop over them was an eighth of telemetry's cost per connection).
        s, messages, sizes = live.stats, self.messages, self.bytes
        messages[0] += s.messages_in - s.binary_in
        messages[1] += s.binary_in
        messages[2] += s.messages_out - s.binary_out
        messages[3] += s.binary_out
        sizes[0] += s.bytes_in - s.binary_bytes_in
        sizes[1] += s.binary_bytes_in
        sizes[2] += s.bytes_out - s.binary_bytes_out
        sizes[3] += s.binary_bytes_out
        self.slots_in[: len(s.sizes_in)] = map(add, self.slots_in, s.sizes_in)
        self.slots_out[: len(s.sizes_out)] = map(add, self.slots_out, s.sizes_out)
        if s.policy_actions:
            self.actions.update(s.policy_actions)  # what message policies did, counted by the relay

    def copy(self) -> ApiTotals:
        other = ApiTotals()
        other.messages, other.bytes = list(self.messages), list(self.bytes)
        other.slots_in, other.slots_out = list(self.slots_in), list(self.slots_out)
        other.actions = Tally(self.actions)
        return other


_COUNTS = attrgetter(
    "messages_in", "binary_in", "messages_out", "binary_out", "bytes_in", "binary_bytes_in", "bytes_out",
    "binary_bytes_out",
)  # fmt: skip
_SIZES_IN, _SIZES_OUT, _ACTIONS = attrgetter("sizes_in"), attrgetter("sizes_out"), attrgetter("policy_actions")
_SLOTS = 65  # RelayStats slots of message sizes below 2**64 B (a connection has fewer: up to its size limit)
_CLASS_OF_SLOT = tuple(n.size_class_index(slot) for slot in range(_SLOTS))


def size_classes(slots: list[int]) -> list[int]:
    """Totals by ``RelayStats`` slot (``ApiTotals.slots_in``/``slots_out``) counted by :data:`.names.SIZE_CLASSES`."""
    classes = [0] * len(n.SIZE_CLASSES)
    for size_class, count in zip(_CLASS_OF_SLOT, slots, strict=True):
        classes[size_class] += count
    return classes


__all__ = ["ActionKey", "ApiTotals", "size_classes"]
