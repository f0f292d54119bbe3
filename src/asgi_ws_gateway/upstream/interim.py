"""Interim (1xx) responses an upstream sends before its answer to the handshake.

A client "MUST be able to parse one or more 1xx responses received prior to a final response"
(RFC 9110 §15.2): ``100 Continue`` from a proxy in front of the upstream, ``102 Processing``,
``103 Early Hints`` with its ``Link`` headers. A 1xx response ends with its header section (it has
no content). ``101 Switching Protocols`` is the answer, not an interim response. Each connector
drops the interim responses that lead the upstream's answer before reading it, and only so many:
an upstream that sends them without end must not hold the handshake until ``connect_timeout``.
"""

from __future__ import annotations

import re

MAX_INTERIM = 8
"""Interim responses skipped before an answer; one more is a failed handshake."""

_INTERIM_STATUS = re.compile(rb"HTTP/1\.\d 1(?!01)\d\d(?: |$)")


class UnreadableHead(Exception):
    """The head of the upstream's answer cannot be read: the handshake fails at once (a 502)."""


class InterimOverflow(UnreadableHead):
    """More interim responses, or more bytes of them, than the handshake allows."""


class InterimResponses:
    """Drops the interim responses at the front of an upstream's answer, as its bytes arrive.

    Args:
        max_bytes: bytes of interim responses (a partial one included) at most, over all of them.
        max_count: interim responses at most.
    """

    def __init__(self, max_bytes: int, max_count: int = MAX_INTERIM) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.count = 0
        self.skipped = 0  # bytes dropped so far
        self.answer_end = -1
        """Where the answer's head ends in the buffer (its CRLF CRLF), once :meth:`skip` found it."""
        # What the buffer's front head has shown so far, so that each read's bytes are looked at once
        # (a head trickled a byte per read made every read scan it all again: 5 s of CPU for 60 KB).
        self._checked = 0  # bytes found free of a bare CR or LF, and of a CRLF CRLF but in the last 3
        self._line_end = -1  # the status line's CRLF, once found

    def skip(self, buffer: bytearray) -> bool:
        """Delete the complete interim responses that lead ``buffer``.

        Call it again with the same buffer, grown (and as this call left it).

        Returns:
            True once ``buffer`` starts with the answer's status line (complete), False while what
            leads it may still be an interim response.

        Raises:
            InterimOverflow: past ``max_count`` interim responses, or ``max_bytes`` of them;
                ``buffer`` then starts with the one that went over.
            UnreadableHead: the head so far (an interim response's, the answer's) holds a bare LF or
                CR. RFC 9112 §2.2 lets a recipient refuse a bare LF (websockets does) and calls a
                bare CR invalid; waiting for the CRLF CRLF that never comes held the handshake until
                ``connect_timeout``.
        """
        while True:
            checked = self._checked
            head_end, self._checked = scan_head(buffer, checked)
            head = len(buffer) if head_end == -1 else head_end + 2
            line_end = self._line_end
            if line_end == -1:  # none before ``checked`` (a CR there would not have been passed)
                line_end = self._line_end = buffer.find(b"\r\n", checked, head)
            if line_end != -1 and _INTERIM_STATUS.match(buffer, 0, line_end) is None:
                self.answer_end = head_end
                return True
            end = head_end if line_end != -1 else -1
            size = len(buffer) if end == -1 else end + 4
            if self.skipped + size > self.max_bytes:
                raise InterimOverflow(f"sent more than {self.max_bytes} bytes of response head")
            if end == -1:
                return False
            if self.count == self.max_count:
                raise InterimOverflow(f"sent more than {self.max_count} interim (1xx) responses")
            self.count += 1
            self.skipped += size
            del buffer[:size]
            self._checked, self._line_end = 0, -1


def scan_head(buffer: bytes | bytearray, checked: int) -> tuple[int, int]:
    """Look once at the bytes of a response head past ``checked``, the mark the previous call returned
    (0 at first): a head trickled a byte per read must not make every read scan it all again.

    Returns:
        Where the head's CRLF CRLF starts (-1 while it has not come), and the new mark: the end of the
        head's last line, less a CR whose LF may come with the next read.

    Raises:
        UnreadableHead: a bare CR or LF in the head.
    """
    head_end = buffer.find(b"\r\n\r\n", max(checked - 3, 0))  # it may straddle two reads
    head = len(buffer) if head_end == -1 else head_end + 2  # (its last line's CRLF)
    new = buffer[checked:head]
    lines = new.count(b"\r\n")
    cr_last = new.endswith(b"\r")  # never so once the head's end is found: it ends with CRLF
    if new.count(b"\n") != lines or new.count(b"\r") - cr_last != lines:
        raise UnreadableHead("sent a bare CR or LF in its response head (lines end with CRLF)")
    return head_end, head - cr_last


__all__ = ["MAX_INTERIM", "InterimOverflow", "InterimResponses", "UnreadableHead", "scan_head"]
