"""Pure logic: ``InterimResponses.skip`` looks at each read's bytes once and decides as reading the
whole head again at every read did (the former implementation, kept here as the reference).

A head trickled a byte per read made every read scan it all again: 60 KB cost 5 s of CPU.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.upstream.interim import MAX_INTERIM, InterimOverflow, InterimResponses, UnreadableHead

_INTERIM_STATUS = re.compile(rb"HTTP/1\.\d 1(?!01)\d\d(?: |$)")


class _Reference:
    """The former ``skip``: the whole buffer looked at again on every call."""

    def __init__(self, max_bytes: int, max_count: int = MAX_INTERIM) -> None:
        self.max_bytes, self.max_count, self.count, self.skipped = max_bytes, max_count, 0, 0

    def skip(self, buffer: bytearray) -> bool:
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            head = len(buffer) if head_end == -1 else head_end + 2
            line_ends = buffer.count(b"\r\n", 0, head)
            last_cr = head == len(buffer) and buffer.endswith(b"\r")
            if buffer.count(b"\n", 0, head) != line_ends or buffer.count(b"\r", 0, head) - last_cr != line_ends:
                raise UnreadableHead("sent a bare CR or LF in its response head (lines end with CRLF)")
            line_end = buffer.find(b"\r\n")
            if line_end != -1 and _INTERIM_STATUS.match(buffer, 0, line_end) is None:
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


PIECES = [
    b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 1", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"Link: </a.css>",
    b"X: 1", b" ", b"a",
]  # fmt: skip


def _outcome(skipper: InterimResponses | _Reference, buffer: bytearray) -> object:
    try:
        return skipper.skip(buffer)
    except UnreadableHead as exc:  # InterimOverflow too
        return (type(exc), str(exc))


@settings(max_examples=400)
@given(
    stream=st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join),
    cuts=st.lists(st.integers(0, 400), max_size=12),
    max_bytes=st.sampled_from([40, 200, 64 * 1024]),
    max_count=st.integers(0, 3),
    bytewise=st.booleans(),
)
def test_each_read_decides_as_reading_the_whole_head_again(
    stream: bytes, cuts: list[int], max_bytes: int, max_count: int, bytewise: bool
) -> None:
    if bytewise:  # every byte a read of its own: every split of a CRLF CRLF
        cuts = list(range(len(stream)))
    new, old = InterimResponses(max_bytes, max_count), _Reference(max_bytes, max_count)
    new_buffer, old_buffer = bytearray(), bytearray()
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        new_buffer += stream[start:cut]
        old_buffer += stream[start:cut]
        start = max(start, cut)
        got, expected = _outcome(new, new_buffer), _outcome(old, old_buffer)
        assert got == expected
        assert (new_buffer, new.count, new.skipped) == (old_buffer, old.count, old.skipped)
        if expected is True:
            assert new.answer_end == old_buffer.find(b"\r\n\r\n")
        if expected not in (True, False) or new.answer_end != -1:
            return  # the splice stops at a failure or at the answer's whole head (the relay at its status line)


def test_a_head_trickled_a_byte_per_read_is_looked_at_once() -> None:
    """Counted, not timed: the bytes ``skip`` passes to its searches stay about the head's length."""
    head = b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Filler: " + b"a" * 20_000 + b"\r\n\r\n"
    skipper, buffer = InterimResponses(64 * 1024), bytearray()
    for index in range(len(head)):
        buffer += head[index : index + 1]
        answer = skipper.skip(buffer)
        assert skipper._checked >= len(buffer) - 2  # but a CR whose LF is to come, or the final CRLF
    assert answer and skipper.answer_end == len(head) - 4
