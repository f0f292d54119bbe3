"""A cookie a policy reads is every copy Python's cookie readers find too (aiohttp, http.cookies).

The gateway reads a Cookie header as Go, Node and Starlette do: split at ``;``. aiohttp's
``request.cookies`` (the most common Python WebSocket server) and ``http.cookies`` (Bottle, CherryPy)
end an unquoted value at whitespace, where another ``name=value`` starts, and the last of a name
wins: ``Cookie: jwt=VALID; theme=dark jwt=FORGED`` was admitted on ``VALID`` (``theme`` holding
``dark jwt=FORGED``) while an aiohttp upstream read ``jwt`` as ``FORGED`` (an attack pass against a
real ``run``: 5 of 5 spellings). They also unescape a quoted value: ``tenant="\\141cme"`` is
``acme`` to them, a new limit key to the gateway for every spelling; PHP and Node's ``cookie``
percent-decode a value (``ac%6De``): a limit key now reads a cookie as they do. The
upstream's reading is ``http.cookies``, applied to the Cookie header the upstream was sent;
``http.cookies`` stands for aiohttp here (aiohttp vendors its grammar, and reads every case below
the same).
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import FORGED, signing_key, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
       "audience": "chat", "token": [{"cookie": "jwt"}]}  # fmt: skip
HIDDEN = {
    "space": f"jwt={VALID}; theme=dark jwt={FORGED}",
    "tab": f"jwt={VALID}; theme=dark\tjwt={FORGED}",
    "comma": f"jwt={VALID}; theme=dark, jwt={FORGED}",
    "blanks-around-equals": f"jwt={VALID}; theme=dark jwt = {FORGED}",
    "after-a-quoted-semicolon": f'jwt={VALID}; a="x; y" jwt={FORGED}',
    "no-space-after-semicolon": f"jwt={VALID};theme=dark jwt={FORGED}",
}


def test_aiohttp_reads_the_forged_token_in_each_header() -> None:
    """What makes each case an attack: the upstream's parser takes the forged token."""
    for name, header in HIDDEN.items():
        assert _python_reads(header)["jwt"] == FORGED, name


@pytest.mark.parametrize("header", list(HIDDEN.values()), ids=list(HIDDEN))
async def test_a_token_cookie_hidden_after_whitespace_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, header: str
) -> None:
    """Before, each was admitted on the valid token and aiohttp read the forged one: 6 of 6."""
    server = _gateway(uvicorn_server, upstream, [{"validate-jwt": JWT}])
    await _refused(upstream, server.url("/ws/echo"), {"Cookie": header}, 400)


@pytest.mark.parametrize("spelling", ['"\\141cme"', '"ac\\me"', "acme x=1", '"acme" x=2'])
async def test_a_cookie_python_reads_otherwise_is_no_new_limit_key(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spelling: str
) -> None:
    """Python reads each as ``acme``: they were a fresh counter each, past a limit of one (4 of 4)."""
    assert _python_reads(f"tenant={spelling}")["tenant"] == "acme"
    limit = {"rate-limit-by-key": {"key": "{cookie.tenant}", "limit": 1, "window": 60}}
    server = _gateway(uvicorn_server, upstream, [limit])
    await _refused(upstream, server.url("/ws/echo"), {"Cookie": f"tenant={spelling}"}, 400)


@pytest.mark.parametrize(
    ("first", "again"),
    [("acme", "ac%6De"), ("acme", "%61cme"), ("ac%6De", "acm%65"), ("a+b", "a%20b"), ("a%2Bb", "a+b")],
)
async def test_a_cookie_php_or_node_reads_alike_is_one_limit_key(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, first: str, again: str
) -> None:
    """PHP's ``$_COOKIE`` and Node's ``cookie`` (Express) percent-decode a value (PHP reads ``+`` as a
    space too): ``ac%6De`` is ``acme`` to them, and was a fresh counter to the gateway, past a limit of
    one (the first three of 5). A key reads a cookie as they do: the second spelling is refused 429."""
    limit = {"rate-limit-by-key": {"key": "{cookie.tenant}", "limit": 1, "window": 60}}
    server = _gateway(uvicorn_server, upstream, [limit])
    async with await connect(server.url("/ws/echo"), additional_headers={"Cookie": f"tenant={first}"}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    await _refused(upstream, server.url("/ws/echo"), {"Cookie": f"tenant={again}"}, 429)


async def test_a_percent_encoded_cookie_is_read_and_forwarded_as_sent(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Express writes its session cookie percent-encoded (``connect.sid=s%3A...``): a template reads it
    as sent (no 400), and a key of it counts it as PHP and Node read it."""
    policies = [
        {"rate-limit-by-key": {"key": "{cookie.connect.sid}", "limit": 5, "window": 60}},
        {"set-header": {"header": "x-session", "value": "{cookie.connect.sid}"}},
    ]
    server = _gateway(uvicorn_server, upstream, policies)
    header = "connect.sid=s%3Aabc+def.Sig%2Fxyz"
    async with await connect(server.url("/ws/echo"), additional_headers={"Cookie": header}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert upstream.handshakes[-1].header("x-session") == "s%3Aabc+def.Sig%2Fxyz"
    assert upstream.handshakes[-1].header("cookie") == header


async def test_cookies_every_reader_reads_alike_are_admitted(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A quoted value with blanks, blanks around ``=``: one value to every reader."""
    policies = [{"validate-jwt": JWT}, {"set-header": {"header": "x-pref", "value": "{cookie.pref}"}}]
    server = _gateway(uvicorn_server, upstream, policies)
    header = f'theme=dark; pref="a b"; jwt = {VALID}'
    async with await connect(server.url("/ws/echo"), additional_headers={"Cookie": header}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    sent = upstream.handshakes[-1].header("cookie")
    assert sent == header
    assert upstream.handshakes[-1].header("x-pref") == "a b"
    assert _python_reads(sent)["jwt"] == VALID


def _python_reads(header: str) -> dict[str, str]:
    cookies: SimpleCookie = SimpleCookie()
    cookies.load(header)
    return {name: morsel.value for name, morsel in cookies.items()}


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any]) -> Any:
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=policies)]}))


async def _refused(upstream: UpstreamServer, url: str, headers: dict[str, str], status: int) -> None:
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=headers)
    assert refused.value.response.status_code == status
    assert len(upstream.handshakes) == seen  # never connected upstream
