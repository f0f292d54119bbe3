"""``validate-jwt``'s settings: where the token may be, the keys and algorithms, the claims checked."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from ..config.fields import DAY, MIN_TIMEOUT, ClaimText
from .base import MatchSettings, PolicySettings
from .token_cache import TokenCacheSettings
from .token_sources import TokenSource


class ClaimCheck(MatchSettings):
    """A claim's value must pass a test: ``{claim: scope, contains: chat:write}``."""

    claim: str = Field(pattern=r"^[A-Za-z0-9_:.-]+$", description="Claim name; dots reach into objects.")


class ValidateJwtSettings(PolicySettings):
    """``validate-jwt``: a signed JWT must be presented; its claims become ``{jwt.*}``."""

    token: list[TokenSource] = Field(
        default_factory=lambda: [TokenSource(header="Authorization")],
        min_length=1,
        description="Where the token may be, tried in order (default: Authorization: Bearer).",
    )
    algorithms: list[str] = Field(min_length=1, description="Allowed algorithms, e.g. [RS256]; never none.")
    jwks_url: str | None = Field(default=None, description="URL of the issuer's JSON Web Key Set.")
    jwks_refresh_interval: float = Field(
        default=600.0,
        ge=0.1,  # 1e-300 fetched the key set for every handshake
        le=7 * DAY,
        description="Seconds before keys are refreshed (0.1 to 604800, a week).",
    )
    jwks_min_refresh_interval: float = Field(
        default=30.0,
        ge=0,
        le=DAY,
        # A floor, not a bound of the field: 0 has meant "take a rotated key at once" (the first token
        # naming it still does), and at 0 each made-up kid was a fetch (policies.jwks.KID_REFRESH_FLOOR).
        description="Least seconds between refreshes caused by an unknown kid (0 to 86400); "
        "however low, never two such refreshes within 1 s.",
    )
    jwks_timeout: float = Field(
        default=5.0,
        ge=MIN_TIMEOUT,
        le=300,  # as handshake_limits.policy_timeout, which bounds the handshake that waits for it
        description="Seconds one JWKS fetch may take, the whole of it (not each read), 0.01 to 300.",
    )
    jwks_keys_without_kid: int = Field(
        default=1,
        ge=1,
        le=64,
        description="JWKS keys a token without a kid may be checked against: with more keys for its algorithm "
        "it is refused (401), so one token cannot cost a signature check per key. OpenID Connect requires a "
        "kid whenever the set has more than one key.",
    )
    public_keys: list[str] = Field(default_factory=list, description="PEM public keys or certificates.")
    public_key_files: list[str] = Field(default_factory=list, description="Files holding PEM public keys.")
    secret: SecretStr | None = Field(default=None, description="Shared secret for HS algorithms.")
    secret_env: str | None = Field(default=None, description="Environment variable holding the shared secret.")
    secret_base64: bool = Field(default=False, description="The secret is base64(url)-encoded.")
    issuer: ClaimText | Annotated[list[ClaimText], Field(min_length=1)] | None = Field(
        default=None, description="Accepted iss value(s)."
    )
    audience: ClaimText | Annotated[list[ClaimText], Field(min_length=1)] | None = Field(
        default=None, description="Accepted aud value(s)."
    )
    clock_skew: float = Field(
        default=30.0,
        ge=0,
        # RFC 7519 §4.1.4: "usually no more than a few minutes". 1e308 admitted a token expired 10
        # years ago; past 5 minutes a short-lived token's exp barely counts.
        le=300,
        description="Seconds of leeway for exp, nbf and iat (0 to 300).",
    )
    require: list[str] = Field(default_factory=lambda: ["exp"], description="Claims that must be present.")
    claims: list[ClaimCheck] = Field(default_factory=list, description="Claim value checks (403 when one fails).")
    cache: TokenCacheSettings = Field(
        default_factory=TokenCacheSettings,
        description="Verified tokens kept so a reconnecting client's signature is not checked again.",
    )


__all__ = ["ClaimCheck", "ValidateJwtSettings"]
