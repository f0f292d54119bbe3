"""Each API's totals of the relay's counters (messages, bytes, message sizes, policy actions), as the
observable instruments report them: a closed connection's final counts added at its close, in C but
for its few non-zero size slots; each open connection's live counts added when the metric reader
collects.

``ApiTotals.add`` is the reference; :data:`add_totals` is it, or the optional C extension ``_metric_add``'s
``add_totals`` (the same counts, declining to this for what it does not add), built at install
(``hatch_build.py``) and turned off with ``ASGI_WS_GATEWAY_PURE_PYTHON=1``. That module's ``Recorder`` is
the own histograms' record (:mod:`.histograms`).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from itertools import compress
from typing import TYPE_CHECKING

from . import names as n
from .native import pure_python

if TYPE_CHECKING:
    from ..relay.stats import RelayStats
    from ._metric_add import Recorder


ActionKey = tuple[str, str, str, str]
"""(policy, action, direction, reason), as ``RelayStats.policy_actions`` keys them."""

_SLOTS = 65  # RelayStats slots of message sizes below 2**64 B (a connection has fewer: up to its size limit)
_SLOT_INDEXES = tuple(range(_SLOTS))  # a tuple: compress() then makes no int per slot
_CLASS_OF_SLOT = tuple(n.size_class_index(slot) for slot in range(_SLOTS))


class ApiTotals:
    """Counters of one API: closed connections' final counts, to which open ones are added."""

    __slots__ = ("actions", "counts", "open", "slots_in", "slots_out")

    def __init__(self) -> None:
        self.counts = [0] * 8  # RelayStats' messages_in, binary_in, messages_out, binary_out, bytes_in, ...
        self.slots_in = [0] * _SLOTS  # by RelayStats slot (size bit length): folded into classes when observed
        self.slots_out = [0] * _SLOTS
        self.actions: Tally[ActionKey] = Tally()
        self.open = 0

    def add(self, stats: RelayStats) -> None:
        """Add one connection's counters: at its close (on the event loop), and each open one at every
        collection. A size slot only when it counted a message (a connection has up to 25 slots, most of
        them empty: found in C). Measured under callgrind, eight inline increments cost half of
        ``map(add, ...)`` over the eight counters, and finding the non-zero slots half of adding them all."""
        s, counts = stats, self.counts
        counts[0] += s.messages_in
        counts[1] += s.binary_in
        counts[2] += s.messages_out
        counts[3] += s.binary_out
        counts[4] += s.bytes_in
        counts[5] += s.binary_bytes_in
        counts[6] += s.bytes_out
        counts[7] += s.binary_bytes_out
        totals, sizes = self.slots_in, s.sizes_in
        for slot in compress(_SLOT_INDEXES, sizes):
            totals[slot] += sizes[slot]
        totals, sizes = self.slots_out, s.sizes_out
        for slot in compress(_SLOT_INDEXES, sizes):
            totals[slot] += sizes[slot]
        if stats.policy_actions:
            self.actions.update(stats.policy_actions)  # what message policies did, counted by the relay

    @property
    def messages(self) -> list[int]:
        """Messages: in text, in binary, out text, out binary."""
        return _by_kind(self.counts[0:4])

    @property
    def bytes(self) -> list[int]:
        """Bytes, as :attr:`messages`."""
        return _by_kind(self.counts[4:8])

    def copy(self) -> ApiTotals:
        other = ApiTotals()
        other.counts, other.slots_in, other.slots_out = list(self.counts), list(self.slots_in), list(self.slots_out)
        other.actions = Tally(self.actions)
        return other


_METRIC_ADD_FORMAT = 2
"""The ``_metric_add`` contract called here and in :mod:`.histograms` (its ``FORMAT``): another one is ignored."""


def _native() -> tuple[Callable[[ApiTotals, RelayStats], None], type[Recorder]] | None:
    """The C extension ``_metric_add``'s ``add_totals`` (told :meth:`ApiTotals.add`) and ``Recorder``; None
    when it is not built, not current, or turned off (``ASGI_WS_GATEWAY_PURE_PYTHON``, read at start-up)."""
    if pure_python():  # checked at start-up
        return None
    try:
        from ._metric_add import FORMAT, Recorder, add_totals, bind_totals
    except ImportError:  # not built: no compiler at install, ASGI_WS_GATEWAY_NO_NATIVE=1, or another FORMAT's
        return None
    if FORMAT != _METRIC_ADD_FORMAT:
        return None
    bind_totals(ApiTotals.add, _SLOTS, ApiTotals)
    return add_totals, Recorder


_NATIVE = _native()
add_totals: Callable[[ApiTotals, RelayStats], None] = ApiTotals.add if _NATIVE is None else _NATIVE[0]
"""``ApiTotals.add(totals, stats)``: in C when the extension is in use."""
NATIVE_RECORDER: type[Recorder] | None = None if _NATIVE is None else _NATIVE[1]
"""The C ``OwnHistogram.record_items`` (:mod:`.histograms`), or None: it records in Python."""


def _by_kind(counted: list[int]) -> list[int]:
    """``[in, binary in, out, binary out]`` as ``[text in, binary in, text out, binary out]``."""
    total_in, binary_in, total_out, binary_out = counted
    return [total_in - binary_in, binary_in, total_out - binary_out, binary_out]


def size_classes(slots: list[int]) -> list[int]:
    """Totals by ``RelayStats`` slot (``ApiTotals.slots_in``/``slots_out``) counted by :data:`.names.SIZE_CLASSES`."""
    classes = [0] * len(n.SIZE_CLASSES)
    for size_class, count in zip(_CLASS_OF_SLOT, slots, strict=True):
        classes[size_class] += count
    return classes


__all__ = ["NATIVE_RECORDER", "ActionKey", "ApiTotals", "add_totals", "size_classes"]
