"""Pings in flight each way: what the splice and the frame relay let through of a side's pings and pongs.

On the splice and the frame relay pings go end to end, and the other side answers each. A client that
pinged as fast as its connection carried had every ping reach the upstream, which owed a pong for
each, past any message policy (a ping is not a message): 2,000 pings in one 262 KB burst were 2,000
pings at the upstream and 2,000 pongs it wrote, as were 2,000 unsolicited pongs. The relay answers a
client's pings itself and forwards no ping or pong.

So at most ``PINGS_IN_FLIGHT`` of a side's pings await its peer's pong at a time (``pings_in_flight`` on
the side's reader: their payloads, which a pong must carry); past that its pings are taken out of the
stream, only the latest kept (``held_ping``; RFC 6455 §5.5.3 lets the peer answer only the most recent),
and that one goes on once a pong makes room. A pong answers the ping whose payload it carries and every
one sent before it (as ``websockets`` reads a pong). A peer owes that many pongs at most, whatever the
rate; a burst of up to ``PINGS_IN_FLIGHT`` pings (Autobahn's cases 2.10 and 2.11 send 10) is answered
ping by ping. A pong goes on only when it answers a ping in flight: unsolicited pongs (a heartbeat
RFC 6455 allows, which the relay does not forward either) are dropped. Either drop is counted among the
connection's policy actions as ``control-frames`` ``drop`` (``ws_gateway.policy.actions``), by
direction and reason.
"""

from __future__ import annotations

from ..relay.stats import RelayStats

try:  # websockets' C helper, and its pure-Python one where the extension was not built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

PINGS_IN_FLIGHT = 16
"""A side's pings that may await its peer's pong at once."""
POLICY = "control-frames"
"""The policy name these drops are counted under."""
SUPERSEDED = "ping_superseded"
"""A held ping replaced by a later one: it never goes on (the later one does)."""
UNSOLICITED = "unsolicited_pong"
"""A pong that answered no ping in flight."""


def answered(in_flight: tuple[bytes, ...], pong: bytes) -> tuple[bytes, ...] | None:
    """The pings still in flight once ``pong`` (its payload) arrived: those sent after the one it
    answers; None when it answers none of ``in_flight``."""
    for index, payload in enumerate(in_flight):
        if payload == pong:
            return in_flight[index + 1 :]
    return None


def payload_of(frame: bytes) -> bytes:
    """The payload, unmasked, of ``frame``: one whole control frame (125 payload bytes at most)."""
    length = frame[1] & 0x7F
    if frame[1] & 0x80:
        return apply_mask(frame[6 : 6 + length], frame[2:6])
    return frame[2 : 2 + length]


def count_drop(stats: RelayStats, *, inbound: bool, reason: str) -> None:
    """Count one control frame dropped, ``inbound`` from the client (else from the upstream)."""
    key = (POLICY, "drop", "inbound" if inbound else "outbound", reason)
    stats.policy_actions[key] = stats.policy_actions.get(key, 0) + 1


__all__ = ["PINGS_IN_FLIGHT", "POLICY", "SUPERSEDED", "UNSOLICITED", "answered", "count_drop", "payload_of"]
