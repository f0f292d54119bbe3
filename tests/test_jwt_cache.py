"""validate-jwt's verified-token cache as pure logic: a fake clock, counted signature checks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.policies.jwks import JwksCache
from asgi_ws_gateway.policies.token_cache import MAX_CACHED_TOKEN, TokenCache, copy_claims, token_digest
from asgi_ws_gateway.policies.token_spelling import other_ecdsa_spelling, written_by_an_encoder
from support.jwts import P256_ORDER, signing_key, spellings, token
from support.policies import build, context, denied, problems

KEY = signing_key("ES256")


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _policy(clock: _Clock | None = None, **settings: Any) -> Any:
    entry = {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test",
                              "audience": "chat", **settings}}  # fmt: skip
    return build(entry, clock=clock)


def _ctx(raw: str) -> Any:
    return context(headers=[("Authorization", f"Bearer {raw}")])


async def test_a_repeated_token_is_verified_once() -> None:
    policy = _policy()
    raw = token(KEY)
    for _ in range(3):
        ctx = _ctx(raw)
        await policy.apply(ctx)
        assert ctx.claims is not None and ctx.claims["sub"] == "alice"
    assert policy.verifications == 1


async def test_cache_off_verifies_every_time() -> None:
    policy = _policy(cache={"max_entries": 0})
    raw = token(KEY)
    await policy.apply(_ctx(raw))
    await policy.apply(_ctx(raw))
    assert (policy.cache, policy.verifications) == (None, 2)


async def test_the_spellings_of_one_token_are_one_check_and_one_entry() -> None:
    """Padded, or signed with ECDSA's other s: what verifies alike is one entry (it was one per spelling)."""
    policy = _policy()
    for raw in spellings(token(KEY)) * 2:
        ctx = _ctx(raw)
        await policy.apply(ctx)
        assert ctx.claims is not None and ctx.claims["sub"] == "alice"
    assert (len(policy.cache), policy.verifications) == (1, 1)


def _with_signature(raw: str, signature: bytes) -> str:
    return f"{raw.rpartition('.')[0]}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_signature_not_written_as_an_encoder_writes_it_is_neither_kept_nor_found() -> None:
    """pyjwt 2.15 refuses these spellings; before 2.14 it read each as the signature, any number of them
    (``=`` after ``=``): none may find the token's entry, nor be kept as an entry of its own."""
    raw = token(KEY)
    signed, _, segment = raw.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bit = alphabet[alphabet.index(segment[-1]) ^ 1]  # an 86-character ES256 segment: 4 unused bits
    standard = segment.replace("-", "+").replace("_", "/") if "-" in segment or "_" in segment else segment + "+"
    padded = [raw + "=", raw + "===", raw + "====", f"{signed}.", f"{signed}.=="]
    misread = [
        f"{signed}.{segment[:10]}!{segment[10:]}",
        raw + " ",
        f"{signed}.{standard}",
        f"{signed}.{segment[:-1]}{unused_bit}",
    ]
    variants = padded + misread
    cache = TokenCache(16, 60)
    cache.keep(raw, {"sub": "alice"}, 0)
    for variant in variants:
        assert not written_by_an_encoder(variant)
        assert cache.find(variant, 0) is None
        cache.keep(variant, {"sub": "alice"}, 0)
    assert len(cache) == 1
    signature = base64.urlsafe_b64decode(segment + "==")
    assert other_ecdsa_spelling(_with_signature(raw, signature[:32] + P256_ORDER.to_bytes(32))) is None  # s >= n


@pytest.mark.parametrize("alg", ["ES256", "ES256K", "ES384", "ES512"])
def test_the_other_s_of_each_curve_verifies_and_leads_back(alg: str) -> None:
    """The group orders written in token_spelling are the curves': (r, n - s) verifies as (r, s) does."""
    curve = {"ES256": ec.SECP256R1(), "ES256K": ec.SECP256K1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
    private = ec.generate_private_key(curve[alg])
    for n in range(4):
        raw = jwt.encode({"n": n}, private, algorithm=alg)
        other = other_ecdsa_spelling(raw)
        assert other is not None and other != raw and other_ecdsa_spelling(other) == raw
        assert jwt.decode(other, private.public_key(), algorithms=[alg]) == {"n": n}


def test_every_spelling_of_an_ecdsa_token_finds_its_one_entry() -> None:
    cache = TokenCache(16, 60)
    variants = spellings(token(KEY))
    cache.keep(variants[0], {"sub": "alice"}, 0)
    found = [cache.find(variant, 0) for variant in variants]
    assert all(hit is not None and hit[1] == {"sub": "alice"} for hit in found) and len(cache) == 1


@pytest.mark.parametrize("alg", ["HS512", "EdDSA"])
async def test_a_64_byte_signature_that_is_no_ecdsa_one_is_never_flipped(alg: str) -> None:
    """HS512 and EdDSA signatures are 64 bytes, as ES256's: only a header saying ES256 makes the other s one
    spelling. Else the forgery (r, n - s) of a cached token would be admitted from its entry."""
    secret, ed = "k" * 64, signing_key("EdDSA")
    policy = _policy(algorithms=[alg], **({"secret": secret} if alg == "HS512" else {"public_keys": [ed.public_pem]}))

    def sign(n: int) -> str:
        return jwt.encode(_claims(n), secret, "HS512") if alg == "HS512" else ed.sign(_claims(n))

    # a signature whose second half reads as an s in P-256's high half: the one a flip would rewrite
    raw = next(r for n in range(200) if int.from_bytes(_signature(r := sign(n))[32:]) > P256_ORDER // 2)
    await policy.apply(_ctx(raw))
    signature = _signature(raw)
    forged = _with_signature(raw, signature[:32] + (P256_ORDER - int.from_bytes(signature[32:])).to_bytes(32))
    assert token_digest(forged) != token_digest(raw)
    assert (await denied(policy.apply(_ctx(forged)))).status == 401
    assert policy.verifications == 2


def _claims(n: int) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "https://issuer.test", "aud": "chat", "sub": "alice", "iat": now, "exp": now + 300, "n": n}


def _signature(raw: str) -> bytes:
    segment = raw.rpartition(".")[2]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def test_cached_token_is_refused_once_expired_by_the_clock() -> None:
    clock = _Clock()
    policy = _policy(clock, clock_skew=10)
    raw = token(KEY, ttl=60)
    await policy.apply(_ctx(raw))
    clock.now += 65  # past exp, within the leeway: still admitted, from the cache
    await policy.apply(_ctx(raw))
    clock.now += 10
    denial = await denied(policy.apply(_ctx(raw)))
    assert (denial.status, denial.reason, denial.detail) == (401, "token_expired", "the token has expired")
    assert policy.verifications == 1  # refused by the cache's own check (pyjwt's clock still admits it)
    assert len(policy.cache) == 0


async def test_cached_token_before_its_nbf_is_refused() -> None:
    """The clock stepped back before nbf: the cached token is not valid yet."""
    clock = _Clock()
    policy = _policy(clock, clock_skew=5)
    raw = token(KEY, nbf=int(clock.now) - 1)
    await policy.apply(_ctx(raw))
    clock.now -= 30
    denial = await denied(policy.apply(_ctx(raw)))
    assert (denial.status, denial.detail) == (401, "the token is not valid yet")
    assert policy.verifications == 1


@pytest.mark.parametrize("wall_step", [0, -3600, 120])
async def test_max_age_forces_a_new_signature_check_by_the_monotonic_clock(wall_step: int) -> None:
    """An entry's age is monotonic time: the wall clock set back an hour kept it an hour longer (the token
    verified once for the hour), set forward 2 minutes dropped it (a signature check per reconnection)."""
    wall, monotonic = _Clock(), _Clock()
    policy = _policy(wall, cache={"max_age": 60})
    policy.cache.clock = monotonic
    raw = token(KEY, ttl=7200, iat=None)  # no iat: the wall clock set back does not make it "not valid yet"
    await policy.apply(_ctx(raw))
    wall.now += wall_step
    monotonic.now += 59
    await policy.apply(_ctx(raw))
    assert policy.verifications == 1
    monotonic.now += 2
    await policy.apply(_ctx(raw))
    assert policy.verifications == 2


async def test_claim_checks_run_on_every_use() -> None:
    policy = _policy(claims=[{"claim": "scope", "contains": "chat:write"}])
    raw = token(KEY, scope="read")
    for _ in range(2):
        denial = await denied(policy.apply(_ctx(raw)))
        assert denial.status == 403
    assert policy.verifications == 1  # the second refusal came from a cache hit


async def test_lru_bound_evicts_the_least_recently_used() -> None:
    policy = _policy(cache={"max_entries": 3})
    raws = [token(KEY, sub=f"user-{i}") for i in range(4)]
    for raw in raws[:3]:
        await policy.apply(_ctx(raw))
    await policy.apply(_ctx(raws[0]))  # now the most recently used
    await policy.apply(_ctx(raws[3]))  # evicts raws[1]
    assert (len(policy.cache), policy.verifications) == (3, 4)
    await policy.apply(_ctx(raws[0]))
    assert policy.verifications == 4
    await policy.apply(_ctx(raws[1]))
    assert policy.verifications == 5
    for i in range(50):
        await policy.apply(_ctx(token(KEY, sub=f"flood-{i}")))
    assert len(policy.cache) == 3


async def test_invalid_tokens_are_never_cached() -> None:
    policy = _policy()
    other = signing_key("ES256", "other")
    bad = [token(other), token(KEY, aud="billing"), token(KEY, ttl=-60), token(KEY, exp=None)]
    for raw in bad * 2:
        assert (await denied(policy.apply(_ctx(raw)))).status == 401
    assert (len(policy.cache), policy.verifications) == (0, 8)


async def test_large_tokens_are_not_cached() -> None:
    policy = _policy()
    raw = token(KEY, pad="x" * MAX_CACHED_TOKEN)
    await policy.apply(_ctx(raw))
    await policy.apply(_ctx(raw))
    assert (len(policy.cache), policy.verifications) == (0, 2)


async def test_editing_the_claims_does_not_reach_the_next_handshake() -> None:
    policy = _policy()
    raw = token(KEY, roles={"chat": ["read"]})
    for _ in range(3):
        ctx = _ctx(raw)
        await policy.apply(ctx)
        assert ctx.claims is not None
        assert (ctx.claims["sub"], ctx.claims["roles"]) == ("alice", {"chat": ["read"]})
        ctx.claims["sub"] = "mallory"
        ctx.claims["roles"]["chat"].append("admin")


async def test_editing_a_flat_payload_does_not_reach_the_next_handshake() -> None:
    """A payload of plain values (a hit copies it with dict.copy): edits, additions and removals stay in
    the handshake that made them."""
    policy = _policy()
    raw = token(KEY, scope="chat:read")
    for _ in range(3):
        ctx = _ctx(raw)
        await policy.apply(ctx)
        assert ctx.claims is not None
        assert (ctx.claims["sub"], ctx.claims["scope"], "admin" in ctx.claims) == ("alice", "chat:read", False)
        ctx.claims["sub"] = "mallory"
        ctx.claims["admin"] = True
        del ctx.claims["scope"]
    assert policy.verifications == 1


async def test_in_band_refresh_uses_the_cache_and_its_checks() -> None:
    clock = _Clock()
    policy = _policy(clock, clock_skew=0)
    raw = token(KEY, ttl=30)
    assert (await policy.verify_token(raw))["sub"] == "alice"
    assert (await policy.verify_token(raw))["sub"] == "alice"
    assert policy.verifications == 1
    clock.now += 31
    assert (await denied(policy.verify_token(raw))).reason == "token_expired"


async def test_policies_never_share_entries() -> None:
    """Another policy instance (another audience) verifies the token itself and refuses it."""
    raw = token(KEY)
    admitting = _policy()
    await admitting.apply(_ctx(raw))
    other = _policy(audience="billing")
    assert (await denied(other.apply(_ctx(raw)))).detail == "the token is for another audience"


def test_cache_settings_are_checked() -> None:
    entry = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem]}
    assert problems({"validate-jwt": {**entry, "cache": {"max_entries": -1}}})
    assert problems({"validate-jwt": {**entry, "cache": {"max_age": 0}}})
    assert problems({"validate-jwt": {**entry, "cache": {"size": 10}}})
    assert not problems({"validate-jwt": {**entry, "cache": {"max_entries": 0}}})


class _Jwks:
    def __init__(self, *kids: str) -> None:
        self.kids = list(kids)

    async def __call__(self, url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        return json.dumps({"keys": [signing_key("ES256", kid).jwk() for kid in self.kids]}).encode()


async def test_jwks_generation_changes_only_when_the_keys_do() -> None:
    now = [0.0]
    fetch = _Jwks("g1", "g2")
    cache = JwksCache("https://idp/jwks", fetch, refresh_interval=10, min_refresh_interval=0, clock=lambda: now[0])
    await cache.keys("g1", "ES256")
    assert cache.generation == 1
    await cache.keys("unknown", "ES256")  # a refresh fetching the same keys
    assert cache.generation == 1
    fetch.kids = ["g2"]
    now[0] = 1  # two refreshes caused by tokens are at least a second apart (jwks.KID_REFRESH_FLOOR)
    await cache.keys("unknown", "ES256")
    assert cache.generation == 2


async def test_jwks_refresh_dropping_a_kid_retires_its_cached_tokens() -> None:
    """The staleness check runs on a cache hit too: a revoked key does not live on in the cache."""
    now = [0.0]
    fetch = _Jwks("r1", "r2")
    settings = {"algorithms": ["ES256"], "jwks_url": "https://idp/jwks", "issuer": "https://issuer.test",
                "audience": "chat", "jwks_refresh_interval": 10}  # fmt: skip
    policy: Any = build({"validate-jwt": settings})
    assert policy.jwks is not None
    policy.jwks = JwksCache("https://idp/jwks", fetch, refresh_interval=10, clock=lambda: now[0])
    raw1, raw2 = token(signing_key("ES256", "r1")), token(signing_key("ES256", "r2"))
    for raw in (raw1, raw2, raw1, raw2):
        await policy.apply(_ctx(raw))
    verified = policy.verifications
    fetch.kids = ["r2"]
    now[0] = 11  # stale: this hit starts the background refresh
    await policy.apply(_ctx(raw1))
    assert policy.jwks._task is not None
    await policy.jwks._task
    denial = await denied(policy.apply(_ctx(raw1)))
    assert (denial.status, denial.reason) == (401, "token_unknown_key")
    await policy.apply(_ctx(raw2))  # a kept key: verified once more under the new key set, then cached
    await policy.apply(_ctx(raw2))
    assert policy.verifications == verified + 2


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _mutables(value: object) -> Iterator[object]:
    if isinstance(value, dict | list):
        yield value
        for item in value.values() if isinstance(value, dict) else value:
            yield from _mutables(item)


@given(st.dictionaries(st.text(max_size=5), _JSON, max_size=6))
def test_a_cached_payload_is_copied_whole_and_shares_nothing_mutable(payload: dict[str, Any]) -> None:
    copied = copy_claims(payload)
    assert copied == payload
    originals = {id(item) for item in _mutables(payload)}
    assert not originals & {id(item) for item in _mutables(copied)}


_VERIFIED = st.dictionaries(
    st.text(max_size=5).filter(lambda name: name not in ("iat", "nbf", "exp")), _JSON, max_size=6
)
"""Payloads as verification admits them into the cache: any claims, but no time claim that is no NumericDate
(``{'nbf': []}`` is refused before the cache: numeric_date_problem)."""


@given(_VERIFIED)
def test_each_hit_is_a_copy_of_the_payload_kept_sharing_nothing_mutable(payload: dict[str, Any]) -> None:
    """Through the cache (a flat payload copied by dict.copy, another by copy_claims): each hit equals
    the payload verified, shares nothing mutable with it nor with another hit, and editing one
    (nested values too) changes neither the next hit nor the payload."""
    cache = TokenCache(4, 60)
    digest = token_digest(token(KEY))
    assert digest is not None
    cache.put(digest, payload, 0)
    first, second = cache.get(digest, 0), cache.get(digest, 0)
    assert first is not None and second is not None
    assert first[0] == payload == second[0]
    originals = {id(item) for item in _mutables(payload)}
    firsts, seconds = {id(item) for item in _mutables(first[0])}, {id(item) for item in _mutables(second[0])}
    assert not originals & firsts and not originals & seconds and not firsts & seconds
    snapshot = json.dumps(payload, sort_keys=True)
    for item in _mutables(first[0]):
        if isinstance(item, dict):
            item["edited"] = True
        elif isinstance(item, list):
            item.append("edited")
    third = cache.get(digest, 0)
    assert third is not None and third[0] == payload and json.dumps(payload, sort_keys=True) == snapshot


_HIT_TOKEN = token(KEY)


@given(_VERIFIED, st.booleans())
def test_a_hit_found_by_token_is_the_copy_get_gives(payload: dict[str, Any], padded: bool) -> None:
    """find's hit, read in place for a token without padding, answers as get does (the same digest, an
    equal payload sharing nothing mutable, the same times), padded or not."""
    cache = TokenCache(4, 60)
    raw = _HIT_TOKEN
    cache.keep(raw, payload, 0)
    found, got = cache.find(raw + "=" * (-len(raw) % 4) if padded else raw, 0), cache.get(token_digest(raw) or b"", 0)
    assert found is not None and got is not None
    digest, claims, times = found
    assert digest == token_digest(raw) and claims == got[0] == payload and times is got[1]
    originals = {id(item) for item in _mutables(payload)} | {id(item) for item in _mutables(got[0])}
    assert not originals & {id(item) for item in _mutables(claims)} and claims is not payload


def test_an_entry_of_an_older_key_set_or_past_its_age_is_no_hit_and_goes() -> None:
    """find refuses a stale entry as get does, and discards it: a key rotation or max_age is never read past."""
    now = [100.0]
    cache = TokenCache(4, 60, clock=lambda: now[0])
    raw = token(KEY)
    cache.keep(raw, {"sub": "a"}, 1)
    assert cache.find(raw, 2) is None and len(cache) == 0  # verified under key-set generation 1
    cache.keep(raw, {"sub": "a"}, 2)
    assert cache.find(raw, 2) is not None
    now[0] = 159.9
    assert cache.find(raw, 2) is not None
    now[0] = 160.0
    assert cache.find(raw, 2) is None and len(cache) == 0


def test_a_payload_value_json_never_makes_is_deep_copied() -> None:
    payload = {"sub": "alice", "groups": {"chat"}}  # a set: only a custom decoder makes one
    copied = copy_claims(payload)
    assert copied == payload and copied["groups"] is not payload["groups"]
