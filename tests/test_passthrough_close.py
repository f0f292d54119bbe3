"""Passthrough's close sequences, fast: the splice between two fake transports, no sockets.

Bytes the test feeds to a side are what that peer sent; what the splice wrote to a transport is
read back with the frame scanner. ``connection_lost`` is called by the test, as asyncio would.
"""

from __future__ import annotations

import asyncio
from typing import cast

from asgi_ws_gateway.passthrough.frame_encoding import close_frame, encode_frame
from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.passthrough.splice import Splice
from asgi_ws_gateway.relay.stats import RelayStats
from support.relay_fakes import FakeTransport


def _splice() -> tuple[Splice, FakeTransport, FakeTransport]:
    client, upstream = FakeTransport(), FakeTransport()
    reader = _HandshakeReader()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", reader)
    splice = Splice(raw, max_message_size=1000, close_timeout=30.0)
    splice.client.connection_made(client)
    splice._start()
    return splice, client, upstream


def _close_in(written: bytearray, *, masked: bool) -> tuple[int, str] | None:
    """The close frame (code, reason) among the frames written to a peer, if any."""
    scanner = FrameScanner(RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12), inbound=masked, max_message_size=1000)
    scanner.feed(bytes(written))
    assert scanner.error is None
    return scanner.close


async def test_bytes_after_the_clients_close_do_not_cut_it_off_before_the_upstream_answers() -> None:
    """Autobahn 7.1.3: close, then a ping in another read; the client still gets the upstream's answer."""
    splice, client, upstream = _splice()
    splice.client.data_received(close_frame(1000, "", mask=True))
    assert _close_in(upstream.written, masked=True) == (1000, "")
    splice.client.data_received(encode_frame(0x9, b"late ping", mask=True))
    assert not client.is_closing()
    splice.upstream.data_received(close_frame(1000, "", mask=False))
    assert _close_in(client.written, masked=False) == (1000, "")
    splice.upstream.connection_lost(None)  # the server ends the TCP connection
    assert client.is_closing()
    splice.client.connection_lost(None)
    assert splice.finished.is_set()
    assert (splice.stats.closed_by, splice.stats.close_code) == ("client", 1000)


async def test_vanished_client_gets_the_upstream_1001_and_its_answer_read_at_once() -> None:
    """A full client buffer paused the upstream; the client drops: 1001, reading resumes, TCP closed on the answer."""
    splice, _client, upstream = _splice()
    splice.client.pause_writing()
    assert not upstream.is_reading()
    splice.client.connection_lost(ConnectionResetError())
    assert _close_in(upstream.written, masked=True) == (1001, "client went away")
    assert upstream.is_reading()
    splice.upstream.data_received(encode_frame(0x2, b"x" * 100, mask=False) + close_frame(1001, "", mask=False))
    assert upstream.is_closing() and not upstream.aborted
    splice.upstream.connection_lost(None)
    assert splice.finished.is_set()
    assert (splice.stats.closed_by, splice.stats.close_code) == ("client", 1006)


async def test_malformed_client_frame_is_1002_both_ways_and_not_forwarded() -> None:
    """An unmasked client frame: the upstream never sees it; each side gets a 1002 close frame."""
    splice, client, upstream = _splice()
    good = encode_frame(0x1, b"ok", mask=True)
    splice.client.data_received(good + encode_frame(0x1, b"bad", mask=False))
    assert bytes(upstream.written).startswith(good)
    assert _close_in(upstream.written, masked=True) == (1002, "incorrect masking")
    assert _close_in(client.written, masked=False) == (1002, "incorrect masking")
    splice.upstream.data_received(close_frame(1002, "", mask=False))
    assert upstream.is_closing()  # it answered the gateway's close: TCP closed at once
    assert client.eof  # half-closed after its close frame: its frames are not read any more, so
    splice.client.data_received(close_frame(1002, "", mask=True))  # its answer is dropped, and it is
    assert not client.is_closing()  # not reset while it may still be sending: its TCP close ends it
    splice.upstream.connection_lost(None)
    splice.client.connection_lost(None)
    assert splice.finished.is_set()


async def test_malformed_upstream_frame_is_1011_to_the_client_and_1002_upstream() -> None:
    """A masked frame from the upstream: the client gets 1011, the upstream 1002."""
    splice, client, upstream = _splice()
    splice.upstream.data_received(encode_frame(0x1, b"bad", mask=True))
    assert _close_in(client.written, masked=False) == (1011, "upstream connection failed")
    assert _close_in(upstream.written, masked=True) == (1002, "incorrect masking")


def _pinging_splice(ping_timeout: float = 30.0) -> tuple[Splice, FakeTransport, FakeTransport]:
    client, upstream = FakeTransport(), FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    splice = Splice(raw, max_message_size=1000, close_timeout=30.0, ping_interval=30.0, ping_timeout=ping_timeout)
    splice.client.connection_made(client)
    splice._start()
    return splice, client, upstream


def _frames(written: bytearray, *, masked: bool) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each frame written to a peer (small frames, unmasked for reading)."""
    data, frames = bytes(written), []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        assert length < 126
        if masked:
            key, payload = data[2:6], data[6 : 6 + length]
            frames.append((opcode, bytes(b ^ key[i % 4] for i, b in enumerate(payload))))
            data = data[6 + length :]
        else:
            frames.append((opcode, data[2 : 2 + length]))
            data = data[2 + length :]
    return frames


async def test_gateway_close_mid_frame_waits_for_the_frame_then_sends_a_close_frame() -> None:
    """Drain while the upstream is half-way through a frame: the client gets the frame's rest, then 1001."""
    splice, client, upstream = _splice()
    frame = encode_frame(0x2, b"y" * 500, mask=False)
    splice.upstream.data_received(frame[:100])
    await splice.close(1001, "gateway shutting down", 1001, "gateway shutting down")
    assert _close_in(upstream.written, masked=True) == (1001, "gateway shutting down")
    assert not client.is_closing() and bytes(client.written) == frame[:100]
    splice.upstream.data_received(frame[100:] + encode_frame(0x1, b"not forwarded", mask=False))
    assert bytes(client.written).startswith(frame)
    assert _close_in(client.written, masked=False) == (1001, "gateway shutting down")
    assert b"not forwarded" not in client.written and not client.is_closing()


async def test_keepalive_pings_an_idle_side_and_takes_its_pong_out() -> None:
    """An idle client and upstream each get a ping; their pongs are not forwarded to the other side."""
    splice, client, upstream = _pinging_splice()
    splice._keepalive()
    ours = splice.ping_payload
    assert _frames(client.written, masked=False) == [(0x9, ours)]
    assert _frames(upstream.written, masked=True) == [(0x9, ours)]
    client.written.clear()
    upstream.written.clear()
    splice.client.data_received(encode_frame(0xA, ours, mask=True) + encode_frame(0x1, b"hi", mask=True))
    splice.upstream.data_received(encode_frame(0xA, ours, mask=False))
    assert _frames(upstream.written, masked=True) == [(0x1, b"hi")]
    assert client.written == b""
    splice._ping_expired(splice.client)
    splice._ping_expired(splice.upstream)
    assert not client.is_closing() and not upstream.is_closing()
    splice._stop_timers()


async def test_keepalive_forwards_a_pong_that_is_not_the_gateways() -> None:
    """A pong with another payload (an answer to the upstream's own ping) reaches the upstream."""
    splice, _client, upstream = _pinging_splice()
    other = bytes(b ^ 1 for b in splice.ping_payload)  # as long as the gateway's
    splice.upstream.data_received(encode_frame(0x9, other, mask=False))
    pong = encode_frame(0xA, other, mask=True)
    splice.client.data_received(pong)
    assert bytes(upstream.written) == pong
    splice._stop_timers()


async def test_keepalive_does_not_ping_a_side_that_spoke() -> None:
    """A side that sent something during the interval is not pinged in that round."""
    splice, client, _upstream = _pinging_splice()
    splice.client.data_received(encode_frame(0x1, b"hi", mask=True))
    splice._keepalive()
    assert client.written == b""
    splice._stop_timers()


async def test_keepalive_unanswered_ping_drops_the_upstream_and_closes_the_client_1011() -> None:
    """No answer within ping_timeout: the upstream is aborted, the client gets 1011 as for a vanished upstream."""
    splice, client, upstream = _pinging_splice()
    splice.client.data_received(encode_frame(0x1, b"hi", mask=True))  # the client is alive
    splice._keepalive()
    assert splice.upstream.ping_due is not None
    splice._ping_expired(splice.upstream)
    assert upstream.aborted
    splice.upstream.connection_lost(None)  # as asyncio does after abort()
    assert _close_in(client.written, masked=False) == (1011, "upstream connection failed")
    assert (splice.stats.closed_by, splice.stats.close_code) == ("upstream", 1006)
    splice._stop_timers()


async def test_keepalive_unanswered_ping_drops_the_client_and_closes_the_upstream_1001() -> None:
    """A dead client: aborted after ping_timeout; the upstream gets 1001 "client went away"."""
    splice, client, upstream = _pinging_splice()
    splice._keepalive()
    splice.upstream.data_received(encode_frame(0xA, splice.ping_payload, mask=False))
    splice._ping_expired(splice.client)
    splice._ping_expired(splice.upstream)
    assert client.aborted and not upstream.is_closing()
    splice.client.connection_lost(None)
    assert _close_in(upstream.written, masked=True) == (1001, "client went away")
    splice._stop_timers()


async def test_invalid_client_close_code_is_1002_both_ways_and_never_reaches_the_upstream() -> None:
    """Autobahn 7.9.x: a client's close frame with 1005 (reserved) is its protocol error, not a close to pass on."""
    splice, client, upstream = _splice()
    splice.client.data_received(encode_frame(0x8, (1005).to_bytes(2, "big"), mask=True))
    assert _close_in(client.written, masked=False) == (1002, "invalid close code")
    assert _close_in(upstream.written, masked=True) == (1002, "invalid close code")
    assert (splice.stats.closed_by, splice.stats.close_code) == ("gateway", 1002)


async def test_invalid_upstream_close_code_is_1002_to_it_and_1011_to_the_client() -> None:
    """A hostile upstream's close code 65535 is not forwarded: the client gets the gateway's 1011."""
    splice, client, upstream = _splice()
    splice.upstream.data_received(encode_frame(0x8, (65535).to_bytes(2, "big"), mask=False))
    assert _close_in(client.written, masked=False) == (1011, "upstream connection failed")
    assert _close_in(upstream.written, masked=True) == (1002, "invalid close code")
    assert (splice.stats.closed_by, splice.stats.close_code) == ("gateway", 1011)


async def test_client_close_reason_not_utf8_is_1007() -> None:
    """Autobahn 7.5.1: a close reason that is not UTF-8 is invalid data, 1007 both ways."""
    splice, client, upstream = _splice()
    splice.client.data_received(encode_frame(0x8, b"\x03\xe8\xc3\x28", mask=True))
    assert _close_in(client.written, masked=False) == (1007, "invalid UTF-8 in the close reason")
    assert _close_in(upstream.written, masked=True) == (1007, "invalid UTF-8 in the close reason")
