"""Numbers a peer sends, read as ASCII digits only (``asgi_ws_gateway.wire_numbers``), wherever they are read.

``int()`` takes ``+5``, `` 5``, ``1_0`` and ``٣``; ``str.isdigit()`` passes ``²``, on which ``int()``
raises, as it does past 4300 digits. Each place that read a peer's number with them is checked here
(the management API's head: ``tests/test_attack_management_numbers.py``).
"""

from __future__ import annotations

import asyncio

import pytest

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.passthrough import raw_upstream
from asgi_ws_gateway.passthrough.inflate import sender_window
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.server_addresses import addressed_server as _server
from asgi_ws_gateway.upstream.checks import check_upstream_request
from asgi_ws_gateway.wire_numbers import parse_digits, parse_port
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver
from support.rawhttp import exchange, handshake, status_of
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

NOT_DIGITS = ["", "+5", "-5", " 5", "5 ", "1_0", "0x5", "٣", "²", "5.0"]


@pytest.mark.parametrize("text", NOT_DIGITS, ids=repr)
def test_only_ascii_digits_are_a_number(text: str) -> None:
    assert parse_digits(text, 5) is None
    assert parse_port(text) is None


def test_a_number_has_at_most_its_digits_and_a_port_at_most_65535() -> None:
    assert [parse_digits(t, 3) for t in ("0", "007", "999", "1000", "1" * 5000)] == [0, 7, 999, None, None]
    assert [parse_port(t) for t in ("0", "443", "65535", "65536", "080", "000080")] == [0, 443, 65535, None, 80, None]


@pytest.mark.parametrize(("host", "port"), [(b"gw:\xb2", 80), (b"gw:\xb9\xb2", 80), (b"gw:+81", 80), (b"gw:81", 81)])
def test_the_spans_server_port_is_the_hosts_only_when_ascii_digits(host: bytes, port: int) -> None:
    """A Host port of ``²`` (the byte 0xB2, read as Latin-1) raised ValueError while the span started."""
    assert _server(host, None, "ws") == ("gw", port)


async def test_a_superscript_host_port_is_a_400_with_its_span_not_a_500(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        with UvicornServer(ProbedGateway(telemetry_config(upstream))) as server:
            response = await exchange(server.port, handshake().replace(b"Host: gw", b"Host: gw:\xb2"))
            assert status_of(response) == 400
            span = await asyncio.to_thread(otlp.wait_for_span, lambda s: s.name == "GET /ws/echo")
    assert (span.attributes[n.SERVER_ADDRESS], span.attributes[n.SERVER_PORT]) == ("gw", 80)


@pytest.mark.parametrize("bits", ["²", "٩", "+9", "0x9", "9" * 5000])
def test_window_bits_that_are_not_ascii_digits_are_the_default_window(bits: str) -> None:
    """``server_max_window_bits=²`` raised ValueError; ``٩`` was read as 9."""
    assert sender_window(f"permessage-deflate; server_max_window_bits={bits}", sender_is_client=False) == (True, 15)


@pytest.mark.parametrize("port", ["1" * 5000, "0" * 4400 + "80", "٨٠", "+80", "0"])
def test_an_upstream_url_port_that_is_not_a_port_number_is_a_400(port: str) -> None:
    """Five thousand digits (the URL may be 8192 characters) raised ValueError from ``int()``: a 500."""
    with pytest.raises(HandshakeDenied) as denied:
        check_upstream_request(f"ws://backend:{port}/x", [], in_process=False)
    assert denied.value.status == 400


async def test_a_refusals_content_length_of_thousands_of_digits_reads_the_body_to_eof() -> None:
    """The upstream's ``Content-Length: 111...`` (5000 digits) raised ValueError instead of reading the body."""
    reader = raw_upstream._HandshakeReader()
    reader.data_received(b"HTTP/1.1 403 Forbidden\r\n\r\nno")
    reader.connection_lost(None)
    assert await raw_upstream._body(reader, [("Content-Length", "1" * 5000)], 26) == b"no"
