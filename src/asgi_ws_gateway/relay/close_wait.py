"""Sans-I/O: the close wait's progress rule, one for the splice, the frame relay and the relay.

A connection that is closing waits for a peer still taking in what was queued to it (a slow reader's
backlog, the close frame behind it): at ``close_timeout`` from the close, and at each ``close_timeout``
after, the wait goes on if the peer took in some of it since the last look (a count that grows as it
does: :func:`asgi_ws_gateway.progress.taken_in`), and ends if it took in nothing. Progress counts for a
backlog, not for a stream fed on past the close: the wait ends at the look after the peer took in more
than :data:`CLOSE_WAIT_BYTES` (and a message) since the close began, and at :data:`CLOSE_WAIT_LOOKS`
looks whatever the progress.
"""

from __future__ import annotations

CLOSE_WAIT_LOOKS = 32
"""Looks (one per ``close_timeout``) after which a closing handshake still under way is aborted, progress or
not: a side that took in a little within each ``close_timeout`` held it for good (an upstream streaming on
past the client's close frame, never answering it, to a client reading 4 KiB per ``close_timeout``)."""
CLOSE_WAIT_BYTES = 16 << 20
"""Bytes a side may take in after a close began (besides one message of ``max_message_size``) before the
close wait stops waiting for it (16 MiB): a backlog queued before the close is bounded, a stream the peer
feeds on past the close is not (215 MB forwarded past a client's close in 2 s, to the test's bound)."""


class CloseWait:
    """One peer's close wait: its looks so far and what it had taken in at the first and the last.

    Args:
        taken: what the peer has taken in when the wait begins (the count its looks compare).
        max_message_size: the connection's; the byte bound is :data:`CLOSE_WAIT_BYTES` and one message.
    """

    __slots__ = ("began", "bound", "looks", "mark")

    def __init__(self, taken: int, max_message_size: int) -> None:
        self.began = self.mark = taken
        self.bound = CLOSE_WAIT_BYTES + max_message_size
        self.looks = 0

    def goes_on(self, taken: int) -> bool:
        """A look, ``close_timeout`` after the last: True if the peer took in some since (``taken`` is more
        than at the last look) within the bounds, and the wait gives it another ``close_timeout``."""
        return self.look(taken) and not self.spent(taken)

    def look(self, taken: int) -> bool:
        """A look, ``close_timeout`` after the last: True if the peer took in some since (``taken`` is more
        than at the last look), bounds aside (a splice weighs both of its sides before it goes on)."""
        self.looks += 1
        progressed, self.mark = taken > self.mark, max(taken, self.mark)
        return progressed

    def spent(self, taken: int) -> bool:
        """True once the wait is over its bounds: :data:`CLOSE_WAIT_LOOKS` looks, or more than
        :data:`CLOSE_WAIT_BYTES` (and a message) taken in since it began: no backlog, a stream fed on."""
        return self.looks >= CLOSE_WAIT_LOOKS or taken - self.began > self.bound

    def again(self, taken: int) -> None:
        """The peer is waited for again after a pause in the wait: the next look compares with ``taken``."""
        self.mark = taken


__all__ = ["CLOSE_WAIT_BYTES", "CLOSE_WAIT_LOOKS", "CloseWait"]
