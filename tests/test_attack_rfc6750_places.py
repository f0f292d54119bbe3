"""validate-jwt reads RFC 6750's places for a bearer token even when its ``token:`` list names others.

An upstream following RFC 6750 (a framework's default JWT middleware, SignalR's ``access_token``)
reads ``Authorization: Bearer`` (§2.1) and the ``access_token`` query parameter (§2.3) whatever the
gateway reads. With ``token: [{query: access_token}]`` (what browsers need) the gateway checked the
query token and forwarded ``Authorization: Bearer FORGED`` untouched; with the default
``Authorization`` source, ``?access_token=FORGED`` reached the upstream beside the checked header.
An attack pass against a real ``run``: 3 of 3 placements were admitted with the forged token
reaching the upstream. Now a token found where the policy looks must be the only credential in
those places too (else 400 ``token_ambiguous``); they never admit a request on their own. The
end-to-end tests run a real uvicorn and an upstream that records what it was sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import FORGED, signing_key, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite

# Where the policy reads its token, and how the client presents the valid one there.
READS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "query": ({"query": "access_token"}, {"query": f"access_token={VALID}"}),
    "cookie": ({"cookie": "jwt"}, {"headers": {"Cookie": f"jwt={VALID}"}}),
    "subprotocol": ({"subprotocol": "bearer."}, {"subprotocols": [f"bearer.{VALID}"]}),
    "other-header": ({"header": "X-Access-Token"}, {"headers": {"X-Access-Token": VALID}}),
    "authorization": ({"header": "Authorization"}, {"headers": {"Authorization": f"Bearer {VALID}"}}),
}
# A credential in an RFC 6750 place the policy does not read (each only where the policy does not read it).
FORGERIES: dict[str, dict[str, Any]] = {
    "bearer": {"headers": {"Authorization": f"Bearer {FORGED}"}},
    "bearer-lower": {"headers": {"Authorization": f"bearer  {FORGED}"}},
    "bearer-tab": {"headers": {"Authorization": f"Bearer\t{FORGED}"}},
    "basic": {"headers": {"Authorization": f"Basic {FORGED}"}},
    "no-scheme": {"headers": {"Authorization": FORGED}},
    "access_token": {"query": f"access_token={FORGED}"},
    "ACCESS_TOKEN": {"query": f"ACCESS_TOKEN={FORGED}"},
    "access.token": {"query": f"access.token={FORGED}"},
}


def _unread(read: str, forgery: str) -> bool:
    """Whether the forgery sits where the policy reading ``read`` does not look (every spelling against
    the query and the header readers, one of each place against the others)."""
    in_query = "access" in forgery.lower()
    if read in ("cookie", "subprotocol", "other-header"):
        return forgery in ("bearer", "access_token")
    return not (in_query and read == "query") and not (not in_query and read == "authorization")


CASES = [(read, forgery) for read in READS for forgery in FORGERIES if _unread(read, forgery)]


@pytest.mark.parametrize(("read", "forgery"), CASES, ids=[f"{r}-{f}" for r, f in CASES])
async def test_a_credential_in_an_rfc6750_place_the_policy_does_not_read_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, read: str, forgery: str
) -> None:
    """Before, each was admitted on the valid token and the upstream was sent the forged one: 14 of 14."""
    source, valid = READS[read]
    server = _gateway(uvicorn_server, upstream, source)
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await _connect(server.url("/ws/echo"), valid, FORGERIES[forgery])
    assert refused.value.response.status_code == 400
    assert len(upstream.handshakes) == seen  # never connected upstream


@pytest.mark.parametrize("read", ["query", "cookie", "subprotocol", "other-header"])
async def test_the_same_token_in_an_rfc6750_place_is_one_token_and_leaves_the_query(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, read: str
) -> None:
    source, valid = READS[read]
    server = _gateway(uvicorn_server, upstream, source)
    also: dict[str, Any] = {"headers": {"Authorization": f"Bearer {VALID}"}}
    if read != "query":
        also["query"] = f"Access_Token={VALID}&room=1"
    async with await _connect(server.url("/ws/echo"), valid, also) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    handshake = upstream.handshakes[-1]
    assert handshake.header("authorization") == f"Bearer {VALID}"
    assert [name for name, _ in parse_qsl(urlsplit(handshake.path).query)] in ([], ["room"])


@pytest.mark.parametrize("forgery", ["bearer", "access_token"])
async def test_a_token_in_an_rfc6750_place_the_policy_does_not_read_admits_nothing(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, forgery: str
) -> None:
    """Read only to be compared: without a token where the policy looks, the request is 401 as before."""
    server = _gateway(uvicorn_server, upstream, {"subprotocol": "bearer."})
    valid: dict[str, Any] = {"headers": {"Authorization": f"Bearer {VALID}"}}
    if forgery == "access_token":
        valid = {"query": f"access_token={VALID}"}
    with pytest.raises(InvalidStatus) as refused:
        await _connect(server.url("/ws/echo"), valid, {})
    assert refused.value.response.status_code == 401


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, source: dict[str, str]) -> Any:
    settings = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
                "audience": "chat", "token": [source]}  # fmt: skip
    api = api_entry(upstream, policies=[{"validate-jwt": settings}])
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))


async def _connect(url: str, *parts: dict[str, Any]) -> Any:
    headers: dict[str, str] = {}
    query: list[str] = []
    subprotocols: list[Subprotocol] = []
    for part in parts:
        headers.update(part.get("headers", {}))
        query += [part["query"]] if "query" in part else []
        subprotocols += [Subprotocol(p) for p in part.get("subprotocols", [])]
    target = url + ("?" + "&".join(query) if query else "")
    kw: dict[str, Any] = {"additional_headers": headers}
    if subprotocols:
        kw["subprotocols"] = subprotocols
    return await connect(target, **kw)
