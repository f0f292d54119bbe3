"""A cookie a policy reads is every spelling of its name that some server reads as it, in every Cookie header.

Before, the gateway looked cookie names up exactly, parsed with ``http.cookies``. With
``Cookie: JWT=FORGED; jwt=VALID`` it checked the valid token and passed the jar on whole: ASP.NET
Core reads cookie names ignoring case and PHP percent-decodes them (``%6Awt`` is ``jwt``), and both
take the first, the forged one. A second Cookie header did the same. A value with a quote
(``x="a; jwt=FORGED"``) hid the cookie after it from the gateway while Starlette, Go and Node split
the header at every ``;`` and find it. Now the jar is read as those servers read it and names are
compared folded (``param_names.fold_name``): a token under two spellings with different values
is a 400, ``{cookie.*}`` copies that differ are a 400. The end-to-end tests run a real uvicorn
gateway and an upstream that records the headers it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.handshake.request_view import AmbiguousValue
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import FORGED, signing_key, token
from support.policies import context
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
       "audience": "chat", "token": [{"cookie": "jwt"}]}  # fmt: skip
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite


@pytest.mark.parametrize(
    "cookies",
    [
        [f"JWT={FORGED}; jwt={VALID}"],
        [f"%6Awt={FORGED}; jwt={VALID}"],
        [f"jwt={VALID}", f"Jwt={FORGED}"],
        [f'jwt={VALID}; x="a; jwt={FORGED}"'],
        [f"jwt={VALID}; jwt[]={FORGED}"],
    ],
    ids=["case", "percent-encoded", "second-cookie-header", "behind-a-quote", "php-array"],
)
async def test_a_forged_token_cookie_under_another_spelling_is_a_400_before_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, cookies: list[str]
) -> None:
    server = _gateway(uvicorn_server, upstream)
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/ws/echo"), additional_headers=[("Cookie", cookie) for cookie in cookies])
    assert refused.value.response.status_code == 400
    assert len(upstream.handshakes) == seen  # never connected upstream


async def test_the_same_token_under_two_spellings_is_one_token(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = _gateway(uvicorn_server, upstream)
    jar = f"JWT={VALID}; theme=dark; jwt={VALID}"
    async with await connect(server.url("/ws/echo"), additional_headers={"Cookie": jar}) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert upstream.handshakes[-1].header("cookie") == jar


async def test_a_templated_cookie_under_two_spellings_with_different_values_is_ambiguous() -> None:
    ctx = context(headers=[("Cookie", "session=S"), ("Cookie", "SESSION=junk")])
    with pytest.raises(AmbiguousValue):
        ctx.lookup("cookie", ("session",))
    assert context(headers=[("Cookie", 'session="S"; Session=S')]).lookup("cookie", ("session",)) == "S"


def test_the_jar_is_read_as_servers_split_it() -> None:
    request = context(headers=[("Cookie", 'a=1; b="2"; c; =4; d = 5 ;e=x=y')]).request
    assert request.cookie_values == {"a": ["1"], "b": ["2"], "d": ["5"], "e": ["x=y"]}


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> Any:
    api = api_entry(upstream, policies=[{"validate-jwt": JWT}])
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
