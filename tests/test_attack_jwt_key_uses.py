"""validate-jwt verifies only with keys meant for it: JWKS keys for signatures, strong enough, secrets pyjwt takes.

An attack pass (tokens from clients holding no valid token, real uvicorn, a JWKS over HTTP) found three:

* A JWKS key whose ``key_ops`` (RFC 7517 §4.3) does not list ``verify`` verified tokens: a key an
  issuer publishes for clients to encrypt to (its private half perhaps another party's) was a
  signing key to the gateway, as ``use: enc`` was not. It is now skipped as that one is.
* An RSA key under 2048 bits, from the JWKS or ``public_keys``, verified tokens (RFC 7518 §3.3: such a
  key MUST NOT be used; pyjwt only warns, once a process, in no log): whoever factors a 1024-bit key
  signs any token. A JWKS entry is now skipped with a WARNING, a configured key is a problem.
* A ``secret`` pyjwt refuses as an HMAC key (a PEM, SSH or DER public key, a JWK's JSON: its
  HS/RS confusion guard) was accepted by ``check`` and at start, then refused by pyjwt at each
  verification with an exception that is no token error: every HS token, a forged one from any
  client too, was a 500 with an ERROR traceback. It is now the secret's configuration problem.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import warnings
from functools import cache
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.jwts import JwksServer, signing_key, token
from support.policies import build, context, problems
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


def _policy(jwks_url: str) -> dict[str, Any]:
    return {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url, "issuer": "https://issuer.test",
                             "audience": "chat"}}  # fmt: skip


def _bearer(raw: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {raw}"}}


@pytest.mark.parametrize(
    ("key_ops", "admitted"),
    [
        (["encrypt"], False),
        (["wrapKey", "deriveKey"], False),
        ([], False),
        (["sign", "verify"], True),
        (["verify"], True),
    ],
    ids=["encrypt", "wrap-derive", "none", "sign-verify", "verify"],
)
async def test_a_jwks_key_not_for_verifying_verifies_no_token(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, key_ops: list[str], admitted: bool
) -> None:
    """A token signed with the private half of a JWKS key whose ``key_ops`` lacks ``verify`` is a 401
    (before, 101 and the upstream reached: 3 of 3 refusals failed); with ``verify`` it is admitted."""
    issuer, other = signing_key("ES256"), signing_key("ES256", kid="encryption")
    with JwksServer(issuer) as jwks:
        entry = {key: value for key, value in other.jwk().items() if key not in ("use", "alg")}
        jwks.entries = [{**entry, "key_ops": key_ops}]
        config = {"apis": [api_entry(upstream, policies=[_policy(jwks.url)])]}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        if admitted:
            async with await connect(server.url("/ws/echo"), **_bearer(token(other))) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
        else:
            status, headers, _ = await expect_status(server.url("/ws/echo"), **_bearer(token(other)))
            assert (status, headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')
            assert upstream.handshakes == []
        async with await connect(server.url("/ws/echo"), **_bearer(token(issuer))) as ws:  # the issuer's key serves
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_key_ops_that_are_not_a_list_of_strings_skip_the_key_with_a_warning(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    issuer, other = signing_key("ES256"), signing_key("ES256", kid="odd")
    with JwksServer(issuer) as jwks:
        jwks.entries = [{**other.jwk(), "key_ops": "verify"}]
        config = {"apis": [api_entry(upstream, policies=[_policy(jwks.url)])]}
        server = uvicorn_server(WebSocketGateway(not_found, config=config))
        assert (await expect_status(server.url("/ws/echo"), **_bearer(token(other))))[0] == 401
    assert any("'odd': its key_ops is not a list of strings" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)  # fmt: skip


@cache
def _weak_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # cryptography's least


def _weak_token() -> str:
    claims = {"iss": "https://issuer.test", "aud": "chat", "sub": "admin", "exp": int(time.time()) + 300}
    with warnings.catch_warnings():  # pyjwt's InsecureKeyLengthWarning: this is the key an attacker factored
        warnings.simplefilter("ignore")
        return jwt.encode(claims, _weak_rsa(), algorithm="RS256", headers={"kid": "weak"})


async def test_a_jwks_rsa_key_under_2048_bits_verifies_no_token(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, admitted (the suite's warnings-as-errors made it a 500 instead: pyjwt's warning)."""
    strong = signing_key("RS256")
    with JwksServer(strong) as jwks:
        jwks.entries = [{**json.loads(RSAAlgorithm.to_jwk(_weak_rsa().public_key())), "kid": "weak", "alg": "RS256"}]
        policy = {"validate-jwt": {**_policy(jwks.url)["validate-jwt"], "algorithms": ["RS256"]}}
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=[policy])]}))
        status, headers, _ = await expect_status(server.url("/ws/echo"), **_bearer(_weak_token()))
        assert (status, headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')
        issued = token(strong)
        async with await connect(server.url("/ws/echo"), **_bearer(issued)) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert [h.header("authorization") for h in upstream.handshakes] == [f"Bearer {issued}"]
    assert any("'weak': an RSA key of 1024 bits (RFC 7518: at least 2048)" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)  # fmt: skip


def test_a_configured_rsa_key_under_2048_bits_is_a_problem() -> None:
    """Before, no problem, and its tokens admitted."""
    public = _weak_rsa().public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    found = problems({"validate-jwt": {"algorithms": ["RS256", "PS256"], "audience": "chat",
                                       "public_keys": [signing_key("RS256").public_pem, pem.decode()]}})  # fmt: skip
    assert found == ["apis[0].policies[0].validate-jwt.public_keys[1]: too weak to verify tokens: "
                     "an RSA key of 1024 bits (RFC 7518: at least 2048)"]  # fmt: skip


def _der_public_key() -> bytes:
    public: rsa.RSAPublicKey = signing_key("RS256").private.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


HS = {"algorithms": ["HS256"]}
SECRETS: dict[str, tuple[dict[str, Any], bytes]] = {
    "pem": ({"secret": signing_key("RS256").public_pem}, signing_key("RS256").public_pem.encode()),
    "ssh": ({"secret": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7dGVzdA== ops@host"},
            b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7dGVzdA== ops@host"),
    "jwk-json": ({"secret": json.dumps({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"})},
                 json.dumps({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}).encode()),
    "der-base64": ({"secret": base64.b64encode(_der_public_key()).decode(), "secret_base64": True}, _der_public_key()),
}  # fmt: skip


def _hs_token(secret: bytes) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "exp": int(time.time()) + 300}).encode())
    signing_input = header + b"." + payload.rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(("settings", "secret"), SECRETS.values(), ids=SECRETS.keys())
async def test_a_secret_is_refused_at_start_or_verifies_tokens_never_a_500(
    settings: dict[str, Any], secret: bytes
) -> None:
    """Before, no problem, and each HS token pyjwt's exception (4 of 4 fail with pyjwt 2.15; every
    pyjwt 2 refuses the PEM and SSH keys, before 2.12 it takes a DER key's or a JWK's bytes as a secret:
    then the secret verifies its tokens)."""
    entry = {"validate-jwt": {**HS, **settings}}
    found = problems(entry)
    if found:
        assert len(found) == 1 and found[0].startswith("apis[0].policies[0].validate-jwt.secret: not usable as an HMAC")
        assert settings["secret"] not in found[0]
        return
    assert "BEGIN" not in settings["secret"] and not settings["secret"].startswith("ssh-")
    context_ = context(headers=[("Authorization", f"Bearer {_hs_token(secret)}")])
    await build(entry).apply(context_)
    assert context_.claims is not None and context_.claims["sub"] == "admin"


def test_the_problem_names_secret_env_when_the_secret_came_from_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H7_JWT_SECRET", signing_key("ES256").public_pem)
    found = problems({"validate-jwt": {**HS, "secret_env": "H7_JWT_SECRET"}})
    assert len(found) == 1 and found[0].startswith("apis[0].policies[0].validate-jwt.secret_env: not usable")


def test_a_usable_secret_and_asymmetric_only_policies_are_no_problem() -> None:
    assert problems({"validate-jwt": {**HS, "secret": "a-test-shared-secret-of-32-bytes!!"}}) == []
    # no HS algorithm: the secret is never an HMAC key
    pem = signing_key("ES256").public_pem
    assert problems({"validate-jwt": {"algorithms": ["ES256"], "public_keys": [pem], "audience": "chat",
                                      "secret": signing_key("RS256").public_pem}}) == []  # fmt: skip
