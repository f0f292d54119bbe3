"""validate-jwt and check-header as pure logic: keys, algorithms, claims, token positions, the JWKS cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from asgi_ws_gateway.policies.jwks import JwksCache, KeysUnavailable
from support.jwts import HS_SECRET, signing_key, token
from support.policies import API, build, context, denied, problems

ISSUER = {"issuer": "https://issuer.test", "audience": "chat"}


def _pem_policy(alg: str, **settings: Any) -> Any:
    return build({"validate-jwt": {"algorithms": [alg], "public_keys": [signing_key(alg).public_pem],
                                   **ISSUER, **settings}})  # fmt: skip


def _bearer(value: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {value}")]


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_asymmetric_tokens_are_accepted_and_claims_become_variables(alg: str) -> None:
    ctx = context(headers=_bearer(token(signing_key(alg), ttl=120, scope="chat:write")))
    await _pem_policy(alg).apply(ctx)
    assert ctx.claims is not None and ctx.claims["sub"] == "alice"
    assert ctx.credential_expires_at == ctx.claims["exp"]


async def test_hs256_with_a_shared_secret() -> None:
    policy = build({"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, **ISSUER}})
    ctx = context(headers=_bearer(token()))
    await policy.apply(ctx)
    assert ctx.claims is not None


async def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"sub": "mallory", "aud": "chat", "iss": "https://issuer.test"}, None, algorithm="none")  # type: ignore[arg-type]
    denial = await denied(_pem_policy("RS256").apply(context(headers=_bearer(unsigned))))
    assert (denial.status, denial.reason) == (401, "token_algorithm")
    assert (b"www-authenticate", b'Bearer error="invalid_token"') in denial.headers


async def test_hs_token_signed_with_the_rsa_public_key_is_refused() -> None:
    """The classic confusion attack: HS256 'signed' with the public key an RS256 verifier holds."""
    key = signing_key("RS256")
    now = int(time.time())
    body = {"sub": "mallory", "aud": "chat", "iss": "https://issuer.test", "exp": now + 60}
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    signature = hmac.new(key.public_pem.encode(), header + b"." + payload, hashlib.sha256).digest()
    forged = b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    denial = await denied(_pem_policy("RS256").apply(context(headers=_bearer(forged))))
    assert (denial.status, denial.reason) == (401, "token_algorithm")
    # Even with HS256 allowed too, the public key is never used as an HMAC secret.
    both = build({"validate-jwt": {"algorithms": ["RS256", "HS256"], "public_keys": [key.public_pem],
                                   "secret": HS_SECRET, **ISSUER}})  # fmt: skip
    denial = await denied(both.apply(context(headers=_bearer(forged))))
    assert (denial.status, denial.detail) == (401, "the token's signature is not valid")


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"ttl": -120}, "the token has expired"),
        ({"nbf": 4_000_000_000}, "the token is not valid yet"),
        ({"iat": 4_000_000_000}, "the token is not valid yet"),
        ({"aud": "billing"}, "the token is for another audience"),
        ({"iss": "https://evil.test"}, "the token is from another issuer"),
        ({"exp": None}, "the token lacks the 'exp' claim"),
    ],
)
async def test_invalid_claims_are_refused(claims: dict[str, Any], detail: str) -> None:
    raw = token(signing_key("RS256"), **claims)
    denial = await denied(_pem_policy("RS256").apply(context(headers=_bearer(raw))))
    assert (denial.status, denial.detail) == (401, detail)
    assert raw not in denial.detail and raw.encode() not in repr(denial.headers).encode()


async def test_clock_skew_tolerates_a_just_expired_token() -> None:
    raw = token(signing_key("RS256"), ttl=-10)
    await _pem_policy("RS256", clock_skew=30).apply(context(headers=_bearer(raw)))
    await denied(_pem_policy("RS256", clock_skew=0).apply(context(headers=_bearer(raw))))


async def test_token_signed_by_another_key_is_refused() -> None:
    raw = token(signing_key("RS256", "other"))
    denial = await denied(_pem_policy("RS256").apply(context(headers=_bearer(raw))))
    assert denial.detail == "the token's signature is not valid"


async def test_missing_token_gets_a_bare_bearer_challenge() -> None:
    denial = await denied(_pem_policy("RS256").apply(context()))
    assert (denial.status, denial.reason, denial.headers) == (401, "token_missing", [(b"www-authenticate", b"Bearer")])


async def test_garbage_and_wrong_scheme() -> None:
    assert (await denied(_pem_policy("RS256").apply(context(headers=_bearer("not.a.jwt"))))).reason == "token_invalid"
    basic = [("Authorization", "Basic dXNlcjpwYXNz")]
    assert (await denied(_pem_policy("RS256").apply(context(headers=basic)))).reason == "token_missing"


async def test_claim_checks_refuse_with_403_insufficient_scope() -> None:
    policy = _pem_policy("RS256", claims=[{"claim": "scope", "contains": "chat:write"}])
    await policy.apply(context(headers=_bearer(token(signing_key("RS256"), scope="read chat:write"))))
    denial = await denied(policy.apply(context(headers=_bearer(token(signing_key("RS256"), scope="read")))))
    assert denial.status == 403
    assert (b"www-authenticate", b'Bearer error="insufficient_scope"') in denial.headers


async def test_token_positions_query_cookie_subprotocol() -> None:
    sources = [{"header": "Authorization"}, {"query": "access_token"}, {"cookie": "jwt"}, {"subprotocol": "bearer."}]
    policy = _pem_policy("ES256", token=sources)
    raw = token(signing_key("ES256"))
    by_query = context(query=f"access_token={raw}&room=1")
    await policy.apply(by_query)
    assert by_query.claims is not None
    by_cookie = context(headers=[("Cookie", f"theme=dark; jwt={raw}")])
    await policy.apply(by_cookie)
    assert by_cookie.claims is not None
    by_subprotocol = context(subprotocols=["chat.v1", f"bearer.{raw}"])
    await policy.apply(by_subprotocol)
    assert by_subprotocol.claims is not None
    # Neither the query token nor the subprotocol token travels upstream.
    query_request = by_query.build_request(API, API.upstreams[0])
    assert "access_token" not in query_request.url and "room=1" in query_request.url
    assert by_subprotocol.build_request(API, API.upstreams[0]).subprotocols == ["chat.v1"]


def test_configuration_problems_are_reported_by_field() -> None:
    assert problems({"validate-jwt": {"algorithms": ["none"], "secret": HS_SECRET}}) == [
        "apis[0].policies[0].validate-jwt.algorithms[0]: 'none' is not an allowed algorithm "
        "(ES256, ES256K, ES384, ES512, EdDSA, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512)"
    ]
    assert problems({"validate-jwt": {"algorithms": ["RS256"]}}) == [
        "apis[0].policies[0].validate-jwt.algorithms: asymmetric algorithms need jwks_url, public_keys or "
        "public_key_files"
    ]
    assert problems({"validate-jwt": {"algorithms": ["HS256"], "secret": "short"}}) == [
        "apis[0].policies[0].validate-jwt.secret: HS256 needs a secret of at least 32 bytes"
    ]
    assert problems({"validate-jwt": {"algorithms": ["RS256"], "public_keys": ["nope"], "audience": 3}}) == [
        "apis[0].policies[0].validate-jwt.audience: Input should be a valid string (got 3)"
    ]
    assert problems(
        {"validate-jwt": {"algorithms": ["RS256"], "token": [{"query": "t", "cookie": "c"}], "jwks_url": "https://x/"}}
    ) == ["apis[0].policies[0].validate-jwt.token[0]: set exactly one of header, query, cookie, subprotocol"]


def test_secret_values_are_never_echoed_in_problems() -> None:
    found = problems({"validate-jwt": {"algorithms": ["HS256"], "secret": ["s3cr3t-value"]}})
    assert found and all("s3cr3t-value" not in p for p in found)


class _FakeJwks:
    def __init__(self, *kids: str) -> None:
        self.kids = list(kids)
        self.fail = False
        self.calls = 0

    async def __call__(self, url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        self.calls += 1
        if self.fail:
            raise OSError("connection refused")
        return json.dumps({"keys": [signing_key("RS256", kid).jwk() for kid in self.kids]}).encode()


async def test_jwks_cache_refreshes_on_unknown_kid_at_most_once_per_interval() -> None:
    now = [0.0]
    fetch = _FakeJwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, min_refresh_interval=30, refresh_interval=600, clock=lambda: now[0])
    assert len(await cache.keys("k1", "RS256")) == 1
    assert await cache.keys("k1", "ES256") == []  # an RSA key never verifies another family
    fetch.kids = ["k1", "k2"]  # rotation
    now[0] = 5
    assert await cache.keys("k2", "RS256") == []  # too soon after the last fetch
    assert await cache.keys("made-up", "RS256") == []
    assert fetch.calls == 1
    now[0] = 31
    assert len(await cache.keys("k2", "RS256")) == 1
    assert fetch.calls == 2


async def test_jwks_outage_keeps_cached_keys_and_empty_cache_is_unavailable() -> None:
    now = [0.0]
    fetch = _FakeJwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, min_refresh_interval=0, refresh_interval=10, clock=lambda: now[0])
    await cache.keys("k1", "RS256")
    fetch.fail = True
    now[0] = 100  # stale: a background refresh fails, cached keys stay
    assert len(await cache.keys("k1", "RS256")) == 1
    assert len(await cache.keys("k1", "RS256")) == 1
    empty = JwksCache("https://idp/jwks", fetch, clock=lambda: now[0])
    with pytest.raises(KeysUnavailable):
        await empty.keys("k1", "RS256")


@pytest.mark.parametrize(
    ("settings", "copies", "admitted"),
    [
        ({"pattern": "acme.*"}, ["acme", "evil"], False),  # joined, "acme, evil" matched: the upstream read "evil"
        ({"pattern": "acme.*"}, ["acme-eu", "acme-us"], True),
        ({"values": ["acme", "globex"]}, ["acme", "acme"], True),  # joined, "acme, acme" was refused
        ({"values": ["acme", "globex"]}, ["acme", "initech"], False),
        ({}, ["", "anything"], True),  # presence only
    ],
)
async def test_check_header_checks_every_copy_of_a_repeated_header(
    settings: dict[str, Any], copies: list[str], admitted: bool
) -> None:
    """The upstream gets every copy and may read any one: each must pass on its own."""
    policy = build({"check-header": {"header": "X-Tenant", "failed_status": 403, **settings}})
    ctx = context(headers=[("X-Tenant", value) for value in copies])
    if admitted:
        await policy.apply(ctx)
    else:
        assert (await denied(policy.apply(ctx))).reason == "header_check"


async def test_check_header() -> None:
    policy = build({"check-header": {"header": "X-Api-Version", "values": ["2", "3"], "failed_status": 403}})
    await policy.apply(context(headers=[("X-Api-Version", "2")]))
    assert (await denied(policy.apply(context(headers=[("X-Api-Version", "1")])))).status == 403
    assert (await denied(policy.apply(context()))).status == 403
    pattern = build({"check-header": {"header": "X-Client", "pattern": "app-[0-9]+", "ignore_case": True}})
    await pattern.apply(context(headers=[("X-Client", "APP-12")]))
    denial = await denied(pattern.apply(context(headers=[("X-Client", "app-12x")])))
    assert (denial.status, denial.reason) == (401, "header_check")
    assert problems({"check-header": {"header": "X", "pattern": "("}})[0].startswith(
        "apis[0].policies[0].check-header.pattern: not a regular expression"
    )
