"""Sans-I/O: a chunked body (RFC 9112 §7.1) decoded as its bytes arrive, up to a size.

Each connector reads an upstream's refusal through it (:mod:`.refusal`). A refusal in chunks
(``Transfer-Encoding: chunked``, what many servers send when they stream an error page) has no
``Content-Length`` and need not end with the connection: without decoding it the gateway waited for
an EOF that never came.
"""

from __future__ import annotations

import re

_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")  # chunk-size [ chunk-ext ]
_MAX_SIZE_LINE = 4096
"""Bytes of one chunk-size line (size and extensions); longer is malformed."""
_RAW_PER_BODY_BYTE = 16
"""Raw bytes read per byte of body kept, at most: bounds what tiny chunks with long extensions cost."""


class MalformedChunks(ValueError):
    """The bytes are not a chunked body."""


class Dechunker:
    """Decodes a chunked body from a growing buffer, keeping at most ``limit`` bytes of it.

    Call :meth:`advance` with the buffer whenever it grew; ``body`` holds what is decoded and
    ``done`` turns True at the last chunk (trailers are not read) or once ``limit`` bytes (or
    ``limit * 16`` raw bytes) are in. Each byte is looked at once.
    """

    def __init__(self, start: int, limit: int) -> None:
        self.body = bytearray()
        self.done = False
        self._start = self._pos = start
        self._limit = limit
        self._remaining: int | None = None  # data bytes left of the current chunk; None: a size line is next
        self._crlf = False  # the CRLF that ends a chunk's data is next

    def advance(self, buffer: bytes | bytearray) -> None:
        """Decode what ``buffer`` holds past what was decoded already.

        Raises:
            MalformedChunks: a size line that is not one, or data not followed by CRLF.
        """
        while not self.done and self._step(buffer):
            if self._pos - self._start > self._limit * _RAW_PER_BODY_BYTE:
                self.done = True

    def _step(self, buffer: bytes | bytearray) -> bool:
        """Decode one part (a size line, data, a CRLF); False: it has not fully arrived yet."""
        if self._crlf:
            if len(buffer) - self._pos < 2:
                return False
            if buffer[self._pos : self._pos + 2] != b"\r\n":
                raise MalformedChunks("a chunk's data is not followed by CRLF")
            self._pos, self._crlf = self._pos + 2, False
            return True
        if self._remaining is None:
            return self._size_line(buffer)
        return self._data(buffer, self._remaining)

    def _size_line(self, buffer: bytes | bytearray) -> bool:
        end = buffer.find(b"\r\n", self._pos)  # find: see routing.split_path
        if end == -1:
            if len(buffer) - self._pos > _MAX_SIZE_LINE:
                raise MalformedChunks("a chunk-size line is too long")
            return False
        match = _SIZE_LINE.fullmatch(buffer, self._pos, end)
        if match is None:
            raise MalformedChunks("a chunk-size line is not a size")
        size = int(match[1], 16)
        self._pos = end + 2
        if size == 0:
            self.done = True  # the last chunk: trailers, if any, are not needed
        else:
            self._remaining = size
        return True

    def _data(self, buffer: bytes | bytearray, remaining: int) -> bool:
        take = min(remaining, len(buffer) - self._pos)
        if take == 0:
            return False
        room = self._limit - len(self.body)
        self.body += buffer[self._pos : self._pos + min(take, room)]
        self._pos += take
        self._remaining = remaining - take
        if len(self.body) >= self._limit:
            self.done = True
        elif self._remaining == 0:
            self._remaining, self._crlf = None, True
        return True


__all__ = ["Dechunker", "MalformedChunks"]
