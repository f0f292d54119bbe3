"""A credential or a set parameter in the query is every spelling of its name that some server reads as it.

Before, the gateway looked query names up exactly. ``?access_token=VALID&ACCESS_TOKEN=FORGED`` was
admitted on the valid token; the gateway removed ``access_token`` and the upstream got
``ACCESS_TOKEN=FORGED``, which ASP.NET Core reads as ``access_token`` (names compared ignoring
case). PHP reads ``access.token`` and `` access_token`` as ``access_token``: the same. A subscription
key came through the same way (``Subscription-Key=`` beside the checked ``subscription-key=``), two
keys in the query were admitted on the first, and ``set-query-parameter tenant`` sent the client's
``Tenant=evil`` on beside its own ``tenant=acme``. Now names are compared folded
(``param_names.fold_name``): two different tokens or keys under any spellings are a 400, and
removal and override take every spelling out of the upstream URL. The end-to-end tests run a real
uvicorn gateway and an upstream that records the request target it was sent.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.apis import ApiConfig, UpstreamConfig
from asgi_ws_gateway.param_names import fold_cookie_name, fold_name
from asgi_ws_gateway.policies import hash_key
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import FORGED, signing_key, token
from support.policies import API, context
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
       "audience": "chat", "token": [{"query": "access_token"}]}  # fmt: skip
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite
SPELLINGS = ["ACCESS_TOKEN", "Access_Token", "%61ccess_token", "access.token", "access+token", "+access_token",
             "access_token[]", "access_token%5B%5D", "access_token[x]", "Access.Token[a][b]", "access_token%00",
             "access_token%00x", "Access.Token%00%5B", "[access_token]", "access_token]", "%5D%5Daccess_token",
             "[access_token", "%u0061ccess_token", "%u0041CCESS_TOKEN"]  # fmt: skip
"""``access_token[]`` and ``access_token[x]``: PHP's ``$_GET['access_token']`` is then an array of the
value (the last such parameter wins), Rack's ``params['access_token']`` too. ``access_token%00``: PHP
reads a name as a C string, to its first NUL (an attack pass found it admitted beside a valid token).
``[access_token]``, ``access_token]``, ``]]access_token``: Rack 2 (Rails before 7.1) reads the name past the
brackets around it. ``%u0061ccess_token``: .NET Framework's ``HttpUtility.UrlDecode`` and IIS decode
``%uXXXX``, which the standard decoding leaves as it is."""


def test_every_spelling_a_server_reads_as_the_name_folds_to_it() -> None:
    for spelling in [*SPELLINGS, "access[token", "ACCESS_TOKEN ", "acce\u017fs_token", "?access_token"]:
        name = parse_qsl(f"{spelling}=x")[0][0]  # as the query is read: percent-decoded once
        assert fold_name(name) == "access_token", spelling
        assert fold_cookie_name(spelling) == "access_token", spelling  # PHP decodes cookie names
    assert fold_name("access_token2") != "access_token"
    assert fold_name("access[token") == fold_name("access_token") != fold_name("access[token]")  # no ']': '_'
    assert fold_name("[]") == ""  # no name


def test_a_query_name_is_percent_decoded_once() -> None:
    """``%2561ccess_token`` is ``%61ccess_token`` to every server; the gateway decoded it twice."""
    assert fold_name(parse_qsl("%2561ccess_token=x")[0][0]) == "%61ccess_token"
    assert fold_cookie_name("%61ccess_token") == "access_token"


async def test_a_name_encoded_twice_is_not_the_token_and_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``?access_token=VALID&%2561ccess_token=x`` was a 400 token_ambiguous (the name folded to
    ``access_token``), and with the valid token the parameter was removed from the upstream URL."""
    server = _gateway(uvicorn_server, upstream, [{"validate-jwt": JWT}])
    query = await _admitted(upstream, server.url(f"/ws/echo?access_token={VALID}&%2561ccess_token=x&room=1"))
    assert query == [("%61ccess_token", "x"), ("room", "1")]


async def test_removing_a_query_parameter_removes_every_spelling() -> None:
    ctx = context(query="room=1&" + "&".join(f"{s}=x" for s in SPELLINGS))
    ctx.upstream.remove_query("access_token")
    ctx.upstream.set_query("tenant", "acme")
    url = ctx.build_request(API, API.upstreams[0]).url
    assert parse_qsl(urlsplit(url).query) == [("v", "1"), ("room", "1"), ("tenant", "acme")]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_forged_token_under_another_spelling_is_a_400_before_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spelling: str
) -> None:
    server = _gateway(uvicorn_server, upstream, [{"validate-jwt": JWT}])
    await _refused(upstream, server.url(f"/ws/echo?access_token={VALID}&{spelling}={FORGED}"), 400)


async def test_the_same_token_under_two_spellings_is_one_and_neither_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = _gateway(uvicorn_server, upstream, [{"validate-jwt": JWT}])
    query = await _admitted(upstream, server.url(f"/ws/echo?access_token={VALID}&room=1&ACCESS_TOKEN={VALID}"))
    assert query == [("room", "1")]


async def test_two_subscription_keys_are_a_400_and_no_spelling_of_one_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    subscriptions = [{"id": "alice", "product": "gold", "key_sha256": hash_key("alice-key")},
                     {"id": "mallory", "product": "gold", "key_sha256": hash_key("mallory-key")}]  # fmt: skip
    server = _gateway(uvicorn_server, upstream, [], products=[{"name": "gold", "apis": ["echo"]}],
                      subscriptions=subscriptions)  # fmt: skip
    for second in ("subscription-key=mallory-key", "Subscription-Key=other", "+subscription-key=other"):
        await _refused(upstream, server.url(f"/ws/echo?subscription-key=alice-key&{second}"), 400)
    await _refused(upstream, server.url("/ws/echo?subscription-key=alice-key&x=1"), 400,
                   headers={"X-Subscription-Key": "mallory-key"})  # fmt: skip
    query = await _admitted(upstream, server.url("/ws/echo?SUBSCRIPTION-KEY=alice-key&subscription-key=alice-key"))
    assert query == []


@pytest.mark.parametrize("spelling", ["Tenant", "TENANT", "%74enant", "tenant"])
async def test_a_set_query_parameter_overrides_every_spelling_the_client_sent(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spelling: str
) -> None:
    policies = [{"set-query-parameter": {"parameter": "tenant", "value": "acme"}},
                {"set-query-parameter": {"parameter": "debug", "exists_action": "delete"}}]  # fmt: skip
    server = _gateway(uvicorn_server, upstream, policies)
    query = await _admitted(upstream, server.url(f"/ws/echo?{spelling}=evil&DEBUG=1&+debug=1&room=1"))
    assert query == [("room", "1"), ("tenant", "acme")]


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any], **top: Any) -> Any:
    config = {"apis": [api_entry(upstream, policies=policies)], **top}
    return uvicorn_server(WebSocketGateway(not_found, config=config))


async def _admitted(upstream: UpstreamServer, url: str, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The query parameters the upstream was sent when the gateway admitted the handshake."""
    async with await connect(url, additional_headers=headers or {}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    return parse_qsl(urlsplit(upstream.handshakes[-1].path).query)


async def _refused(upstream: UpstreamServer, url: str, status: int, headers: dict[str, str] | None = None) -> None:
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers or {})
    assert refused.value.response.status_code == status
    assert len(upstream.handshakes) == seen  # never connected upstream


async def test_a_token_or_key_after_a_second_question_mark_is_a_copy_of_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """``/ws/echo??access_token=FORGED`` has the query ``?access_token=FORGED``: a parameter
    ``?access_token`` to the gateway, so beside a checked ``Authorization`` token it was admitted and sent
    upstream as is, where Node's ``new URLSearchParams(url.parse(req.url).query)`` (a common
    idiom) drops the leading ``?`` and reads ``access_token=FORGED``, an unchecked token. A
    subscription key came through the same way, beside the one checked in its header."""
    jwt = {**JWT, "token": [{"header": "Authorization"}, {"query": "access_token"}]}
    subscriptions = [{"id": "alice", "product": "gold", "key_sha256": hash_key("alice-key")}]
    server = _gateway(uvicorn_server, upstream, [{"validate-jwt": jwt}], products=[{"name": "gold", "apis": ["echo"]}],
                      subscriptions=subscriptions)  # fmt: skip
    keyed = {"X-Subscription-Key": "alice-key"}
    await _refused(upstream, server.url(f"/ws/echo??access_token={FORGED}"), 400,
                   headers={**keyed, "Authorization": f"Bearer {VALID}"})  # fmt: skip
    await _refused(upstream, server.url(f"/ws/echo??subscription-key=other&access_token={VALID}"), 400, headers=keyed)
    assert await _admitted(upstream, server.url(f"/ws/echo??access_token={VALID}&room=1"), keyed) == [("room", "1")]


PLAIN = ApiConfig(name="chat", path="/ws/{room}", upstreams=[UpstreamConfig(url="ws://up:9000/rooms/{room}")])
"""An upstream URL without a query of its own: the client's query starts the upstream's, as sent."""
_SENT_NAMES = st.sampled_from([
    "access_token", "?access_token", "??access_token", "%3Faccess_token", "ACCESS_TOKEN", "access.token",
    " access_token", "access_token[]", "room", "?room", "&access_token", "[access_token]", "access_token]",
    "%5Daccess_token", "access_token]x", "[room]",
])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(_SENT_NAMES, min_size=1, max_size=4))
def test_no_reader_finds_a_token_copy_the_gateway_did_not_count(question: bool, names: list[str]) -> None:
    """The differential property: the query the upstream is sent holds no ``access_token`` that a
    server's reader finds, unless the gateway counted it (then it was checked, and taken out). The
    readers: ``parse_qsl`` with the lenient servers' name folding (PHP, ASP.NET), Node's
    ``URLSearchParams`` given the query string (one leading ``?`` dropped, names compared exactly), and
    Rack 2's ``normalize_params`` (the name past the brackets around it: ``[access_token]``)."""
    query = ("?" if question else "") + "&".join(f"{name}=v{i}" for i, name in enumerate(names))
    ctx = context(query=query, params={"room": "lobby"})
    if ctx.request.query_copies("access_token"):  # what validate-jwt does with the copies it found
        ctx.upstream.remove_query("access_token")
    sent = urlsplit(ctx.build_request(PLAIN, PLAIN.upstreams[0]).url).query
    lenient = [value for name, value in parse_qsl(sent, keep_blank_values=True) if fold_name(name) == "access_token"]
    node = [
        value for name, value in parse_qsl(sent.removeprefix("?"), keep_blank_values=True) if name == "access_token"
    ]
    rack = [value for name, value in parse_qsl(sent, keep_blank_values=True) if _rack2_key(name) == "access_token"]
    assert (lenient, node, rack) == ([], [], []), (query, sent)


def _rack2_key(name: str) -> str:
    """The key Rack 2's ``normalize_params`` files a parameter under: ``name =~ %r(\\A[\\[\\]]*([^\\[\\]]+)\\]*)``."""
    match = re.match(r"[\[\]]*([^\[\]]+)", name)
    return match.group(1) if match else ""


async def test_a_semicolon_in_the_query_reaches_the_upstream_encoded(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Rack 2, Perl's CGI and Python's ``parse_qs`` before 3.9.2 also split the query at ``;``: to
    them ``?tenant=acme&x=1;tenant=evil`` has a second ``tenant``, which the gateway (that splits at
    ``&`` only) reads as part of ``x``. The upstream is sent that ``;`` encoded, so it reads ``x`` so
    too, and the tenant the policy read is the only one."""
    policies = [{"set-header": {"header": "x-tenant", "value": "{query.tenant}"}}]
    server = _gateway(uvicorn_server, upstream, policies)
    await _admitted(upstream, server.url("/ws/echo?tenant=acme&x=1;tenant=evil"))
    handshake = upstream.handshakes[-1]
    assert urlsplit(handshake.path).query == "tenant=acme&x=1%3Btenant=evil"
    assert handshake.header("x-tenant") == "acme"
    split_at_both = [part.partition("=") for part in re.split("[&;]", urlsplit(handshake.path).query)]
    assert [value for name, _, value in split_at_both if name == "tenant"] == ["acme"]


@pytest.mark.parametrize("spelling", ["tenant[]", "tenant[x]", "Tenant%5B0%5D"])
async def test_a_templated_parameter_beside_its_php_array_spelling_is_ambiguous(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spelling: str
) -> None:
    """PHP reads ``?tenant=acme&tenant[]=evil`` as ``$_GET['tenant'] == ['evil']``: the key a limit
    or a header took from ``{query.tenant}`` was ``acme``."""
    policies = [{"set-header": {"header": "x-tenant", "value": "{query.tenant}"}}]
    server = _gateway(uvicorn_server, upstream, policies)
    await _refused(upstream, server.url(f"/ws/echo?tenant=acme&{spelling}=evil"), 400)


async def test_a_configured_name_with_its_own_array_key_leaves_the_other_keys() -> None:
    """JSON:API's page[size] and page[number] are two parameters: a set-query-parameter or rewrite-uri
    of one took the client's other away (both folded to 'page'); array spellings of a plain name go."""
    ctx = context(query="page[number]=3&PAGE[size]=9&filter[status]=open&sort=x&tenant[]=evil")
    ctx.upstream.set_query("page[size]", "50")
    ctx.upstream.set_query("tenant", "acme")
    url = ctx.build_request(API, API.upstreams[0]).url
    assert parse_qsl(urlsplit(url).query) == [
        ("v", "1"), ("page[number]", "3"), ("filter[status]", "open"), ("sort", "x"), ("page[size]", "50"),
        ("tenant", "acme"),
    ]  # fmt: skip
    ctx = context(query="filter[status]=open&filter[type]=cd")
    ctx.upstream.rewrite("/v2/items?filter[type]=book")
    url = ctx.build_request(API, API.upstreams[0]).url
    assert parse_qsl(urlsplit(url).query) == [("filter[type]", "book"), ("v", "1"), ("filter[status]", "open")]
    ctx = context(query="page[size]=9&page[number]=3")
    assert (ctx.request.query_copies("page[size]"), ctx.request.query_copies("PAGE[Size]")) == (["9"], ["9"])


def test_a_configured_name_with_its_own_array_key_counts_rack_2_s_spellings_of_it() -> None:
    """Rack 2 (Rails before 7.1) reads each run between brackets as a key, whatever brackets part them:
    ``page]size`` and ``[page][size]`` are its ``params[:page][:size]``. They were other names to the gateway:
    not counted as copies of ``page[size]``, and left in the upstream query beside the one it set."""
    ctx = context(query="page]size=9&[page][size]=8&page[size=7&page[number]=3")
    assert ctx.request.query_copies("page[size]") == ["9", "8", "7"]
    ctx.upstream.set_query("page[size]", "50")
    url = ctx.build_request(API, API.upstreams[0]).url
    assert parse_qsl(urlsplit(url).query) == [("v", "1"), ("page[number]", "3"), ("page[size]", "50")]


def test_a_configured_name_with_its_own_array_key_counts_php_s_spellings_of_it() -> None:
    """PHP drops what follows a key's ``]`` unless another ``[`` opens: ``page[size]x`` and ``page[size]]`` are
    its ``$_GET['page']['size']``. Before, they were other names (Rack 2's ``page[size][x]``): not counted
    as copies of ``page[size]``, and left in the upstream query beside the one the gateway set."""
    page_size = fold_name("page[size]", arrays=False)
    for sent in ("page[size]x", "page[size]]", "PAGE[size]x[y]", "page[size]]x"):
        assert fold_name(sent, arrays=False) == page_size, sent
    assert fold_name("page[size][x]", arrays=False) != page_size  # a key under it, to PHP and Rack alike
    ctx = context(query="page[size]x=9&page[size]]=8&page[number]=3")
    assert ctx.request.query_copies("page[size]") == ["9", "8"]
    ctx.upstream.set_query("page[size]", "50")
    url = ctx.build_request(API, API.upstreams[0]).url
    assert parse_qsl(urlsplit(url).query) == [("v", "1"), ("page[number]", "3"), ("page[size]", "50")]
