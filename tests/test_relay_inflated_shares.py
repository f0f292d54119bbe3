"""The relay's two legs end a feed's share once it inflated INFLATED_PER_TURN bytes, in process.

Each leg's websockets parser is fed a read a share at a time; its deflate extension
(``upstream/deflate_streams.DeflateStreams``) ends a share after the frame that inflates past the bound,
and hands back the bytes after that frame, which the leg feeds at the next loop turn. Fed that way,
the parser must give every frame it gives when fed all at once, in the same order, control frames and
fragments included, and no share may inflate more than the bound and one frame.
"""

from __future__ import annotations

import zlib

import pytest
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from websockets.frames import Frame
from websockets.protocol import Protocol, State
from websockets.uri import parse_uri

from asgi_ws_gateway.loop_watch import INFLATED_PER_TURN
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from asgi_ws_gateway.upstream.deflate_streams import DeflateStreams
from asgi_ws_gateway.upstream.websockets_protocol import _ClientProtocol
from support.rawhttp import ws_frame

LARGEST = 600_000
"""The largest message's inflated size: two of them pass the bound."""


def _leg(side: str) -> tuple[Protocol, DeflateStreams]:
    """A leg's protocol, open, permessage-deflate negotiated (context kept), and its extension."""
    leg: _ServerProtocol | _ClientProtocol
    if side == "client leg":
        leg = _ServerProtocol(state=State.OPEN, extensions=[ServerPerMessageDeflateFactory()], max_size=1 << 24)
        _, leg.extensions = leg.process_extensions(Headers([("Sec-WebSocket-Extensions", "permessage-deflate")]))
    else:
        leg = _ClientProtocol(
            parse_uri("ws://upstream/"),
            state=State.OPEN,
            extensions=[ClientPerMessageDeflateFactory()],
            max_size=1 << 24,
        )
        leg.extensions = leg.process_extensions(Headers([("Sec-WebSocket-Extensions", "permessage-deflate")]))
    assert leg.inflating is not None
    return leg, leg.inflating


def _traffic(mask: bool) -> tuple[bytes, list[tuple[int, bytes, bool]]]:
    """Compressed messages of zeros (~600 bytes on the wire for 600 KB), a ping, plain text and a
    compressed message in two fragments among them; and the frames a parser gives for them."""
    deflate = zlib.compressobj(wbits=-15)

    def compressed(data: bytes) -> bytes:
        return (deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]

    wire, frames = [], []
    for i in range(12):
        payload = bytes([i]) * (LARGEST - i)
        wire.append(ws_frame(0x2, compressed(payload), rsv=0x40, mask=mask))
        frames.append((0x2, payload, True))
        if i == 3:
            wire.append(ws_frame(0x9, b"ping", mask=mask))
            frames.append((0x9, b"ping", True))
        if i == 5:
            wire.append(ws_frame(0x1, b"plain", mask=mask))
            frames.append((0x1, b"plain", True))
        if i == 7:  # a fragmented message: the share may end between its fragments
            first, last = b"a" * LARGEST, b"b" * LARGEST
            data = compressed(first + last)
            wire.append(
                ws_frame(0x2, data[:100], fin=False, rsv=0x40, mask=mask) + ws_frame(0x0, data[100:], mask=mask)
            )
            inflate = zlib.decompressobj(wbits=-15)
            head = inflate.decompress(data[:100])
            frames += [(0x2, head, False), (0x0, (first + last)[len(head) :], True)]
    return b"".join(wire), frames


@pytest.mark.parametrize("side", ["client leg", "upstream leg"])
def test_a_read_fed_an_inflated_share_at_a_time_gives_every_frame_in_order(side: str) -> None:
    """Each share ends at INFLATED_PER_TURN and one frame; the rest, fed next, gives what followed."""
    leg, inflating = _leg(side)
    data, expected = _traffic(mask=side == "client leg")
    received: list[tuple[int, bytes, bool]] = []
    shares: list[int] = []
    while data:
        before = inflating.inflated
        inflating.start_share()
        leg.receive_data(data)
        received += [(e.opcode.value, bytes(e.data), e.fin) for e in leg.events_received() if isinstance(e, Frame)]
        shares.append(inflating.inflated - before)
        data = inflating.rest_of_share()
    assert leg.parser_exc is None
    assert received == expected
    assert len(shares) > 1
    assert max(shares) <= INFLATED_PER_TURN + LARGEST * 2


@pytest.mark.parametrize("side", ["client leg", "upstream leg"])
def test_a_share_under_the_bound_is_parsed_whole(side: str) -> None:
    """Plain and lightly compressed traffic: nothing is left over, whatever the read."""
    leg, inflating = _leg(side)
    deflate = zlib.compressobj(wbits=-15)
    text = b"x" * 1000
    frame = ws_frame(
        0x1, (deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=0x40, mask=side == "client leg"
    )
    inflating.start_share()
    leg.receive_data(frame + ws_frame(0x1, b"plain", mask=side == "client leg"))
    assert [bytes(e.data) for e in leg.events_received() if isinstance(e, Frame)] == [text, b"plain"]
    assert inflating.rest_of_share() == b""
