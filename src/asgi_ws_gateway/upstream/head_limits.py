"""Sans-I/O: how large a head the gateway sends an upstream, and reads from one.

Both were a fixed 64 KiB, whatever ``handshake_limits`` allowed the client: an operator who raised
``max_header_bytes`` to 256 KiB (large cookies) had those clients refused with 431 ("the upstream
request head would take ...") for the very headers the gateway had just admitted, and the upstream's
answer setting such cookies was a 502 counted against a healthy backend. The rule now: the head the
gateway sends an upstream, and the head it reads back (interim responses included), may each be as
large as what the client was allowed to send (``max_header_bytes`` + ``max_target_bytes``) with the
room the defaults leave the policies' additions (24 KiB), and never less than 64 KiB: the defaults
(32 KiB + 8 KiB) give 64 KiB as before. Each line of the answer keeps its own limits
(``response_head``: 124 lines of 8 KiB, which ``websockets`` clients read).
"""

from __future__ import annotations

DEFAULT_HEAD = 64 * 1024
"""Bytes of head each way under the default ``handshake_limits``, and at least under any."""

POLICY_ROOM = 24 * 1024
"""Bytes of request head the policies may add (``set-header``, the ``X-Forwarded-*``, ``Via``) beyond
what the client sent: what the defaults leave (64 KiB less 32 KiB of headers and 8 KiB of target)."""


def head_limit(max_header_bytes: int, max_target_bytes: int) -> int:
    """Bytes of head the gateway sends an upstream, and reads from one, under ``handshake_limits``
    of ``max_header_bytes`` and ``max_target_bytes``: what the client may send and
    :data:`POLICY_ROOM`, :data:`DEFAULT_HEAD` at least."""
    return max(DEFAULT_HEAD, max_header_bytes + max_target_bytes + POLICY_ROOM)


__all__ = ["DEFAULT_HEAD", "POLICY_ROOM", "head_limit"]
