"""A client's credential in a URL does not outlive its connection in Python's URL cache.

``urllib.parse.urlsplit`` keeps the last 128 URLs it split (an ``lru_cache`` since Python 3.11), and
the gateway split every upstream URL, query and all: a ``?access_token=...`` stayed in the worker's
memory after its connection closed, until 128 other URLs pushed it out — in the gateway's checks, the
splice's connect, the relay's connect (websockets' ``parse_uri``), the URL edits and the redaction.
So did a token in the path (``/ws/rooms/eyJ...``, ``token=`` in a path parameter). Now a URL that may
carry a credential is split afresh (``bounded.split_url``). Real uvicorn in each mode, a real
upstream; the cache is read through the garbage collector's view of it.
"""

from __future__ import annotations

import gc
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.uri import parse_uri

from asgi_ws_gateway import bounded
from asgi_ws_gateway.bounded import may_carry_credential, split_url
from asgi_ws_gateway.handshake.upstream_edits import _edited_url
from asgi_ws_gateway.redact import redact_url
from asgi_ws_gateway.upstream.websockets_client import _NoRedirects
from support.clients import connect
from support.gateway import GatewayMode, Stack, serve
from support.upstream import UpstreamServer


def _cached_urls() -> list[str]:
    """The URLs ``urlsplit``'s cache holds: its key lists start with the URL."""
    caches = [o for o in gc.get_referents(urlsplit) if isinstance(o, dict)]
    assert caches, "urlsplit's cache is not where this test looks for it"
    return [key[0] for cache in caches for key in cache if isinstance(key[0], str)]


@pytest.fixture
def stack(gateway_mode: GatewayMode, upstream: UpstreamServer) -> Iterator[Stack]:
    with serve(upstream, gateway_mode) as running:
        yield running


PLACES = [
    "/ws/echo?access_token={}&room=1",
    "/ws/headers/token={}",
    "/ws/headers/eyJ{}",
    "/ws/headers/Bearer%20{}",
    "/ws/headers/x-api-key%3A{}",
    "/ws/headers/x-api-key:{}",
]


@pytest.mark.parametrize(
    "place", PLACES, ids=["query", "named-in-path", "jwt-in-path", "bearer", "escaped-colon", "header-in-path"]
)
async def test_a_clients_credential_is_not_kept_after_the_upstream_got_it(stack: Stack, place: str) -> None:
    secret = secrets.token_hex(12)
    url = stack.url(place.format(secret))
    async with await connect(url):  # the test's own client splits its URL: that one is allowed
        pass
    assert secret in stack.upstream.handshakes[-1].path  # the upstream got the query as sent
    # The gateway splits absolute upstream URLs; the test's upstream splits the path it was sent.
    assert [kept for kept in _cached_urls() if secret in kept and not kept.startswith("/")] == [url]


def test_the_url_edits_and_the_redaction_keep_no_query() -> None:
    secret = secrets.token_hex(12)
    edited = _edited_url(f"ws://127.0.0.1:1/a?key={secret}", [("query", "tenant", "acme", "override")], False)
    assert secret in edited
    assert "REDACTED" in redact_url(f"wss://u:p@example.com/a?token={secret}")
    assert not [kept for kept in _cached_urls() if secret in kept]


urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}{path}{query}",
    st.sampled_from(["ws", "wss", ""]),
    st.from_regex(r"[a-z0-9.\[\]:@]{0,20}", fullmatch=True),
    st.from_regex(r"(/(eyJ)?[A-Za-z0-9%._~=-]{0,8}){0,3}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"\?[A-Za-z0-9%=&;?/#+]{0,20}", fullmatch=True)),
)


@given(urls)
def test_split_url_is_urlsplit(url: str) -> None:
    def split(how: Any) -> object:
        try:
            return how(url)
        except ValueError as exc:
            return type(exc)

    assert split(split_url) == split(urlsplit)


@given(urls)
def test_the_relay_connects_to_what_websockets_would_parse(url: str) -> None:
    """The query taken off before websockets parses the URL and put back after: the same request."""
    try:
        expected: object = parse_uri(url)
    except Exception as exc:  # the same refusal either way
        expected = type(exc)
    try:
        got: object = _NoRedirects(url).ws_uri
    except Exception as exc:  # the same refusal either way
        got = type(exc)
    assert got == expected


@given(st.lists(st.one_of(urls, st.text(max_size=30)), max_size=8))
def test_urls_found_plain_are_remembered_and_only_those(found: list[str]) -> None:
    """``may_carry_credential`` remembers the URLs it found without a credential's shape (asked twice a
    handshake of a URL that repeats): asked again, each gets the search's answer, and no URL the search
    finds a credential's shape in is kept."""
    for url in found + found:
        assert may_carry_credential(url) is (bounded._CREDENTIAL_SHAPE(url) is not None)
    assert not any(bounded._CREDENTIAL_SHAPE(url) for url in bounded._PLAIN_URLS)
    assert len(bounded._PLAIN_URLS) <= bounded._PLAIN_URLS_LIMIT


def test_the_plain_urls_kept_are_bounded() -> None:
    for port in range(2 * bounded._PLAIN_URLS_LIMIT):
        assert not may_carry_credential(f"ws://127.0.0.1:{port}/")
    assert 0 < len(bounded._PLAIN_URLS) <= bounded._PLAIN_URLS_LIMIT
    long = "ws://h/" + "a" * bounded._PLAIN_URL_LENGTH
    assert not may_carry_credential(long) and long not in bounded._PLAIN_URLS
