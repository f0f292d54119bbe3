"""A signed token whose header or payload holds a name twice in one object is a 401.

Python's JSON parser, as pyjwt uses it, keeps the last copy; gjson and jsonparser in Go, simdjson's
lookups and several other readers keep the first. ``{"sub": "admin", "sub": "alice"}`` was admitted as
``alice`` (claim checks, ``{jwt.sub}`` sent upstream) while an upstream that verifies the same token
with such a reader took it for ``admin`` (an attack pass, 2026-12-06: both orders admitted, in the
payload, in a nested claim and in the header). An issuer that writes JSON by hand signs one for a
user whose profile field carries ``", "sub": "admin``. RFC 7519 §4 lets a recipient refuse such a
token, and message policies already refuse such a message.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.jwt_claims import duplicate_name_problem
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.jwts import signing_key
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

KEY = signing_key("ES256")
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test", "audience": "chat"}


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _signed(header: str, payload: str) -> str:
    """A token over exactly these JSON texts, signed with KEY (pyjwt would write its own JSON)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    signing_input = f"{_segment(header)}.{_segment(payload)}"
    r, s = utils.decode_dss_signature(KEY.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"


def _claims(**extra: object) -> str:
    claims = {"iss": "https://issuer.test", "aud": "chat", "exp": int(time.time()) + 300, **extra}
    return json.dumps(claims)[1:-1]  # the members, to write around


HEADER = json.dumps({"alg": "ES256", "kid": KEY.kid, "typ": "JWT"})
DUPLICATES = {
    "payload, the checked copy last": (HEADER, '{"sub": "admin", ' + _claims(sub="alice") + "}"),
    "payload, the checked copy first": (HEADER, "{" + _claims(sub="alice") + ', "sub": "admin"}'),
    "a nested claim": (HEADER, "{" + _claims(sub="alice") + ', "realm": {"role": "admin", "role": "user"}}'),
    "the header": (
        '{"alg": "ES256", "typ": "JWT", "kid": "other", "kid": ' + json.dumps(KEY.kid) + "}",
        "{" + _claims() + "}",
    ),
}


def test_a_name_twice_in_any_object_is_a_problem() -> None:
    for header, payload in DUPLICATES.values():
        assert duplicate_name_problem(f"{_segment(header)}.{_segment(payload)}.x") is not None
    plain = f"{_segment(HEADER)}.{_segment('{' + _claims(sub='alice', Sub='x', realm={'sub': 1}) + '}')}.x"
    assert duplicate_name_problem(plain) is None  # names that differ in case, or in other objects


@pytest.mark.parametrize(("header", "payload"), list(DUPLICATES.values()), ids=list(DUPLICATES))
async def test_a_signed_token_with_a_name_twice_is_a_401(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, header: str, payload: str
) -> None:
    api = api_entry(
        upstream, policies=[{"validate-jwt": JWT}, {"set-header": {"header": "X-User", "value": "{jwt.sub}"}}]
    )
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            server.url("/ws/echo"), additional_headers={"Authorization": f"Bearer {_signed(header, payload)}"}
        )
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert not upstream.handshakes


async def test_the_same_token_without_the_copy_is_admitted(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    api = api_entry(
        upstream, policies=[{"validate-jwt": JWT}, {"set-header": {"header": "X-User", "value": "{jwt.sub}"}}]
    )
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    token = _signed(HEADER, "{" + _claims(sub="alice") + "}")
    async with await connect(server.url("/ws/echo"), additional_headers={"Authorization": f"Bearer {token}"}):
        pass
    assert upstream.handshakes[-1].header("x-user") == "alice"
