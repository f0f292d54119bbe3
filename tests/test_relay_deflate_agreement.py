"""The relay's two legs read compressed messages as the splice counts them (RFC 7692 §7.2.3.3), in process.

A message's deflate data may hold several deflate streams, each but the last ended by a final block.
The splice (``passthrough.inflate.InflatedSize``) counts what follows a stream's end as a new stream,
lets a frame end one stream at most, and fails what is not deflate data with 1007; websockets' decoder,
on both of the relay's legs, dropped what followed a stream's end (and, under context takeover, every
later message's data) and said 1002. Each leg's protocol, its extension negotiated as in a handshake,
is fed the frames a sender builds and must agree with the splice: the same messages, or the same failure.
"""

from __future__ import annotations

import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from websockets.frames import Close, Frame
from websockets.protocol import Protocol, State
from websockets.uri import parse_uri

from asgi_ws_gateway.passthrough.inflate import InflatedSize
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from asgi_ws_gateway.upstream.websockets_protocol import _ClientProtocol
from support.rawhttp import ws_frame

LIMIT = 4096


def _leg(side: str, takeover: bool) -> Protocol:
    """A leg's protocol, open, permessage-deflate negotiated as its handshake negotiates it."""
    if side == "client leg":  # the gateway's server side: the client sends
        offer = "permessage-deflate" + ("" if takeover else "; client_no_context_takeover")
        server = _ServerProtocol(state=State.OPEN, extensions=[ServerPerMessageDeflateFactory()], max_size=LIMIT)
        _, server.extensions = server.process_extensions(Headers([("Sec-WebSocket-Extensions", offer)]))
        return server
    answer = "permessage-deflate" + ("" if takeover else "; server_no_context_takeover")
    client = _ClientProtocol(
        parse_uri("ws://upstream/"), state=State.OPEN, extensions=[ClientPerMessageDeflateFactory()], max_size=LIMIT
    )
    client.extensions = client.process_extensions(Headers([("Sec-WebSocket-Extensions", answer)]))
    return client


def _stream(text: bytes, *, ended: bool) -> bytes:
    """``text`` deflated: a stream ended by a final block, or flushed as a sender flushes (tail taken off)."""
    deflate = zlib.compressobj(wbits=-15)
    if ended:
        return deflate.compress(text) + deflate.flush(zlib.Z_FINISH)
    return (deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]


segments = st.lists(st.tuples(st.binary(max_size=3000), st.booleans()), min_size=1, max_size=3)


@settings(max_examples=80, deadline=None)
@given(
    messages=st.lists(st.tuples(segments, st.lists(st.integers(0, 1 << 16), max_size=4)), min_size=1, max_size=4),
    takeover=st.booleans(),
    side=st.sampled_from(["client leg", "upstream leg"]),
)
def test_each_leg_reads_compressed_messages_as_the_splice_counts_them(
    messages: list[tuple[list[tuple[bytes, bool]], list[int]]], takeover: bool, side: str
) -> None:
    leg = _leg(side, takeover)
    counted = InflatedSize(limit=LIMIT, keeps_context=takeover)
    for parts, cuts in messages:
        payload = b"".join(_stream(text, ended=ended) for text, ended in parts)
        points = sorted({0, *(c % (len(payload) + 1) for c in cuts), len(payload)})
        pieces = [payload[a:b] for a, b in itertools.pairwise(points)] or [b""]
        counted.start()
        problem = None
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            frame = ws_frame(0x2 if index == 0 else 0x0, piece, fin=last, mask=side == "client leg",
                             rsv=0x40 if index == 0 else 0)  # fmt: skip
            leg.receive_data(frame)
            counted.frame(b"", len(piece))
            problem = problem or counted.feed(piece, last=last)
            if problem:
                break
        events = leg.events_received()
        frames = [event for event in events if isinstance(event, Frame)]  # one per fragment
        if problem is None:
            inflated = b"".join(bytes(frame.data) for frame in frames)
            assert frames == events and inflated == b"".join(text for text, _ in parts) and frames[-1].fin
            assert counted.size == len(inflated)
            continue
        sent = leg.close_sent
        assert isinstance(sent, Close) and leg.state is State.CLOSING
        if problem == "too big":
            assert sent.code == 1009
        else:
            assert (sent.code, sent.reason) == (1007, problem)
        return


@pytest.mark.parametrize("side", ["client leg", "upstream leg"])
@pytest.mark.parametrize("takeover", [True, False], ids=["context takeover", "no context takeover"])
def test_a_frame_ending_two_streams_is_1007_on_each_leg(side: str, takeover: bool) -> None:
    """The splice's rule, its words: "abc" and "XYZ", each ended, in one frame."""
    leg = _leg(side, takeover)
    payload = _stream(b"abc", ended=True) + _stream(b"XYZ", ended=True)
    leg.receive_data(ws_frame(0x2, payload, mask=side == "client leg", rsv=0x40))
    assert leg.events_received() == []
    assert leg.close_sent == Close(1007, "invalid compressed data (a frame ends more than one deflate stream)")
