"""The bench's own signing key and tokens for the policy paths (made per run; nothing secret).

The coordinator makes an ES256 key pair when this module is first imported and puts its private
half in ``BENCH_JWT_PRIVATE_KEY``, which its children inherit: the load generator (a child) loads
the same key and mints the tokens it sends (:func:`mint`), the gateway process gets the public key
(``BENCH_JWT_PUBLIC_KEY`` or the config): ``validate-jwt`` then verifies against a key it holds,
which is what "cached keys" costs.

How the generator presents tokens decides what validate-jwt's token cache can do (``--bearer``):
``pool`` is one token per concurrent opener, reused on each reconnect (clients reconnecting with the
token they hold: after the first handshake, hits); ``fresh`` is a new token per handshake (every
handshake a miss: the worst case).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

PUBLIC_KEY_ENV = "BENCH_JWT_PUBLIC_KEY"
PRIVATE_KEY_ENV = "BENCH_JWT_PRIVATE_KEY"
ISSUER = "https://bench.invalid"
AUDIENCE = "bench"
BEARER_MODES = ("pool", "fresh")

if PRIVATE_KEY_ENV in os.environ:
    _loaded = serialization.load_pem_private_key(os.environ[PRIVATE_KEY_ENV].encode(), password=None)
    assert isinstance(_loaded, ec.EllipticCurvePrivateKey)
    _key = _loaded
else:
    _key = ec.generate_private_key(ec.SECP256R1())
    os.environ[PRIVATE_KEY_ENV] = _key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
PUBLIC_KEY_PEM = (
    _key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
_serial = itertools.count()


def mint(sub: str = "bench-user", ttl: int = 86400) -> str:
    """A token for the bench's issuer and audience, distinct from every other one minted (``jti``)."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl,
              "jti": f"{uuid.uuid4().hex[:12]}-{next(_serial)}"}  # fmt: skip
    return jwt.encode(claims, _key, algorithm="ES256")


TOKEN = mint()
"""One token for paths whose every connection sends the same header."""


def public_key() -> str:
    """In the gateway process: the coordinator's public key."""
    return os.environ[PUBLIC_KEY_ENV]


__all__ = ["AUDIENCE", "BEARER_MODES", "ISSUER", "PRIVATE_KEY_ENV", "PUBLIC_KEY_ENV", "PUBLIC_KEY_PEM", "TOKEN",
           "mint", "public_key"]  # fmt: skip
