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
"""

from __future__ import annotations

import sys
import zlib

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import CONT, CTRL_OPCODES, CloseCode, Frame
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

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
    not inflate is :exc:`InvalidCompressedData`.
    """

    _ended: zlib._Decompress | None = None  # a decoder whose stream ended at the end of a frame's data

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


def _read_streams(extensions: list[Extension]) -> list[Extension]:
    """The negotiated extensions, websockets' ``PerMessageDeflate`` replaced by a :class:`DeflateStreams`
    of the same parameters. Built anew, not swapped in by ``__class__``: an instance laid out for another
    class reads its attributes unspecialized, ~1,100 more instructions per compressed frame (Python 3.11)."""
    return [
        DeflateStreams(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            ext.compress_settings,
        )
        if type(ext) is PerMessageDeflate
        else ext
        for ext in extensions
    ]


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

    def process_extensions(self, headers: Headers) -> tuple[str | None, list[Extension]]:
        header, extensions = super().process_extensions(headers)
        return header, _read_streams(extensions)


class ClientDeflate(CompressedDataFailure, ClientProtocol):
    """websockets' client protocol reading compressed messages with :class:`DeflateStreams` (mix in
    before ``ClientProtocol``)."""

    def process_extensions(self, headers: Headers) -> list[Extension]:
        return _read_streams(super().process_extensions(headers))


__all__ = ["ClientDeflate", "CompressedDataFailure", "DeflateStreams", "InvalidCompressedData", "ServerDeflate"]
