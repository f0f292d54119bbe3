"""validate-jwt: a token without a ``kid`` is checked against at most ``jwks_keys_without_kid`` JWKS keys.

Before, such a token was tried against every key of the issuer's set that fits its algorithm: a
forged one cost a signature check per key on the event loop (ES512: ~0.6 ms each). OpenID Connect
requires a ``kid`` whenever the set holds more than one key, so past the setting the token is
refused without a check. A real JWKS served over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from support.jwts import JwksServer, SigningKey, signing_key
from support.policies import build, context, denied, problems

RSA_KEYS = [signing_key("RS256", f"rsa-{i}") for i in range(3)]
EC_KEY = signing_key("ES256", "ec-0")


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer(*RSA_KEYS, EC_KEY) as server:
        yield server


def _policy(jwks: JwksServer, **settings: Any) -> Any:
    return build({"validate-jwt": {"algorithms": ["RS256", "ES256"], "jwks_url": jwks.url,
                                   "issuer": "https://issuer.test", "audience": "chat", **settings}})  # fmt: skip


def _kidless(key: SigningKey) -> str:
    now = int(time.time())
    claims = {"iss": "https://issuer.test", "aud": "chat", "sub": "alice", "exp": now + 300}
    return jwt.encode(claims, key.private, algorithm=key.alg)  # no kid in the header


def _with(token: str) -> Any:
    return context(headers=[("Authorization", f"Bearer {token}")])


async def test_a_kidless_token_is_refused_unchecked_when_several_keys_fit(jwks: JwksServer) -> None:
    assert "kid" not in jwt.get_unverified_header(_kidless(RSA_KEYS[2]))
    denial = await denied(_policy(jwks).apply(_with(_kidless(RSA_KEYS[2]))))
    assert (denial.status, denial.reason) == (401, "token_unknown_key")
    assert denial.detail == "the token names no key (kid), and the key set has 3 keys for RS256"


async def test_a_kidless_token_is_checked_when_its_algorithm_has_one_key(jwks: JwksServer) -> None:
    ctx = _with(_kidless(EC_KEY))  # one ES256 key among four
    await _policy(jwks).apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "alice"


async def test_the_setting_admits_kidless_tokens_from_a_larger_set(jwks: JwksServer) -> None:
    ctx = _with(_kidless(RSA_KEYS[2]))
    await _policy(jwks, jwks_keys_without_kid=3).apply(ctx)
    assert ctx.claims is not None


async def test_a_token_naming_its_key_is_checked_against_that_key(jwks: JwksServer) -> None:
    ctx = _with(RSA_KEYS[1].sign({"iss": "https://issuer.test", "aud": "chat", "sub": "bob", "exp": time.time() + 60}))
    await _policy(jwks).apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "bob"


async def test_configured_keys_are_still_tried_for_a_kidless_token(jwks: JwksServer) -> None:
    """The operator's own keys are not the issuer's to multiply: they are tried, the JWKS's are not."""
    policy = _policy(jwks, public_keys=[RSA_KEYS[0].public_pem])
    ctx = _with(_kidless(RSA_KEYS[0]))
    await policy.apply(ctx)
    assert ctx.claims is not None
    denial = await denied(policy.apply(_with(_kidless(RSA_KEYS[1]))))  # only in the JWKS: not tried
    assert (denial.status, denial.reason) == (401, "token_invalid")


@pytest.mark.parametrize("value", [0, 65, -1, "many", 1.5, None])
def test_an_invalid_jwks_keys_without_kid_is_refused_by_field_path(value: object) -> None:
    found = problems({"validate-jwt": {"algorithms": ["RS256"], "jwks_url": "https://idp.test/jwks",
                                       "jwks_keys_without_kid": value}})  # fmt: skip
    assert found and all("jwks_keys_without_kid" in problem for problem in found), found
