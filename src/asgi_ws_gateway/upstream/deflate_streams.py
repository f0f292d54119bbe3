"""Compressed messages on the relay's two legs read by the splice's rule (RFC 7692, permessage-deflate).

websockets' permessage-deflate decoder stopped at the end of a deflate stream (a final block, RFC 7692
§7.2.3.3) and dropped what followed it, unrefused: a frame of "abc" in a final block then "XYZ" reached
the other side as "abc", and under context takeover every later message of the connection as empty.
The splice (``passthrough/inflate.py``) reads what follows a final block as a new deflate stream, lets
a frame end one stream at most, and fails data that is not deflate data with 1007; websockets failed
it with 1002 "decompression failed". Here, as there: :class:`DeflateStreams` is websockets'
``PerMessageDeflate`` with that reading, put in its place once negotiated (:class:`ServerDeflate`,
:class:`ClientDeflate`), and its :exc:`InvalidCompressedData` fails the connection with 1007
(:class:`CompressedDataFailure`).

Each leg's parser is fed a read ``BYTES_PER_TURN`` bytes a loop turn, and those bytes say little of
what they cost: deflate inflates zeros about a thousandfold, and 32 KiB of ~1 KB messages was 32 MB of
inflation in one callback. So a leg opens a share before each feed (:meth:`DeflateStreams.start_share`),
and once the share inflated ``INFLATED_PER_TURN`` bytes, the frame that took it there is the last one
parsed: the bytes after it are taken out of the parser's buffer, for the leg to feed at the next turn
(:meth:`DeflateStreams.rest_of_share`). A frame is never split, and nothing is added per frame but
for compressed ones.
"""

from __future__ import annotations

import sys
import zlib
from typing import Any

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import CONT, CTRL_OPCODES, CloseCode, Frame
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import BytesLike

from ..loop_watch import INFLATED_PER_TURN

_TAIL = b"\x00\x00\xff\xff"
"""What the sender took off the end of each message's deflate data (RFC 7692 §7.2.2)."""

_SMALL = 2044
"""Below this many bytes, a message's last frame is inflated with the tail appended (one copy: websockets'
measure), above it the tail is inflated on its own."""


class InvalidCompressedData(ProtocolError):
    """A compressed frame that is not deflate data, or that ends a second deflate stream: 1007."""


class DeflateStreams(PerMessageDeflate):
    """websockets' ``PerMessageDeflate``, inflating what follows the end of a deflate stream as a new
    stream, at most one stream ending in each frame, as the splice does.

    Its ``decode`` takes RFC 7692 §7.2.2's steps as websockets' (17.x) does (the same fields, so that the
    extension's negotiated state is read as there), with two differences: a stream's end goes to
    :meth:`_past_end` (a final block is rare: every other frame takes one test more), and data that does
    not inflate is :exc:`InvalidCompressedData`; and a share per loop turn ends once it inflated
    ``INFLATED_PER_TURN`` bytes (the module docstring).
    """

    _ended: zlib._Decompress | None = None  # a decoder whose stream ended at the end of a frame's data

    def __init__(self, *args: Any, reader: StreamReader | None = None, **kwargs: Any) -> None:
        """``PerMessageDeflate``'s arguments, and ``reader``: the parser's, whose buffer holds what follows the
        frame that ends a share (None: shares never end)."""
        super().__init__(*args, **kwargs)
        self._reader = reader
        self._rest = b""  # what followed the frame that ended the share, for the next turn
        self.inflated = 0
        """Bytes inflated on this connection so far."""
        self.share_ends = INFLATED_PER_TURN
        """``inflated`` at which the share being parsed ends (:meth:`start_share`); one is open from the
        start, since the extension may be negotiated in the middle of a feed (an upstream's 101 and its
        first frames in one read). Whoever feeds the parser takes what a share left (:meth:`rest_of_share`)
        to feed it later."""

    def start_share(self) -> None:
        """A share of the peer's bytes is fed to the parser: it ends after the frame that inflates its
        ``INFLATED_PER_TURN``-th byte."""
        self.share_ends = self.inflated + INFLATED_PER_TURN

    def rest_of_share(self) -> bytes:
        """What the share fed last left unparsed, its bytes after the frame that ended it (empty: all
        parsed): to feed at the next loop turn, before anything read later."""
        rest, self._rest = self._rest, b""
        return rest

    def _end_share(self) -> None:
        reader = self._reader
        if reader is None:
            return
        buffer = reader.buffer  # the bytes after the frame being decoded: the parser waits for more
        self._rest += buffer
        buffer.clear()
        self.share_ends = sys.maxsize

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is CONT:
            if not self.decode_cont_data:
                return frame
            if frame.rsv1:
                raise ProtocolError("RSV1 bit set in continuation frame")
            if frame.fin:
                self.decode_cont_data = False
        else:
            if not frame.rsv1:
                return frame
            if not frame.fin:
                self.decode_cont_data = True
            if self.remote_no_context_takeover:
                self.decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)

        data: BytesLike
        small = frame.fin and len(frame.data) < _SMALL
        data = bytes(frame.data) + _TAIL if small else frame.data
        decoder = self.decoder
        try:
            inflated = decoder.decompress(data, 0 if max_size is None else max_size)
            if decoder.unconsumed_tail:
                raise PayloadTooBig(None, max_size)
            if decoder.eof:
                inflated = self._past_end(decoder, inflated, data, frame.fin, small, max_size)
            elif frame.fin and not small and decoder.decompress(_TAIL, 1):
                raise PayloadTooBig(None, max_size)  # the tail may yield what max_size held back
        except zlib.error as error:
            raise InvalidCompressedData(f"invalid compressed data ({error})") from None

        if frame.fin and self.remote_no_context_takeover:
            del self.decoder
            self._ended = None
        self.inflated += len(inflated)
        if self.inflated >= self.share_ends:
            self._end_share()
        return Frame(frame.opcode, inflated, frame.fin, False, frame.rsv2, frame.rsv3)

    def _past_end(
        self, decoder: zlib._Decompress, inflated: bytes, data: BytesLike, fin: bool, small: bool, max_size: int | None
    ) -> bytes:
        """``decoder``'s stream ended, in this frame or at the end of an earlier one: what follows is
        inflated as new streams, of which none may end (one end a frame); the tail only into a stream
        begun, so that a sender's final block with nothing after it is valid too."""
        ends = 0 if decoder is self._ended else 1
        rest = bytes(data) if not ends else decoder.unused_data  # an ended decoder consumes nothing
        if small:
            rest = rest[:-4]  # the tail appended (or what the stream's end left of it)
        self._ended = None
        while rest:
            decoder = self.decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
            inflated += _inflate(decoder, rest, max_size, len(inflated))
            if not decoder.eof:
                if fin:
                    inflated += _inflate(decoder, _TAIL, max_size, len(inflated))
                return inflated
            ends += 1
            if ends > 1:
                raise zlib.error("a frame ends more than one deflate stream")
            rest = decoder.unused_data
        self._ended = decoder  # the next data begins a new stream
        return inflated


def _inflate(decoder: zlib._Decompress, data: bytes, max_size: int | None, size: int) -> bytes:
    """``data`` inflated by ``decoder``, :exc:`PayloadTooBig` if that takes the frame past ``max_size``."""
    if max_size is None:
        return decoder.decompress(data)
    inflated = decoder.decompress(data, max_size - size + 1)
    if size + len(inflated) > max_size:
        raise PayloadTooBig(None, max_size)
    return inflated


def _read_streams(extensions: list[Extension], reader: StreamReader) -> list[Extension]:
    """The negotiated extensions, websockets' ``PerMessageDeflate`` replaced by a :class:`DeflateStreams`
    of the same parameters, ending its shares in ``reader`` (the parser's). Built anew, not swapped in by
    ``__class__``: an instance laid out for another class reads its attributes unspecialized, ~1,100 more
    instructions per compressed frame (Python 3.11)."""
    return [
        DeflateStreams(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            ext.compress_settings,
            reader=reader,
        )
        if type(ext) is PerMessageDeflate
        else ext
        for ext in extensions
    ]


def _inflating(extensions: list[Extension]) -> DeflateStreams | None:
    return next((ext for ext in extensions if isinstance(ext, DeflateStreams)), None)


class CompressedDataFailure(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) that fails the
    connection on :exc:`InvalidCompressedData` with 1007, as the splice does: websockets' parser fails
    every ``ProtocolError`` with 1002."""

    def fail(self, code: int, reason: str = "") -> None:
        if code == CloseCode.PROTOCOL_ERROR and isinstance(sys.exception(), InvalidCompressedData):
            code = CloseCode.INVALID_DATA
        super().fail(code, reason)


class ServerDeflate(CompressedDataFailure, ServerProtocol):
    """websockets' server protocol reading compressed messages with :class:`DeflateStreams` (mix in
    before ``ServerProtocol``)."""

    inflating: DeflateStreams | None = None
    """The negotiated extension that inflates the client's messages, if any: its shares are the leg's."""

    def process_extensions(self, headers: Headers) -> tuple[str | None, list[Extension]]:
        header, extensions = super().process_extensions(headers)
        extensions = _read_streams(extensions, self.reader)
        self.inflating = _inflating(extensions)
        return header, extensions


class ClientDeflate(CompressedDataFailure, ClientProtocol):
    """websockets' client protocol reading compressed messages with :class:`DeflateStreams` (mix in
    before ``ClientProtocol``)."""

    inflating: DeflateStreams | None = None
    """The negotiated extension that inflates the upstream's messages, if any: its shares are the leg's."""

    def process_extensions(self, headers: Headers) -> list[Extension]:
        extensions = _read_streams(super().process_extensions(headers), self.reader)
        self.inflating = _inflating(extensions)
        return extensions


__all__ = ["ClientDeflate", "CompressedDataFailure", "DeflateStreams", "InvalidCompressedData", "ServerDeflate"]
