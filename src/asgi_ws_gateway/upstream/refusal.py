"""Sans-I/O: an upstream's refusal of the handshake, its body read as RFC 9112 §6.3 delimits it and cut.

The splice reads the answer itself (:mod:`~asgi_ws_gateway.passthrough.raw_upstream`); the relay's
``websockets`` client reads it with a 1 MiB cap on the body, past which the handshake failed: a 502,
counted against a backend that had answered with its own 403. :class:`HeldRefusal` holds such an
answer back and hands the client's parser the head with the body cut to what the splice relays.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from ..wire_numbers import parse_digits
from .chunked import Dechunker, MalformedChunks
from .interim import UnreadableHead, scan_head

MAX_REFUSAL_BODY = 64 * 1024
"""Bytes of a refusal's body passed on to the client; the rest is never read."""

_FRAMING = (b"content-length", b"transfer-encoding")


class MalformedLength(ValueError):
    """The refusal's ``Content-Length`` is not one number (RFC 9110 §8.6): where its body ends is unknown."""


def declared_length(headers: Sequence[tuple[str, str]]) -> int | None:
    """The body's length the ``Content-Length`` lines of ``headers`` declare, or None without one.

    RFC 9112 §6.3: a response whose ``Content-Length`` is invalid cannot be delimited, and a proxy
    answers 502 at once. Read as absent, such a refusal (``2, 3``, ``+2``, a line of ``2`` and another
    of ``5``) was waited on to its connection's end: an upstream that kept it open was a 504 at
    ``connect_timeout``, counted as timing out. The same number repeated (``2, 2``, or on two lines)
    is that number, as §8.6 allows.

    Raises:
        MalformedLength: the lines hold anything but ASCII digits, or more than one number.
    """
    values = [
        part.strip(" \t") for name, value in headers if name.lower() == "content-length" for part in value.split(",")
    ]
    if not values:
        return None
    if not all(value.isascii() and value.isdigit() for value in values) or len({v.lstrip("0") for v in values}) > 1:
        shown = ", ".join(values)
        raise MalformedLength(f"a Content-Length that is not one number: {shown[:40]!a}")
    length = parse_digits(values[0].lstrip("0") or "0", 19)
    return sys.maxsize if length is None else length  # (more than 19 digits: more than any body kept)


class RefusalBody:
    """A refusal's body from ``start`` in a growing buffer: chunks decoded, else ``Content-Length``
    bytes, else up to the connection's end; at most ``limit`` bytes either way.

    Raises:
        MalformedLength: (at construction) the ``Content-Length`` is not one number.
        MalformedChunks: (from :meth:`advance`) the body is not chunked as it says.
    """

    def __init__(self, headers: Sequence[tuple[str, str]], start: int, limit: int = MAX_REFUSAL_BODY) -> None:
        codings = ",".join(v for n, v in headers if n.lower() == "transfer-encoding")
        chunked = bool(codings) and codings.rsplit(",", 1)[-1].strip().lower() == "chunked"
        self._chunks = Dechunker(start, limit) if chunked else None
        # Another coding last: the body ends with the connection, whatever Content-Length says.
        declared = declared_length(headers) if not codings else None
        self._start = start
        self._want = limit if declared is None else min(declared, limit)

    def advance(self, buffer: bytes | bytearray) -> bool:
        """Whether the body (as much of it as is kept) is in ``buffer`` now."""
        if self._chunks is not None:
            self._chunks.advance(buffer)
            return self._chunks.done
        return len(buffer) - self._start >= self._want

    def body(self, buffer: bytes | bytearray) -> bytes:
        """The body so far: all of it once :meth:`advance` said so, else what came before the connection ended."""
        if self._chunks is not None:
            return bytes(self._chunks.body)
        return bytes(buffer[self._start : self._start + self._want])


class HeldRefusal:
    """What a client's HTTP parser may read of an upstream's answer (after its interim responses).

    A refusal (4xx, 5xx) is held back until its body, as :class:`RefusalBody` reads it, is in (or the
    upstream's EOF), then handed over as one response: its head as sent, but for its status line,
    which says HTTP/1.1 (and has its space before the reason phrase, empty or not), and its framing
    headers, which become a ``Content-Length`` of the body kept. Anything else passes as it comes,
    and so does an answer the parser must judge itself: a head with a bare CR or LF, one over
    ``limit`` bytes, malformed chunks (it fails on them as before, at once).
    """

    def __init__(self, limit: int = MAX_REFUSAL_BODY) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._head: bytes | None = None
        self._body: RefusalBody | None = None
        self._checked = 0  # the head's mark (interim.scan_head): looked at, free of a bare CR or LF
        self._refusing: bool | None = None  # whether the status line is a refusal's, once it is in
        self.settled = False
        """True once the answer passes as it comes or was handed over: nothing is held any more."""

    def feed(self, data: bytes) -> bytes:
        """The bytes to hand over now (nothing while a refusal is held back).

        Raises:
            MalformedLength: the refusal's ``Content-Length`` is not one number: its end is unknown
                (the caller fails the handshake with the splice's words; no parser is handed it).
        """
        if self.settled:
            return data
        buffer = self._buffer
        buffer += data
        if self._body is None:
            if self._refusing is None and buffer.find(b"\r\n", self._checked) != -1:  # none before (below)
                self._refusing = is_refusal(buffer)
            if self._refusing is False:
                return self._pass()  # a 101, or an answer no client gets: the parser reads it as it comes
            try:
                head_end, self._checked = scan_head(buffer, self._checked)
            except UnreadableHead:
                return self._pass()  # a bare CR or LF: the parser refuses it at once
            if head_end == -1:  # a refusal's head to come (or an overlong one, the parser's to refuse)
                return self._pass() if len(buffer) > self._limit else b""
            self._head = bytes(buffer[:head_end])
            self._body = RefusalBody(_framing(self._head), head_end + 4, self._limit)
        try:
            done = self._body.advance(buffer)
        except MalformedChunks:
            return self._pass()
        return self._handed_over() if done else b""

    def eof(self) -> bytes:
        """At the upstream's EOF: a refusal held back, handed over with the body read so far."""
        return self._handed_over() if self._body is not None and not self.settled else b""

    def _pass(self) -> bytes:
        self.settled = True
        held, self._buffer = bytes(self._buffer), bytearray()
        return held

    def _handed_over(self) -> bytes:
        assert self._head is not None and self._body is not None
        self.settled = True
        body = self._body.body(self._buffer)
        self._buffer = bytearray()
        status, *lines = self._head.split(b"\r\n")
        lines = [line for line in lines if line.partition(b":")[0].lower() not in _FRAMING]
        # websockets reads "HTTP/1.1 <status> <reason>" only: an HTTP/1.0 403 (or one with no reason
        # phrase) was a 502 counted against the backend, where the splice relays it. The status line
        # is _REFUSAL_STATUS's, and the body is re-framed here whatever the version.
        status = b"HTTP/1.1 %s %s" % (status[9:12], status[13:])
        return b"\r\n".join([status, *lines, b"Content-Length: %d" % len(body), b"", body])


def without_body(answer: bytes) -> bytes:
    """An answer that starts with its whole head, checked (``response_head``), and is neither a 101 nor a
    refusal, as a client's parser may read it at once: its head framed as having no body.

    No client gets such an answer (a 502 says what it was: ``errors.upstream_refusal``), so its body is
    never read. ``websockets`` read it to the connection's end, up to 1 MiB: a 200 or a 302 whose body
    ran on held the handshake until ``connect_timeout``, a 504 and a backend counted as timing out,
    where the splice and the frame relay answer 502 at once."""
    head = answer[: answer.find(b"\r\n\r\n")]
    lines = [line for line in head.split(b"\r\n") if line.partition(b":")[0].lower() not in _FRAMING]
    return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])


def is_refusal(answer: bytes | bytearray) -> bool:
    """Whether an answer starting with its status line is a refusal a client gets (4xx, 5xx)."""
    return _REFUSAL_STATUS(answer) is not None


_REFUSAL_STATUS = re.compile(rb"HTTP/1\.\d [45]\d\d(?: |\r\n)").match  # as RELAYED_STATUSES


def _framing(head: bytes) -> list[tuple[str, str]]:
    """The header lines of ``head`` that :class:`RefusalBody` reads, as name and value."""
    found = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() in _FRAMING:  # as sent: " Content-Length" is no such header (the parser refuses it)
            found.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return found


__all__ = [
    "MAX_REFUSAL_BODY",
    "HeldRefusal",
    "MalformedLength",
    "RefusalBody",
    "declared_length",
    "is_refusal",
    "without_body",
]
