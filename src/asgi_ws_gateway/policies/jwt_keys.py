"""``validate-jwt``'s own keys: the shared secret and the PEM public keys its settings give, and the
warnings on keys that admit tokens meant for another application or replaceable on the network.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

from jwt import InvalidKeyError
from jwt.algorithms import HMACAlgorithm

from ..forwarded import is_loopback_host
from ..loading import LoadRefused, read_env, read_file
from .base import PolicyProblem
from .jwks import load_public_key, weak_key_problem
from .jwt_settings import ValidateJwtSettings


def shared_secret(s: ValidateJwtSettings) -> bytes | None:
    text = s.secret.get_secret_value() if s.secret is not None else None
    if s.secret_env is not None:
        if text is not None:
            raise PolicyProblem("secret_env", "set secret or secret_env, not both")
        try:
            text = read_env(s.secret_env)
        except LoadRefused as exc:
            raise PolicyProblem("secret_env", str(exc)) from None
        if text is None:
            raise PolicyProblem("secret_env", f"environment variable {s.secret_env} is not set")
    if text is None:
        return None
    if not s.secret_base64:
        return text.encode()
    try:
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    except ValueError:
        raise PolicyProblem("secret", "not valid base64") from None


def hmac_secret_problem(secret: bytes) -> str | None:
    """Why pyjwt refuses ``secret`` as an HMAC key, or None: a PEM, SSH or DER public key, or a JWK's
    JSON (the HS/RS confusion guard of pyjwt 2.x, the JWK one since 2.12).

    Checked when the policy is built: pyjwt checks it at each verification, with an exception that is
    no token error, so a shared secret of that shape made every HS token, forged ones too, a 500 with
    an ERROR traceback."""
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError as exc:
        return f"not usable as an HMAC secret: {exc}"
    return None


def configured_public_keys(s: ValidateJwtSettings) -> list[Any]:
    keys = []
    for field, texts in (("public_keys", s.public_keys), ("public_key_files", s.public_key_files)):
        for i, text in enumerate(texts):
            try:
                pem = read_file(text) if field == "public_key_files" else text.encode()
                key = load_public_key(pem)
            except LoadRefused as exc:
                raise PolicyProblem((field, i), str(exc)) from None
            except (OSError, ValueError) as exc:
                raise PolicyProblem((field, i), f"not a PEM public key or certificate: {exc}") from None
            problem = weak_key_problem(key)
            if problem is not None:
                raise PolicyProblem((field, i), f"too weak to verify tokens: {problem}")
            keys.append(key)
    return keys


def key_warnings(s: ValidateJwtSettings) -> list[tuple[str, str]]:
    """What is valid but lets tokens in that were not meant for this gateway: keys an issuer signs
    other applications' (or other tenants') tokens with, and keys anyone on the network can replace."""
    warnings: list[tuple[str, str]] = []
    if s.jwks_url is not None or s.public_keys or s.public_key_files:
        if s.audience is None:
            warnings.append(("audience", "not set: a token its issuer signed for any other application is accepted "
                             "(set the audience this API's tokens carry)"))  # fmt: skip
        if s.jwks_url is not None and s.issuer is None:
            warnings.append(("issuer", "not set: a token of any issuer whose keys are in the JWKS is accepted (one "
                             "JWKS may serve many tenants: Azure AD's, a shared Auth0 or Keycloak's)"))  # fmt: skip
    if s.jwks_url is not None and s.jwks_url.startswith("http://") and not _loopback(s.jwks_url):
        warnings.append(("jwks_url", "fetched over plain http: anyone on the network path can replace the keys "
                         "and sign tokens the gateway accepts (use https://)"))  # fmt: skip
    return warnings


FREQUENT_REFRESH = 60.0
"""Seconds of ``jwks_refresh_interval`` below which the fetches it makes are warned about."""


def refresh_warnings(s: ValidateJwtSettings) -> list[tuple[str, str]]:
    """What is valid but loads the identity provider: a key set refreshed every few seconds. Each worker
    process refreshes it once per ``jwks_refresh_interval`` while handshakes arrive: at 0.1 s, one
    worker serving 41 handshakes a second fetched it 8 times a second, 6,000 times the default's rate."""
    interval = s.jwks_refresh_interval
    if s.jwks_url is None or interval >= FREQUENT_REFRESH:
        return []
    return [("jwks_refresh_interval", f"{interval:g} s fetches the key set up to {60 / interval:.4g} times a minute "
             "from each worker process while handshakes arrive (default 600 s): identity providers rate-limit "
             "their JWKS endpoint, and a key rotated in is fetched anyway when a token first names it "
             f"(jwks_min_refresh_interval); {FREQUENT_REFRESH:g} s at least")]  # fmt: skip


def _loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


__all__ = [
    "FREQUENT_REFRESH",
    "configured_public_keys",
    "hmac_secret_problem",
    "key_warnings",
    "refresh_warnings",
    "shared_secret",
]
