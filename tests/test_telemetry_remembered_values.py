"""What spans repeat from one handshake to the next is remembered, bounded, and the same as computed afresh.

The server a client addressed (``Host``), the host and port an upstream attempt connects to (its URL),
and plain addresses (``address_text``): a few values, again and again. Each store holds at most
1024 answers (forgotten together when full) of values at most a few hundred characters long: a
client choosing a new ``Host``, path or address per handshake grows none of them past that.
"""

from __future__ import annotations

import pytest

from asgi_ws_gateway.telemetry import server_addresses, values
from asgi_ws_gateway.telemetry.server_addresses import addressed_server, connected_to
from asgi_ws_gateway.telemetry.values import address_text


@pytest.fixture(autouse=True)
def forgotten() -> None:
    server_addresses._connections.clear()
    server_addresses._servers.clear()
    values._plain_addresses.clear()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:9001/echo", ("127.0.0.1", 9001)),
        ("wss://example.test/chat", ("example.test", 443)),
        ("ws://[::1]/x", ("::1", 80)),
        ("ws://example.test:99999/", None),  # not a port: refused before any connect
    ],
)
def test_an_upstream_url_s_host_and_port_are_the_same_when_remembered(
    url: str, expected: tuple[str, int] | None
) -> None:
    """Asked twice, the second answer is the remembered first one, equal to a fresh parse."""
    assert connected_to(url) == expected
    assert url in server_addresses._connections
    assert connected_to(url) == expected == server_addresses._connected_to(url)


@pytest.mark.parametrize(
    "url",
    [
        "wss://example.test/chat?access_token=s3cr3t",
        "ws://example.test/rooms/token=s3cr3t",
        "ws://example.test/rooms/token%3Ds3cr3t",
        "ws://example.test/rooms/eyJhbGciOiJIUzI1NiJ9.e30.sig",
    ],
)
def test_an_upstream_url_that_may_carry_a_credential_is_never_remembered(url: str) -> None:
    """A client's query or path goes upstream in the URL: a credential must not outlive its connection."""
    assert connected_to(url) == ("example.test", 443 if url.startswith("wss") else 80)
    assert url not in server_addresses._connections


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        (b"gateway.test:8443", "ws", ("gateway.test", 8443)),
        (b"gateway.test", "wss", ("gateway.test", 443)),
        (b"[::1]:8000", "ws", ("::1", 8000)),
        (b"gateway.test:\xb2", "ws", ("gateway.test", 80)),  # not a port: the scheme's
    ],
)
def test_the_addressed_server_is_the_same_when_remembered(host: bytes, scheme: str, expected: tuple[str, int]) -> None:
    """The ``Host`` header's address and port, remembered per header and scheme."""
    assert addressed_server(host, ("10.0.0.1", 8000), scheme) == expected
    assert addressed_server(host, ("10.0.0.1", 8000), scheme) == expected
    assert (host, scheme) in server_addresses._servers
    assert addressed_server(None, ("10.0.0.1", 8000), scheme) == ("10.0.0.1", 8000)  # the socket's: not kept


def test_the_stores_stay_bounded_whatever_clients_send() -> None:
    """A new Host, URL and address per handshake: each store at most ``REMEMBERED``; long values never kept."""
    limit = server_addresses.REMEMBERED
    for i in range(3 * limit):
        connected_to(f"ws://127.0.0.1:9001/room/{i}")
        addressed_server(f"host-{i}.test".encode(), None, "ws")
        address_text(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert 0 < len(server_addresses._connections) <= limit
    assert 0 < len(server_addresses._servers) <= limit
    assert 0 < len(values._plain_addresses) <= values._PLAIN_ADDRESSES
    server_addresses._connections.clear()
    server_addresses._servers.clear()
    long_url = "ws://127.0.0.1:9001/" + "a" * 2000
    assert connected_to(long_url) == ("127.0.0.1", 9001)
    assert addressed_server(b"h" * 2000, None, "ws") == ("h" * 2000, 80)
    assert not server_addresses._connections and not server_addresses._servers


def test_only_plain_addresses_are_remembered() -> None:
    """A plain address is recorded as it is, and remembered; anything else is a client's text, escaped
    afresh each time (redaction's rules may change with the configuration)."""
    assert address_text("203.0.113.7") == "203.0.113.7" == address_text("203.0.113.7")
    assert address_text("host\nname") == address_text("host\nname") != "host\nname"
    assert list(values._plain_addresses) == ["203.0.113.7"]
