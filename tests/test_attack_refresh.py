"""Attacks on ``credential-expiry``'s in-band refresh: refreshes that cost a signature check each
without limit, refresh messages the gateway did not recognise (and forwarded, token and all) while
the upstream reads them as refreshes, a refresh to another issuer's user of the same ``sub``, to another
client's token where neither has a ``sub``, and to another audience.
Real uvicorn (the relay and the frame relay) in front of a real ``websockets`` upstream whose echo
is what it received."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.jwts import HS_SECRET, token
from support.message_replies import answer_kind as _answer
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

ISSUERS = ["https://issuer.test", "https://tenant-b.test"]
JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat", "issuer": ISSUERS}}


def _serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, inbound: list[Any]) -> str:
    config = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")], "policies": [JWT],
              "message_policies": {"inbound": inbound}}  # fmt: skip
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [config]})).url("/ws/echo")


def _auth() -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token()}"}}


async def test_refresh_messages_are_limited_per_connection(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Each refresh is a signature check, and a refresh is consumed before a rate limit after it counts
    it: a connection may not make the gateway verify forged tokens as fast as it sends them."""
    rate = {"rate-limit-messages": {"messages": 5, "window": 60, "action": "drop"}}
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {"refresh_limit": 3}}, rate])
    forged = token()[:-4] + "AAAA"
    async with await connect(url, **_auth()) as ws:
        answers = []
        for _ in range(12):
            await ws.send(json.dumps({"type": "auth.refresh", "token": forged}))
            answers.append(_answer(await ws.recv()))
        assert answers == ["refresh_token_invalid"] * 3 + ["refresh_rate_limited"] * 9
        await ws.send("still open")
        assert await ws.recv() == "still open"


# A refresh to Python's json.loads, Node's JSON.parse or Go's encoding/json, each with a valid token,
# that the gateway took for an ordinary message and forwarded; an encoding sends it as a binary message.
HIDDEN_REFRESHES: dict[str, tuple[str, str | None, str]] = {
    "escaped type": ('{"type": "auth\\u002erefresh", "token": "{token}"}', None, "auth.refresh.ok"),
    "escaped name": ('{"\\u0074ype": "auth.refresh", "token": "{token}"}', None, "auth.refresh.ok"),
    "names in other cases": ('{"TYPE": "auth.refresh", "Token": "{token}"}', None, "auth.refresh.ok"),
    "binary": ('{"type": "auth.refresh", "token": "{token}"}', "utf-8", "auth.refresh.ok"),
    "binary with a BOM": ('{"type": "auth.refresh", "token": "{token}"}', "utf-8-sig", "auth.refresh.ok"),
    "binary in UTF-16": ('{"type": "auth.refresh", "token": "{token}"}', "utf-16", "auth.refresh.ok"),
    "binary after blanks": (" " * 100 + '{"type": "auth.refresh", "token": "{token}"}', "utf-8", "auth.refresh.ok"),
    "NaN beside it": ('{"type": "auth.refresh", "token": "{token}", "n": NaN}', None, "invalid_json"),
    "a lone surrogate": ('{"type": "auth.refresh", "token": "{token}", "s": "\\ud800"}', None, "invalid_json"),
}


@pytest.mark.parametrize("template, encoding, expected", HIDDEN_REFRESHES.values(), ids=HIDDEN_REFRESHES.keys())
async def test_a_refresh_any_reader_takes_is_never_forwarded(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, template: str, encoding: str | None, expected: str
) -> None:
    """The refresh's token must not reach the upstream, nor a refresh the gateway did not check."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    text = template.replace("{token}", token(ttl=600))
    async with await connect(url, **_auth()) as ws:
        await ws.send(text if encoding is None else text.encode(encoding))
        assert _answer(await ws.recv()) == expected
        await ws.send("next")
        assert await ws.recv() == "next"


async def test_a_refresh_to_another_issuers_subject_is_refused(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """``sub`` is unique within its issuer only: tenant B's "alice" is not tenant A's."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    async with await connect(url, **_auth()) as ws:
        await ws.send(json.dumps({"type": "auth.refresh", "token": token(iss=ISSUERS[1])}))
        assert _answer(await ws.recv()) == "refresh_other_subject"
        await ws.send(json.dumps({"type": "auth.refresh", "token": token(iss=ISSUERS[0])}))
        assert _answer(await ws.recv()) == "auth.refresh.ok"


def _refresh(new_token: str) -> str:
    return json.dumps({"type": "auth.refresh", "token": new_token})


# The claim a client-credentials token names its client by, in place of a sub (OIDC, RFC 9068, Entra v1).
CLIENT_CLAIMS = ("azp", "client_id", "appid")


def _client_token(claim: str, client: str, ttl: float = 300) -> str:
    """A client-credentials token: no ``sub``, the client named in ``claim``."""
    claims: dict[str, Any] = {"sub": None, claim: client}
    return token(ttl=ttl, **claims)


@pytest.mark.parametrize("claim", CLIENT_CLAIMS)
async def test_a_sub_less_connection_refreshes_to_its_own_client_only(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, claim: str
) -> None:
    """Two client-credentials tokens without ``sub`` are two principals: client A's connection may not
    take client B's token (its claims and expiry), and still takes A's own new one."""
    stamp = {"transform-message": {"set": {"client": f"{{jwt.{claim}}}"}}}
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}, stamp])
    admitted = _client_token(claim, "client-a")
    async with await connect(url, additional_headers={"Authorization": f"Bearer {admitted}"}) as ws:
        await ws.send(_refresh(_client_token(claim, "client-b", ttl=3600)))
        assert _answer(await ws.recv()) == "refresh_other_subject"
        await ws.send("{}")
        assert json.loads(await ws.recv()) == {"client": "client-a"}  # still A's claims
        await ws.send(_refresh(_client_token(claim, "client-a", ttl=600)))
        assert _answer(await ws.recv()) == "auth.refresh.ok"


async def test_a_refresh_may_not_name_its_client_by_another_claim(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """A token whose ``sub`` is A's client id is a user's token, not client A's; nor is one naming the
    client A's id in another claim while its first identifying claim names someone else."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    admitted = token(sub=None, azp="client-a")
    async with await connect(url, additional_headers={"Authorization": f"Bearer {admitted}"}) as ws:
        for other in (token(sub="client-a"), token(sub=None, client_id="client-a")):
            await ws.send(_refresh(other))
            assert _answer(await ws.recv()) == "refresh_other_subject"


async def test_a_token_naming_no_principal_cannot_refresh_or_be_refreshed(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Without sub, azp, client_id or appid two tokens cannot be told to be one principal's."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    anonymous = {"additional_headers": {"Authorization": f"Bearer {token(sub=None)}"}}
    async with await connect(url, **anonymous) as ws:
        for other in (token(sub=None, ttl=600), token(sub=""), token()):
            await ws.send(_refresh(other))
            assert _answer(await ws.recv()) == "refresh_without_subject"
    async with await connect(url, **_auth()) as ws:
        await ws.send(_refresh(token(sub=None, ttl=600)))
        assert _answer(await ws.recv()) == "refresh_without_subject"
        await ws.send(_refresh(token(ttl=600)))
        assert _answer(await ws.recv()) == "auth.refresh.ok"


async def test_a_refresh_to_another_audience_is_refused(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """The new token is validated as a handshake's: one for another audience of the issuer is refused."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    async with await connect(url, **_auth()) as ws:
        for aud in ("billing", ["billing"], None):
            await ws.send(_refresh(token(aud=aud, ttl=600)))
            assert _answer(await ws.recv()) == "refresh_token_invalid"
        await ws.send(_refresh(token(ttl=600)))
        assert _answer(await ws.recv()) == "auth.refresh.ok"
