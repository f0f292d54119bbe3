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
    assert list(server_addresses._connections) == [url[: url.index("/", url.index("//") + 2)]]  # the authority
    assert connected_to(url) == expected == server_addresses._connected_to(url)


@pytest.mark.parametrize(
    "url",
    [
        "wss://example.test/chat?access_token=s3cr3t",
        "ws://example.test/rooms/token=s3cr3t",
        "ws://example.test/rooms/token%3Ds3cr3t",
        "ws://example.test/rooms/eyJhbGciOiJIUzI1NiJ9.e30.sig",
        "ws://example.test/up/Bearer%20sekrit-bearer-123",
        "ws://example.test/up/Basic%20dXNlcjpodW50ZXIy",
        "ws://example.test/up/x-api-key:sekrit-apikey-456",
        "ws://example.test/up/Authorization:%20Bearer%20sekrit789",
    ],
)
def test_no_client_text_of_an_upstream_url_is_kept(url: str) -> None:
    """A client's path or query goes upstream in the URL: only the scheme and authority are a key, so no
    credential in either outlives its connection (found: the redacted shapes were kept whole)."""
    assert connected_to(url) == ("example.test", 443 if url.startswith("wss") else 80)
    assert list(server_addresses._connections) == [url[: url.index("/", url.index("//") + 2)]]
    assert not any("s3cr3t" in key or "sekrit" in key or "eyJ" in key for key in server_addresses._connections)


def test_an_upstream_url_with_userinfo_is_never_remembered() -> None:
    assert connected_to("ws://user:s3cr3t@example.test:9000/x") == ("example.test", 9000)
    assert not server_addresses._connections


@pytest.mark.parametrize(
    "host",
    [
        b"user:hunter2@x",
        b"x-api-key:sekrit-host-1",
        b"Bearer%20sekrit",
        b"eyJhbGciOiJIUzI1NiJ9.e30.sig",
        b"a b",
        b"gateway.test:\xb2",
    ],
)
def test_a_host_header_that_is_not_a_plain_host_is_never_remembered(host: bytes) -> None:
    """A ``Host`` a client filled with a credential is parsed afresh each time (refused handshakes' too)."""
    assert addressed_server(host, None, "ws") == server_addresses._addressed(host, "ws")
    assert not server_addresses._servers


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        (b"gateway.test:8443", "ws", ("gateway.test", 8443)),
        (b"gateway.test", "wss", ("gateway.test", 443)),
        (b"[::1]:8000", "ws", ("::1", 8000)),
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
    long_url = "ws://" + "a" * 2000 + ":9001/"
    assert connected_to(long_url) == ("a" * 2000, 9001)
    assert addressed_server(b"h" * 2000, None, "ws") == ("h" * 2000, 80)
    assert not server_addresses._connections and not server_addresses._servers
    connected_to("ws://127.0.0.1:9001/" + "a" * 2000)  # a long path: its authority is the key
    assert list(server_addresses._connections) == ["ws://127.0.0.1:9001"]


def test_only_plain_addresses_are_remembered() -> None:
    """A plain address is recorded as it is, and remembered; anything else is a client's text, escaped
    afresh each time (redaction's rules may change with the configuration)."""
    assert address_text("203.0.113.7") == "203.0.113.7" == address_text("203.0.113.7")
    assert address_text("host\nname") == address_text("host\nname") != "host\nname"
    assert list(values._plain_addresses) == ["203.0.113.7"]
