"""A client cannot make a trusted proxy's ``Forwarded`` entry name it: the header is parsed as RFC 7239.

With ``forwarded_header: forwarded`` the gateway found ``for=`` with a regular expression in which a
quoted string ran to the next ``"``. A client behind a trusted proxy sent ``Forwarded:
for="[203.0.113.9]`` (its quote left open); the proxy appended its own ``, for="[2001:db8::7]"``,
and the chain read ``'"[203.0.113.9], for="'``, an address to ``parse_ip`` (which read what was
inside ``[`` and ``]``, an IPv4 address too, and ignored the rest): the client was 203.0.113.9 and
passed an ``ip-filter`` allowing 203.0.113.0/24. Now each element is parsed (pairs by ``;``, values a
token or a quoted-string with escapes); the rest of a value after a syntax error is one ``unknown``
hop, and an address is only what RFC 7239 §6 writes (IPv6 in brackets, IPv4 never, ``:port`` after).
Real uvicorn as the gateway (the test's own connection is the trusted proxy 127.0.0.1), a real upstream.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import UNKNOWN_CLIENT, Networks, client_address, forwarded_chain, parse_ip
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

PROXY = Networks(["127.0.0.1"])

SMUGGLED = [
    'for="[203.0.113.9], for="[2001:db8::7]"',  # the client's unclosed quote, the proxy's quoted IPv6
    'for="[203.0.113.9], for="198.51.100.7:4711"',  # the proxy's quoted IPv4 with a port
    'by=x;for="[203.0.113.9]:80, for="[2001:db8::7]"',
]
"""What a trusted proxy forwards when a client's own ``Forwarded`` is malformed: the last entry is the proxy's."""


@pytest.mark.parametrize("forwarded", SMUGGLED)
async def test_a_clients_unclosed_quote_does_not_swallow_the_proxys_entry(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, forwarded: str
) -> None:
    """Before: 101, the client taken as 203.0.113.9 (3 of 3). Now the proxy's hop is unreadable: unknown, 403."""
    url = _gateway(uvicorn_server, upstream)
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"Forwarded": forwarded})
    assert refused.value.response.status_code == 403
    assert len(upstream.handshakes) == seen


@pytest.mark.parametrize("forwarded", ['for="[203.0.113.9]"', 'for="[203.0.113.9]:80"', "for=1.2.3.4;for=203.0.113.9",
                                       'for="203.0.113.9:80x"', 'for="203.0.113.9:"', "for = 203.0.113.9"])  # fmt: skip
async def test_a_for_that_is_not_an_rfc7239_node_names_no_client(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, forwarded: str
) -> None:
    """An IPv4 address in brackets, anything after the address but ``:port``, a second ``for``: unknown."""
    url = _gateway(uvicorn_server, upstream)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"Forwarded": forwarded})
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("forwarded", ["for=203.0.113.9", 'for="203.0.113.9:4711"', 'For="203.0.113.9";proto=https',
                                       'for=198.51.100.1, for=203.0.113.9;by="[2001:db8::1]:80"',
                                       'for="\\[2001:db8::7\\]", for="203.0.113.9:_p0rt"'])  # fmt: skip
async def test_a_well_formed_entry_of_the_proxy_still_names_the_client(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, forwarded: str
) -> None:
    url = _gateway(uvicorn_server, upstream)
    async with await connect(url, additional_headers={"Forwarded": forwarded}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> str:
    api = api_entry(upstream, policies=[{"ip-filter": {"allow": ["203.0.113.0/24"]}}])
    config = {"apis": [api], "trusted_proxies": ["127.0.0.1"], "forwarded_header": "forwarded"}
    return uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False).url("/ws/echo")


# --- the parser ----------------------------------------------------------------------------------

_TCHARS = "!#$%&'*+-.^_`|~abcxyzABCXYZ0123456789"
_tokens = st.text(_TCHARS, min_size=1, max_size=8)
_qdtext = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\x80\xff"), max_size=12)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_obfuscated = st.text("abcXYZ019._-", min_size=1, max_size=6)
_ports = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"), _obfuscated.map(lambda t: f":_{t}"))
_nodes = st.tuples(st.one_of(_ipv4, _ipv6), _ports).map("".join)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str, quote: bool) -> str:
    return _quoted(text) if quote or not text or any(c not in _TCHARS for c in text) else text


@st.composite
def _elements(draw: st.DrawFn) -> tuple[str, str | None]:
    """An element as written, and its ``for`` node (None: it has none)."""
    names = _tokens.filter(lambda t: t.lower() != "for")
    others = draw(st.lists(st.tuples(names, _qdtext), max_size=3, unique_by=lambda pair: pair[0].lower()))
    pairs = [f"{name}={_value(value, draw(st.booleans()))}" for name, value in others]
    node = draw(st.none() | _nodes)
    if node is not None:
        pairs.insert(
            draw(st.integers(0, len(pairs))), f"{draw(st.sampled_from(['for', 'For', 'FOR']))}={_quoted(node)}"
        )
    return ";".join(pairs), node


@given(st.lists(_elements(), min_size=1, max_size=5), st.sampled_from([",", ", ", " ,\t"]))
def test_every_well_formed_header_is_read_element_by_element(
    elements: list[tuple[str, str | None]], comma: str
) -> None:
    chain = forwarded_chain([comma.join(text for text, _ in elements)], "forwarded")
    assert len(chain) == len(elements)
    for hop, (_, node) in zip(chain, elements, strict=True):
        expected = _address(node) if node is not None else None
        assert parse_ip(hop) == expected


_hostile = st.text(st.sampled_from('"\\,;= \tfor[]:.0123456789abcdef_x'), max_size=40)


@given(_hostile, _nodes, st.sampled_from(["", ";proto=https", ';by="[2001:db8::1]:80"']), st.booleans())
def test_no_client_prefix_changes_what_the_proxys_entry_names(
    prefix: str, node: str, params: str, new_line: bool
) -> None:
    """Whatever the client wrote, the proxy's appended entry names its client, or the proxy names none."""
    entry = f"for={_quoted(node)}{params}"
    values = [prefix, entry] if new_line else [f"{prefix}, {entry}"]
    client = client_address("127.0.0.1", forwarded_chain(values, "forwarded"), PROXY)
    assert client in (str(_address(node)), UNKNOWN_CLIENT)
    if new_line:  # a line of its own is always read
        assert client == str(_address(node))


@given(_nodes, st.sampled_from('"\\,;=[]/@'), _hostile)
def test_an_address_with_anything_after_it_but_a_port_is_no_address(node: str, stray: str, tail: str) -> None:
    assert parse_ip(node) == _address(node)
    assert parse_ip(node + stray + tail) is None


def test_an_ipv4_address_is_never_bracketed_and_ipv6_with_a_port_always() -> None:
    assert parse_ip("[203.0.113.9]") is None
    assert parse_ip("[203.0.113.9]:80") is None
    assert parse_ip('"[203.0.113.9], for="') is None
    assert parse_ip("[2001:db8::7]:80") == ipaddress.ip_address("2001:db8::7")
    assert parse_ip("203.0.113.9:80") == ipaddress.ip_address("203.0.113.9")
    assert parse_ip("203.0.113.9:80:81") is None
    assert parse_ip("[2001:db8::7]:") is None


def _address(node: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    host = node[1 : node.index("]")] if node.startswith("[") else node.partition(":")[0]
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
