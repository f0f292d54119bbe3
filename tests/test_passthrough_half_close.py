"""The splice never closes the socket of a side that may still be sending: it reads it until it answers.

Fake transports, no sockets (as ``tests/test_passthrough_close.py``): bytes fed to a side are what
that peer sent. Closing a socket the gateway no longer reads makes the kernel reset the connection
at the side's next bytes (an ack, a pong it owes), and the reset drops all still queued to it: the
upstream's last messages and its close frame. A side with no close frame to answer is half-closed.
``tests/test_passthrough_upstream_ends_first.py`` shows it end to end.
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


class Socket(FakeTransport):
    """As asyncio's transports: nothing may be written after ``write_eof``; over TLS there is no half-close."""

    def __init__(self, *, tls: bool = False) -> None:
        super().__init__()
        self.tls = tls

    def write(self, data: bytes) -> None:
        assert not self.eof, "write after write_eof"  # asyncio raises RuntimeError
        super().write(data)

    def can_write_eof(self) -> bool:
        return not self.tls


def _splice(*, tls: bool = False) -> tuple[Splice, Socket, Socket]:
    client, upstream = Socket(tls=tls), Socket()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    splice = Splice(raw, max_message_size=1000, close_timeout=30.0)
    splice.client.connection_made(client)
    splice._start()
    return splice, client, upstream


def _close_in(written: bytearray) -> tuple[int, str] | None:
    """The close frame (code, reason) among the frames the splice wrote to the client, if any."""
    scanner = FrameScanner(RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12), inbound=False, max_message_size=1000)
    scanner.feed(bytes(written))
    assert scanner.error is None
    return scanner.close


def _ack() -> bytes:
    return encode_frame(0x1, b"ack", mask=True)


async def test_upstream_tcp_close_after_its_close_frame_keeps_reading_the_client_until_it_answers() -> None:
    """The client is read (its acks dropped), not closed, until its answer to the forwarded close frame."""
    splice, client, _upstream = _splice()
    splice.upstream.data_received(encode_frame(0x2, b"m" * 500, mask=False) + close_frame(1000, "bye", mask=False))
    splice.upstream.connection_lost(None)
    assert not client.is_closing() and client.is_reading() and not client.eof
    assert _close_in(client.written) == (1000, "bye")
    splice.client.data_received(_ack() + _ack())  # sent before it read the close frame: dropped
    assert not client.is_closing()
    splice.client.data_received(close_frame(1000, "", mask=True))
    assert client.is_closing() and not client.aborted
    splice.client.connection_lost(None)
    assert splice.finished.is_set()
    assert (splice.stats.closed_by, splice.stats.close_code) == ("upstream", 1000)


async def test_a_vanished_upstream_gives_the_client_1011_and_reads_it_until_it_answers() -> None:
    """Its messages, then 1011; the client's next ack is read, not reset, and its answer closes it."""
    splice, client, _upstream = _splice()
    splice.upstream.data_received(encode_frame(0x2, b"m" * 500, mask=False))
    splice.upstream.connection_lost(ConnectionResetError())
    assert _close_in(client.written) == (1011, "upstream connection failed")
    assert not client.is_closing() and client.is_reading()
    splice.client.data_received(_ack())
    assert not client.is_closing()
    splice.client.data_received(close_frame(1011, "", mask=True))
    assert client.is_closing()


async def test_a_stalled_upstream_dropped_by_the_gateway_lets_the_clients_answer_close_it() -> None:
    """The gateway's close (a stall) to the client: its answer ends it at once, not at its TCP close."""
    splice, client, upstream = _splice()
    splice.upstream.stalled, splice.upstream.dropped = True, "upstream read nothing"
    upstream.abort()
    splice.upstream.connection_lost(None)
    assert (splice.stats.closed_by, splice.stats.close_code) == ("gateway", 1011)
    assert _close_in(client.written) == (1011, "upstream connection failed")
    splice.client.data_received(_ack() + close_frame(1011, "", mask=True))
    assert client.is_closing()


async def test_an_upstream_vanishing_mid_frame_half_closes_the_client_without_a_close_frame() -> None:
    """The rest of the frame never comes and no close frame fits inside it: a FIN after it, no reset."""
    splice, client, _upstream = _splice()
    splice.upstream.data_received(encode_frame(0x2, b"y" * 500, mask=False)[:100])
    splice.upstream.connection_lost(ConnectionResetError())
    assert _close_in(client.written) is None
    assert client.eof and not client.is_closing() and client.is_reading()


async def test_a_gateway_close_mid_frame_whose_sender_vanishes_half_closes_the_receiver() -> None:
    """The gateway's close frame waited for the frame in flight, whose sender is gone: a FIN, no reset."""
    splice, client, _upstream = _splice()
    splice.upstream.data_received(encode_frame(0x2, b"y" * 500, mask=False)[:100])
    await splice.close(1001, "idle timeout", 1001, "idle timeout")
    splice.upstream.connection_lost(ConnectionResetError())
    assert _close_in(client.written) is None
    assert client.eof and not client.is_closing() and client.is_reading()


async def test_a_client_paused_by_the_upstreams_full_buffer_is_read_again_when_the_upstream_ends() -> None:
    """Its acks were left unread under backpressure: read (and dropped) now, or its socket resets at the close."""
    splice, client, _upstream = _splice()
    splice.upstream.pause_writing()
    assert not client.is_reading()
    splice.upstream.data_received(close_frame(1000, "bye", mask=False))
    splice.upstream.connection_lost(None)
    assert client.is_reading() and not client.is_closing()


async def test_over_tls_a_client_left_inside_a_frame_stays_open_and_read() -> None:
    """No half-close on TLS: the client is kept and read (``close_timeout`` bounds it), not reset."""
    splice, client, _upstream = _splice(tls=True)
    splice.upstream.data_received(encode_frame(0x2, b"y" * 500, mask=False)[:100])
    splice.upstream.connection_lost(None)
    assert not client.eof and not client.is_closing() and client.is_reading()
    splice.client.data_received(_ack())
    assert not client.is_closing()
    splice._expire()
    assert client.aborted


async def test_close_timeout_ends_a_client_that_never_answers() -> None:
    """Reading it is bounded: ``close_timeout`` after the upstream's end, it is aborted."""
    splice, client, _upstream = _splice()
    splice.upstream.data_received(close_frame(1000, "bye", mask=False))
    splice.upstream.connection_lost(None)
    assert splice._timer is not None
    splice._expire()
    assert client.aborted
    splice._stop_timers()


async def test_a_client_that_sent_its_close_frame_is_closed_at_once_when_the_upstream_ends() -> None:
    """It sends nothing after its close frame: nothing to wait for. The upstream never answered it: the
    gateway does, the client's code and reason echoed (it got its TCP close alone, a 1006 to it)."""
    splice, client, _upstream = _splice()
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    splice.upstream.connection_lost(None)
    assert client.is_closing() and not client.eof
    assert _close_in(client.written) == (4001, "bye")


async def test_a_client_whose_close_the_upstream_answered_gets_no_second_close_when_it_ends() -> None:
    """The upstream's answer reached the client: the gateway adds none of its own."""
    splice, client, _upstream = _splice()
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    splice.upstream.data_received(close_frame(4001, "bye", mask=False))
    splice.upstream.connection_lost(None)
    assert client.written.count(close_frame(4001, "bye", mask=False)) == 1


async def test_the_upstream_left_paused_by_a_vanished_client_is_read_for_its_answer() -> None:
    """The mirror: the client closed, then vanished under a full buffer; the upstream is read to its answer."""
    splice, _client, upstream = _splice()
    splice.client.data_received(close_frame(1000, "", mask=True))
    splice.client.pause_writing()
    assert not upstream.is_reading()
    splice.client.connection_lost(ConnectionResetError())
    assert upstream.is_reading() and not upstream.is_closing()
    splice.upstream.data_received(encode_frame(0x2, b"m" * 500, mask=False) + close_frame(1000, "", mask=False))
    splice.upstream.connection_lost(None)
    assert splice.finished.is_set()
    splice._stop_timers()


async def test_a_client_vanishing_mid_frame_half_closes_the_upstream_without_a_close_frame() -> None:
    """The mirror of the upstream's case: the upstream, left inside the client's frame, gets a FIN, not a reset."""
    splice, _client, upstream = _splice()
    splice.client.data_received(encode_frame(0x2, b"y" * 500, mask=True)[:100])
    splice.client.connection_lost(ConnectionResetError())
    assert upstream.eof and not upstream.is_closing() and upstream.is_reading()
    assert len(upstream.written) == 100  # the part of the frame, and no close frame after it
    splice._stop_timers()


async def test_an_upstream_whose_close_a_vanished_client_never_answered_gets_its_close_back() -> None:
    """The mirror: the client vanished instead of answering the upstream's close; the gateway answers it."""
    splice, _client, upstream = _splice()
    splice.upstream.data_received(close_frame(4000, "bye", mask=False))
    splice.client.connection_lost(ConnectionResetError())
    scanner = FrameScanner(RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12), inbound=True, max_message_size=1000)
    scanner.feed(bytes(upstream.written))
    assert scanner.error is None and scanner.close == (4000, "bye")
    splice._stop_timers()


async def test_a_client_that_half_closes_after_its_close_frame_is_kept_for_the_upstreams_answer() -> None:
    """Its FIN behind its close frame ends nothing: the upstream's answer is written to it, then it is closed."""
    splice, client, _upstream = _splice()
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    assert splice.client.eof_received() is True  # the transport stays open for writing
    assert not client.is_closing() and not client.is_reading()  # nothing more comes from it
    splice.upstream.data_received(close_frame(4001, "ok", mask=False))
    assert _close_in(client.written) == (4001, "ok") and client.is_closing() and not client.aborted
    splice._stop_timers()


async def test_an_upstream_that_half_closes_after_its_close_frame_is_kept_for_the_clients_answer() -> None:
    """The mirror: the client's answer is written to the upstream, then the upstream is closed."""
    splice, client, upstream = _splice()
    splice.upstream.data_received(close_frame(4000, "bye", mask=False))
    assert splice.upstream.eof_received() is True
    assert not upstream.is_closing()
    splice.client.data_received(close_frame(4000, "ok", mask=True))
    scanner = FrameScanner(RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12), inbound=True, max_message_size=1000)
    scanner.feed(bytes(upstream.written))
    assert scanner.close == (4000, "ok") and upstream.is_closing() and not upstream.aborted
    assert client.is_closing()
    splice._stop_timers()


async def test_a_half_closed_client_the_upstream_never_answers_gets_the_gateways_answer_at_close_timeout() -> None:
    """Kept open, it is still bounded: at the close wait's end the gateway answers it, its code echoed."""
    splice, client, _upstream = _splice()
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    assert splice.client.eof_received() is True
    splice._expire()
    assert _close_in(client.written) == (4001, "bye") and client.is_closing() and not client.aborted
    splice._stop_timers()


async def test_a_fin_without_a_close_frame_or_after_the_answer_closes_the_transport() -> None:
    """A FIN with no close frame is a client gone; one after the answer ends a handshake that is over."""
    splice, _client, _upstream = _splice()
    assert splice.client.eof_received() is None
    splice, _client, _upstream = _splice()
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    splice.upstream.data_received(close_frame(4001, "bye", mask=False))
    assert splice.upstream.eof_received() is None
    splice._stop_timers()


async def test_over_tls_a_fin_after_the_close_frame_closes_the_transport() -> None:
    """TLS has no half-close (the TLS layer closes on its peer's close_notify): as before, it ends there."""
    splice, _client, _upstream = _splice(tls=True)
    splice.client.data_received(close_frame(4001, "bye", mask=True))
    assert splice.client.eof_received() is None
    splice._stop_timers()
