"""Signing keys made per test session, JWTs signed with them, and a JWKS served over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["HS_SECRET", "JwksServer", "SigningKey", "signing_key", "spellings", "token"]

HS_SECRET = "a-test-shared-secret-of-32-bytes!!"


@dataclass(frozen=True)
class SigningKey:
    alg: str
    kid: str
    private: Any
    public_pem: str

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK with ``kid``, ``alg`` and ``use``."""
        public = self.private.public_key()
        algorithm: Any = {"RS": RSAAlgorithm, "ES": ECAlgorithm, "Ed": OKPAlgorithm}[self.alg[:2]]
        data: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})


@cache
def signing_key(alg: str, kid: str | None = None) -> SigningKey:
    """A new key pair for ``alg`` (RS256, ES256 or EdDSA), made once per (alg, kid) per session."""
    private: Any
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(alg, kid or f"{alg.lower()}-1", private, pem.decode())


def token(key: SigningKey | None = None, *, ttl: float = 300, **claims: Any) -> str:
    """A JWT for issuer ``https://issuer.test`` and audience ``chat``; ``key=None`` signs with HS_SECRET."""
    now = int(time.time())
    body = {"iss": "https://issuer.test", "aud": "chat", "sub": "alice", "iat": now, "exp": now + int(ttl), **claims}
    body = {k: v for k, v in body.items() if v is not None}
    if key is None:
        return jwt.encode(body, HS_SECRET, algorithm="HS256")
    return key.sign(body)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order of P-256's group (SEC 2): an ES256 signature (r, s) verifies as (r, n - s) does."""


def spellings(raw: str) -> list[str]:
    """The spellings of one ES256 token that pyjwt verifies alike: as issued, its signature padded with
    ``==``, the other ``s`` of its signature (ECDSA's (r, n - s): OpenSSL verifies both), that one padded."""
    signed, _, signature = raw.rpartition(".")
    sig = base64.urlsafe_b64decode(signature + "==")
    other = sig[:32] + (P256_ORDER - int.from_bytes(sig[32:])).to_bytes(32)
    flipped = f"{signed}.{base64.urlsafe_b64encode(other).rstrip(b'=').decode()}"
    return [raw, raw + "==", flipped, flipped + "=="]


FORGED = jwt.encode(
    {"sub": "admin", "exp": int(time.time()) + 86400},
    "not-the-gateways-key-but-long-enough-for-hs256",
    algorithm="HS256",
)
"""Signed by no key the gateway knows, claiming more: what an upstream that trusts the gateway must never read
(made at import: it lives a day, longer than any suite)."""


class JwksServer:
    """A JWKS document over HTTP on 127.0.0.1, in a thread; ``keys`` may be swapped, ``entries`` (raw key
    entries) added, ``down`` answers 503; ``host``: the address it listens on."""

    def __init__(self, *keys: SigningKey, host: str = "127.0.0.1") -> None:
        self.keys = list(keys)
        self.entries: list[dict[str, Any]] = []  # raw key entries served after the keys'
        self.down = False
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if server.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": [*(k.jwk() for k in server.keys), *server.entries]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._host = host
        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jwks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._httpd.server_address[1]}/.well-known/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
