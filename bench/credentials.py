"""The bench's own signing key and token for ``gateway+policies`` (made per run; nothing secret).

The coordinator makes an ES256 key pair when this module is imported, gives the load generator a
bearer token signed with it (``PathSpec.headers``) and the gateway process the public key through
``BENCH_JWT_PUBLIC_KEY``: ``validate-jwt`` then verifies every handshake against a key it holds,
which is what "cached keys" costs.
"""

from __future__ import annotations

import os
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PUBLIC_KEY_ENV = "BENCH_JWT_PUBLIC_KEY"
ISSUER = "https://bench.invalid"
AUDIENCE = "bench"

_key = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY_PEM = (
    _key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
TOKEN = jwt.encode(
    {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "iat": int(time.time()), "exp": int(time.time()) + 86400},
    _key,
    algorithm="ES256",
)


def public_key() -> str:
    """In the gateway process: the coordinator's public key."""
    return os.environ[PUBLIC_KEY_ENV]


__all__ = ["AUDIENCE", "ISSUER", "PUBLIC_KEY_ENV", "PUBLIC_KEY_PEM", "TOKEN", "public_key"]
