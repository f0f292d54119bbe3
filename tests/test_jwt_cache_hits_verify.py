"""The verified-token cache never answers for a token pyjwt would refuse or read otherwise: every
token that finds an entry verifies, under the key that signed the kept one, to the same payload.

Mutations a client can make of a kept token (a character of any segment changed, added or removed,
padding, the other ECDSA s, the signature's alphabet swapped to ``+/``, another token's signature or
header), over every algorithm family the cache treats apart: ECDSA on each curve, HMAC, RSA, EdDSA."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.policies.token_cache import TokenCache
from asgi_ws_gateway.policies.token_spelling import other_ecdsa_spelling

_ALGS = ["ES256", "ES256K", "ES384", "ES512", "HS256", "HS512", "RS256", "EdDSA"]
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.!"


@cache
def _keys(alg: str) -> tuple[Any, Any]:
    """(signing key, verifying key) for ``alg``, made once."""
    if alg.startswith("HS"):
        return "s" * 64, "s" * 64
    curves = {"ES256": ec.SECP256R1(), "ES256K": ec.SECP256K1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
    private: Any
    if alg in curves:
        private = ec.generate_private_key(curves[alg])
    elif alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return private, private.public_key()


def _verified(raw: str, alg: str) -> dict[str, Any] | None:
    try:
        return dict(jwt.decode(raw, _keys(alg)[1], algorithms=[alg]))
    except jwt.PyJWTError:
        return None


def _mutate(raw: str, data: st.DataObject, alg: str) -> str:
    kind = data.draw(st.sampled_from(["edit", "insert", "delete", "pad", "flip", "std", "swap"]))
    if kind == "pad":
        return raw + data.draw(st.sampled_from(["=", "==", "===", "A=", ".", "=="]))
    if kind == "flip":
        return other_ecdsa_spelling(raw) or raw + "="
    if kind == "std":
        signed, _, sig = raw.rpartition(".")
        return f"{signed}.{sig.replace('-', '+').replace('_', '/')}"
    if kind == "swap":  # another payload under the same header and signature, or the other way round
        other = jwt.encode({"sub": "mallory"}, _keys(alg)[0], algorithm=alg)
        parts, others = raw.split("."), other.split(".")
        index = data.draw(st.integers(0, 2))
        parts[index] = others[index]
        return ".".join(parts)
    index = data.draw(st.integers(0, len(raw) - (kind != "insert")))
    char = data.draw(st.sampled_from(_ALPHABET))
    if kind == "edit":
        return raw[:index] + char + raw[index + 1 :]
    if kind == "insert":
        return raw[:index] + char + raw[index:]
    return raw[:index] + raw[index + 1 :]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alg=st.sampled_from(_ALGS), n=st.integers(0, 3), data=st.data())
def test_a_token_that_finds_an_entry_verifies_to_its_payload(alg: str, n: int, data: st.DataObject) -> None:
    raw = jwt.encode({"sub": "alice", "n": n}, _keys(alg)[0], algorithm=alg)
    cache_ = TokenCache(16, 60)
    cache_.keep(raw, {"sub": "alice", "n": n}, 0)
    variant = raw
    for _ in range(data.draw(st.integers(1, 3))):
        variant = _mutate(variant, data, alg)
    found = cache_.find(variant, 0)
    if found is not None:
        assert _verified(variant, alg) == found[1] == {"sub": "alice", "n": n}, (alg, raw, variant)


def test_the_mutations_reach_hits_and_misses() -> None:
    """The property above is not empty: padded and flipped spellings hit, an edited signature misses."""
    raw = jwt.encode({"sub": "alice"}, _keys("ES256")[0], algorithm="ES256")
    cache_ = TokenCache(16, 60)
    cache_.keep(raw, {"sub": "alice"}, 0)
    flipped = other_ecdsa_spelling(raw)
    assert flipped is not None
    padded = flipped + "=" * (-len(flipped.rpartition(".")[2]) % 4)
    assert all(cache_.find(t, 0) is not None for t in (raw, flipped, padded))
    signed, _, segment = raw.rpartition(".")
    sig = base64.urlsafe_b64decode(segment + "==")
    edited = f"{signed}.{base64.urlsafe_b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode().rstrip('=')}"
    assert cache_.find(edited, 0) is None
