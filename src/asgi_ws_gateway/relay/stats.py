"""Sans-I/O: what went through one connection, counted by the relay's pumps and by passthrough's frame scanner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Side = Literal["client", "upstream", "gateway"]


@dataclass
class RelayStats:
    """What went through one connection; ``*_in`` is client to upstream, ``*_out`` the reverse.

    Counted once per message, as received (before any message policy), at one place in each of the
    relay's pumps: plain integer increments, inline (telemetry reads these counters, it makes no call
    per message). An upstream's message that then had nowhere to go (the client closing or gone, the
    gateway closing) is taken back out (:meth:`uncount_out`): ``*_out`` is what the client was sent.
    ``binary_*`` count the binary subset; text is the rest. ``sizes_*``
    count messages by ``size.bit_length()``: slot *k* holds sizes from 2**(k-1) to 2**k - 1.
    """

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    binary_in: int = 0
    binary_bytes_in: int = 0
    binary_out: int = 0
    binary_bytes_out: int = 0
    sizes_in: list[int] = field(default_factory=list, repr=False)
    sizes_out: list[int] = field(default_factory=list, repr=False)
    _closed_by: Side | None = field(default=None, repr=False)
    close_code: int | None = None
    """The code the side that closed first sent (1006: it vanished without a close frame)."""
    close_reason: str = ""
    policy_actions: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    """What message policies did: ``(policy, action, direction, reason)`` -> count. Actions are
    ``drop``, ``close``, ``delay`` and ``refresh``; directions ``inbound`` (client to upstream) and
    ``outbound``. Messages a policy dropped are still counted in ``messages_*``/``bytes_*`` (a
    policy's decision, not a message lost). The splice and the frame relay count the pings and pongs
    they drop here too, as policy ``control-frames`` (``passthrough/ping_window.py``)."""

    messages_in_at_close: int = 0
    """``messages_in`` when the first close was recorded: an upstream that failed before the client
    had sent anything was not answering a client's message (``upstream.balancing``)."""

    @property
    def closed_by(self) -> Side | None:
        """The side that closed first (``gateway``: the gateway itself); None while open."""
        return self._closed_by

    @closed_by.setter
    def closed_by(self, side: Side | None) -> None:
        if self._closed_by is None:
            self.messages_in_at_close = self.messages_in
        self._closed_by = side

    # Passthrough's frame scanner counts through these two. The relay's pumps inline the same
    # increments (a call per message costs them ~30 ns, ~12% of a pump's own time per message);
    # tests/test_relay_counting.py pins both to the same counts.
    def count_in(self, size: int, binary: bool) -> None:
        self.messages_in += 1
        self.bytes_in += size
        if binary:
            self.binary_in += 1
            self.binary_bytes_in += size
        self.sizes_in[min(size.bit_length(), len(self.sizes_in) - 1)] += 1

    def count_out(self, size: int, binary: bool) -> None:
        self.messages_out += 1
        self.bytes_out += size
        if binary:
            self.binary_out += 1
            self.binary_bytes_out += size
        self.sizes_out[min(size.bit_length(), len(self.sizes_out) - 1)] += 1

    def uncount_out(self, size: int, binary: bool) -> None:
        """Take back :meth:`count_out`'s message: read from the upstream, it was never sent to the client
        (the client closed or went, or the gateway closed, while it was on its way)."""
        self.messages_out -= 1
        self.bytes_out -= size
        if binary:
            self.binary_out -= 1
            self.binary_bytes_out -= size
        self.sizes_out[min(size.bit_length(), len(self.sizes_out) - 1)] -= 1


__all__ = ["RelayStats", "Side"]
