"""Sans-I/O: the head of an upstream's answer to the handshake, read by one rule for every connector.

The splice and the frame relay read the answer themselves; the relay's ``websockets`` client has
its own parser. They read it by different rules, so the same answer served the client on one and
was a 502 counted against the backend on the other: a 101 with 300 header lines or a 60 KB cookie
(past ``websockets``' 128 lines of 8192 bytes), a status line with no reason phrase (``websockets``
wants three parts), a status code of ``0101`` (``websockets`` reads 1 to 18 digits). Each
connector now reads the head with :class:`AnswerHead` first, and the relay's client is handed only
a head that passed, its status line as ``websockets`` reads it.

The rule (RFC 9112 §4, §5, within limits both parsers honour):

* the status line is ``HTTP/1.<digit> SP 3DIGIT [SP reason-phrase]``, the status 100 to 599, the
  reason phrase possibly empty or missing (with its space), free of control characters but HTAB;
  a 101 is HTTP/1.1's only (no other version upgrades);
* each header line is ``token ":" field-value`` (no control character but HTAB in the value);
* at most :data:`MAX_HEADER_LINES` header lines (:data:`MAX_REFUSAL_LINES` in a refusal; room left,
  within the client's limit, for the lines the gateway adds), each line (its CRLF included) at most
  :data:`MAX_LINE` bytes, and at most ``max_head`` bytes of head in all, the interim (1xx) responses
  before the answer included (:data:`MAX_HEAD` unless the connector was given more: ``upstream.head_limits``);
* lines end with CRLF (:func:`~asgi_ws_gateway.upstream.interim.scan_head`).

A head that breaks it fails the handshake at once: a 502 (``upstream_unreachable``), counted
against the backend, which answered wrongly.
"""

from __future__ import annotations

import re

from websockets import http11

from .head_limits import DEFAULT_HEAD
from .interim import InterimResponses, UnreadableHead
from .refusal_headers import REFUSAL_HEADERS

MAX_HEAD = DEFAULT_HEAD
"""Bytes of response head, the interim responses before the answer included, unless told otherwise
(:func:`~asgi_ws_gateway.upstream.head_limits.head_limit`)."""

GATEWAY_LINES = 4
"""The most header lines the client gets in an answer the gateway relays beyond the upstream's own.

A 101: the server's ``Date`` and ``Server`` (an upstream's own are dropped: ``upstream.headers``),
and on the relay ``Sec-WebSocket-Extensions`` when the gateway negotiated compression with the
client and the upstream none (under uvicorn's own protocols: the gateway's compresses the client leg
only when the upstream's is) (its ``Upgrade``, ``Connection`` and ``Sec-WebSocket-Accept`` are
replaced one for one): 3. A refusal: ``Date``, ``Connection: close``, ``Content-Type`` when the
upstream sent none, and ``Content-Length`` when its body was framed by chunks or the connection's
end: 4. Headers an operator adds to every response (uvicorn's ``--header``) are not counted."""

MAX_HEADER_LINES = min(128, http11.MAX_NUM_HEADERS) - GATEWAY_LINES
"""Header lines in the answer's head: ``websockets``' limit (which its environment may lower) less
:data:`GATEWAY_LINES`. A client refuses a response over its limit (``websockets``' and the many
clients built on it: 128 lines), so an upstream's 101 with 128 lines, which the gateway sent on
with 130, was a connection no such client could open, and no 502 said why."""

MAX_REFUSAL_LINES = MAX_HEADER_LINES - len(REFUSAL_HEADERS)
"""Header lines in a refusal's head: a relayed refusal carries the gateway's :data:`~.refusal_headers.REFUSAL_HEADERS`
too (``Cache-Control: no-store``...), which the client's limit must leave room for."""

MAX_LINE = min(8192, http11.MAX_LINE_LENGTH)
"""Bytes of a line of the answer's head, its CRLF included (``websockets``' limit, likewise)."""

_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEADER_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")  # RFC 9110 token, field-value
_HEADER_LINES = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")  # each with its CRLF


class MalformedHead(UnreadableHead):
    """The answer's head breaks the rule; the message says how, after the upstream's name
    (``sent more than 124 response header lines``)."""


class AnswerHead:
    """Reads the head of an upstream's answer to the handshake as its bytes arrive: past the interim
    responses (dropped from the buffer), each line checked once, as it completes.

    Args:
        max_head: bytes of head at most, the interim responses included (default :data:`MAX_HEAD`).

    Attributes:
        end: where the answer's head ends in the buffer (its CRLF CRLF), once :meth:`feed` said so.
        status: the answer's status code, once its status line is in.
    """

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._max_head = max_head
        self._interim = InterimResponses(max_head)
        self.end = -1
        self.status = 0
        self._reason = b""
        self._line_end = -1  # the status line's CRLF
        self._pos = 0  # where the first line not yet checked starts
        self._scanned = 0  # how far a CRLF was looked for (a long line trickled in is looked at once)
        self._lines = 0  # header lines checked

    def feed(self, buffer: bytearray) -> bool:
        """Read what ``buffer`` holds now. Call it again with the same buffer, grown (and as this call
        left it: the interim responses that led it are deleted).

        Returns:
            True once ``buffer`` starts with the answer's whole head, checked; False while more is to come.

        Raises:
            UnreadableHead: the head breaks the rule (:class:`MalformedHead`), holds a bare CR or LF,
                or too many interim responses lead it.
        """
        if self.end != -1:
            return True
        interim = self._interim
        if not interim.skip(buffer):  # (which bounds the interim responses, and an endless status line)
            return False
        end = interim.answer_end
        stop = len(buffer) if end == -1 else end + 2  # through the last line's CRLF
        pos = self._pos
        if pos == 0 and end != -1 and stop <= MAX_LINE and self._whole(buffer, stop):
            pos = stop
        while (eol := buffer.find(b"\r\n", max(pos, self._scanned), stop)) != -1:
            self._line(buffer, pos, eol)
            pos = eol + 2
        self._pos, self._scanned = pos, max(pos, stop - 1)  # a CR at the end may have its LF in the next read
        if end == -1:
            if len(buffer) - pos >= MAX_LINE:  # with its CRLF to come, over the limit already
                raise MalformedHead(f"sent a response head line over {MAX_LINE} bytes")
            if interim.skipped + len(buffer) > self._max_head:
                raise MalformedHead(f"sent more than {self._max_head} bytes of response head")
            return False
        if interim.skipped + end + 4 > self._max_head:
            raise MalformedHead(f"sent more than {self._max_head} bytes of response head")
        self.end = end
        return True

    def as_http11(self, buffer: bytes | bytearray) -> bytes:
        """``buffer``, starting with the whole head, with its status line as ``websockets`` reads it:
        ``HTTP/1.1 <status> <reason>``, the space before an empty reason phrase included."""
        assert self.end != -1
        return b"HTTP/1.1 %d %s%s" % (self.status, self._reason, buffer[self._line_end :])

    def _whole(self, buffer: bytearray, stop: int) -> bool:
        """Check a whole head arrived at once, no longer than one line may be (every answer but a
        large one), in one match over its header lines rather than line by line. False, nothing
        checked, when a line breaks the rule: the lines are then checked one by one, which says how."""
        eol = buffer.find(b"\r\n", 0, stop)
        lines = buffer.count(b"\r\n", eol + 2, stop)
        if lines > MAX_HEADER_LINES or _HEADER_LINES.fullmatch(buffer, eol + 2, stop) is None:
            return False
        self._status_line(bytes(buffer[:eol]))
        if lines > self._line_limit():  # a refusal's: said line by line
            return False
        self._line_end = eol
        self._lines = lines
        return True

    def _line_limit(self) -> int:
        return MAX_HEADER_LINES if self.status == 101 else MAX_REFUSAL_LINES

    def _line(self, buffer: bytearray, start: int, eol: int) -> None:
        if eol + 2 - start > MAX_LINE:
            raise MalformedHead(f"sent a response head line over {MAX_LINE} bytes")
        line = bytes(buffer[start:eol])
        if start == 0:
            self._status_line(line)
            self._line_end = eol
            return
        self._lines += 1
        if self._lines > (limit := self._line_limit()):
            raise MalformedHead(f"sent more than {limit} response header lines")
        if _HEADER_LINE.fullmatch(line) is None:
            raise MalformedHead(f"sent a malformed response header line: {_shown(line.partition(b':')[0])}")

    def _status_line(self, line: bytes) -> None:
        version, _, rest = line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if _VERSION.fullmatch(version) is None:
            raise MalformedHead(f"did not answer with HTTP/1.x: {_shown(line)}")
        if not (len(code) == 3 and code.isdigit()):  # (bytes.isdigit: ASCII digits only)
            raise MalformedHead(f"answered with a status code that is not 3 digits: {_shown(code)}")
        if not b"100" <= code <= b"599":
            raise MalformedHead(f"answered with status {code.decode()}, outside 100-599")
        if _REASON.fullmatch(reason) is None:
            raise MalformedHead("sent a control character in its reason phrase")
        if code == b"101" and version != b"HTTP/1.1":  # no upgrade in another version
            raise MalformedHead(f"switched protocols in {_shown(version)}, not HTTP/1.1")
        self.status, self._reason = int(code), reason


def _shown(text: bytes, limit: int = 40) -> str:
    """An upstream's bytes for a log line: cut, quoted, everything outside printable ASCII escaped."""
    return ascii(text[:limit].decode("latin-1"))


__all__ = [
    "GATEWAY_LINES",
    "MAX_HEAD",
    "MAX_HEADER_LINES",
    "MAX_LINE",
    "MAX_REFUSAL_LINES",
    "AnswerHead",
    "MalformedHead",
]
