"""The look after a read at the frame websockets' parser waits inside (``upstream/frame_headers.py``).

It reads the header from the suspended frame parser's locals: these tests pin that reading to the
installed websockets, so that a release that renames them fails here, not silently in production.
"""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from asgi_ws_gateway.frame_rules import RSV1, frame_rule_broken, header_start_broken
from asgi_ws_gateway.upstream.frame_headers import fail_at_waiting_header, waiting_header


def _open(protocol: Protocol) -> Protocol:
    """``protocol`` past its handshake, its parser reading frames."""
    protocol.state = State.OPEN
    protocol.parser = Protocol.parse(protocol)
    next(protocol.parser)
    return protocol


def _client() -> Protocol:
    return _open(ClientProtocol(parse_uri("ws://x/")))


def test_the_header_of_the_frame_the_parser_waits_inside_is_read() -> None:
    """Between frames nothing; inside a frame whose payload is short, its two first bytes."""
    client = _client()
    assert waiting_header(client.parser) is None
    client.receive_data(b"\x81\x10abc")
    assert waiting_header(client.parser) == (0x81, 0x10, 16)
    client.receive_data(b"x" * 13)
    assert waiting_header(client.parser) is None
    assert client.events_received() == [Frame(Opcode.TEXT, b"abc" + b"x" * 13)]


def test_a_header_still_short_is_not_read() -> None:
    client = _client()
    client.receive_data(b"\x81")
    assert waiting_header(client.parser) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"he", "fragmented control frame"),  # "hello" after a 101: a close frame without FIN
        (b"\xc1\x64", "reserved bits must be 0"),
        (b"\x80\x64", "unexpected continuation frame"),
        (b"\x89\x7e\x01\x00", "control frame too long"),  # its 16-bit length read: 256
    ],
)
def test_a_bad_header_whose_payload_is_to_come_fails_the_connection(data: bytes, problem: str) -> None:
    """1002 with websockets' words, as once the payload had come; the parser then discards what follows."""
    client = _client()
    client.receive_data(data)
    assert fail_at_waiting_header(client)
    assert client.close_sent is not None and (client.close_sent.code, client.close_sent.reason) == (1002, problem)
    assert str(client.parser_exc) == problem
    assert not fail_at_waiting_header(client)


def test_a_good_header_whose_payload_is_to_come_is_left_alone() -> None:
    client = _client()
    client.receive_data(b"\x81\x64abc")
    assert not fail_at_waiting_header(client)
    assert client.state is State.OPEN


def test_a_clients_header_is_read_by_the_servers_rules() -> None:
    """A server's frames must be masked: an unmasked header is websockets' own failure at once; a masked
    one breaking a rule is found while its payload is to come."""
    server = _open(ServerProtocol())
    server.receive_data(b"\xc1\xe4mask")
    assert fail_at_waiting_header(server)
    assert server.close_sent is not None and server.close_sent.code == 1002


def test_an_extended_length_still_to_come_is_not_judged() -> None:
    """A ping whose 16-bit length is still to come may be short (websockets reads it whole and takes it)."""
    client = _client()
    client.receive_data(b"\x89\x7e\x00")
    assert waiting_header(client.parser) == (0x89, 0x7E, None)
    assert not fail_at_waiting_header(client)


def test_a_header_judged_from_its_first_two_bytes_gets_the_whole_headers_verdict() -> None:
    """Where the first two bytes give a verdict, it is the one the whole header gets, whatever length follows."""
    for b0 in range(256):
        for b1 in (126, 127, 254, 255):  # an extended length to come, masked or not
            for masked in (0, 0x80):
                for rsv in (0, RSV1):
                    for in_message in (False, True):
                        early = header_start_broken(b0, b1, masked, rsv, in_message)
                        if early is None:
                            continue
                        for length in (0, 1, 125, 126, 127, 65535, 1 << 40, 1 << 63):
                            whole = frame_rule_broken(b0, b1, b0 & 0x0F, length, masked, rsv, in_message)
                            assert whole == early, (b0, b1, masked, rsv, in_message, length)
