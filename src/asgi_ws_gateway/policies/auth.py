"""Authentication policies: ``validate-jwt`` and ``check-header``.

``validate-jwt`` refuses with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750): no ``error``
when no token was presented, ``error="invalid_token"`` when the token is malformed, badly signed,
expired, not yet valid, or for another issuer or audience; a failed claim check is 403
``error="insufficient_scope"``; with no verification key obtainable (the JWKS was never fetched)
it is 503. Denial details never contain the token.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import jwt
from pydantic import ConfigDict, Field, SecretStr, model_validator

from ..config.fields import DAY, MIN_TIMEOUT, ClaimText, CookieName, HeaderName, QueryName
from ..errors import HandshakeDenied
from ..forwarded import is_loopback_host
from ..handshake.context import HandshakeContext
from ..json_depth import nests_deeper
from ..json_names import LONE_SURROGATE
from ..loading import LoadRefused, read_env, read_file
from ..param_names import fold_name
from ..safe_regex import Pattern, compile_regex
from ..strict_numbers import StrictNumbers
from ..templates import Condition
from .base import MatchSettings, PolicyEnv, PolicyProblem, PolicySettings, deny, register_policy
from .jwks import ASYMMETRIC, HMAC, JwksCache, KeysUnavailable, key_fits, load_public_key
from .token_cache import MAX_CACHED_TOKEN, TokenCache, TokenCacheSettings, time_problem, token_digest

_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_BLANKS = re.compile(r"[ \t]+")
"""What ends an ``Authorization``-style value's scheme (RFC 9110: spaces; tabs as lenient parsers read them)."""
_MAX_TOKEN = 16 * 1024
_NUMBER = (int, float)
"""What a JSON number is once parsed (a tuple: ``int | float`` would build a union at each check)."""


class TokenSource(StrictNumbers):
    """Where to look for the token; set exactly one of ``header``, ``query``, ``cookie``, ``subprotocol``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    header: HeaderName | None = Field(default=None, description="A request header, e.g. Authorization.")
    scheme: str | None = Field(
        default=None, description="Scheme before the token in the header (default: Bearer for Authorization)."
    )
    query: QueryName | None = Field(default=None, description="A query parameter (removed from the upstream URL).")
    cookie: CookieName | None = Field(default=None, description="A cookie.")
    subprotocol: str | None = Field(
        default=None,
        description="A prefix: the offered subprotocol '<prefix><token>' carries the token (not offered upstream).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenSource:
        if sum(x is not None for x in (self.header, self.query, self.cookie, self.subprotocol)) != 1:
            raise ValueError("set exactly one of header, query, cookie, subprotocol")
        if self.scheme is not None and self.header is None:
            raise ValueError("scheme applies to header only")
        return self


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
        default=30.0, ge=0, le=DAY, description="Least seconds between refreshes caused by an unknown kid (0 to 86400)."
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


@register_policy("validate-jwt")
class ValidateJwt:
    """Validates a JWT; sets ``context.claims`` and ``context.credential_expires_at``."""

    Settings = ValidateJwtSettings

    def __init__(self, settings: ValidateJwtSettings, env: PolicyEnv) -> None:
        self.name = "validate-jwt"
        self.settings = s = settings
        for i, alg in enumerate(s.algorithms):
            if alg not in HMAC | ASYMMETRIC:
                known = ", ".join(sorted(HMAC | ASYMMETRIC))
                raise PolicyProblem(("algorithms", i), f"'{alg}' is not an allowed algorithm ({known})")
        self.algorithms = frozenset(s.algorithms)
        self.secret = self._secret(s)
        self.public_keys = self._public_keys(s)
        self.jwks: JwksCache | None = None
        if s.jwks_url is not None:
            if not s.jwks_url.startswith(("https://", "http://")):
                raise PolicyProblem("jwks_url", "must be an http:// or https:// URL")
            self.jwks = env.jwks(
                s.jwks_url,
                refresh_interval=s.jwks_refresh_interval,
                min_refresh_interval=s.jwks_min_refresh_interval,
                timeout=s.jwks_timeout,
            )
        if self.algorithms & ASYMMETRIC and self.jwks is None and not self.public_keys:
            raise PolicyProblem("algorithms", "asymmetric algorithms need jwks_url, public_keys or public_key_files")
        for field, warning in _key_warnings(s):
            env.warn((field,), warning)
        for alg in sorted(self.algorithms & HMAC):
            if self.secret is None:
                raise PolicyProblem("algorithms", f"{alg} needs secret or secret_env")
            if len(self.secret) < _HMAC_MIN_BYTES[alg]:
                raise PolicyProblem("secret", f"{alg} needs a secret of at least {_HMAC_MIN_BYTES[alg]} bytes")
        self.sources = _readings(s.token)
        self.rfc6750_sources = _readings(_rfc6750_sources_not_in(s.token))
        self.checks: list[Condition] = [c.condition(f"jwt.{c.claim}") for c in s.claims]
        self.options: Any = {"require": list(s.require), "verify_aud": s.audience is not None}
        self.clock = env.clock
        self.cache = TokenCache(s.cache.max_entries, s.cache.max_age, env.clock) if s.cache.max_entries else None
        self.verifications = 0  # tokens whose signature was checked (cache misses); tests read it

    @staticmethod
    def _secret(s: ValidateJwtSettings) -> bytes | None:
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

    @staticmethod
    def _public_keys(s: ValidateJwtSettings) -> list[Any]:
        keys = []
        for field, texts in (("public_keys", s.public_keys), ("public_key_files", s.public_key_files)):
            for i, text in enumerate(texts):
                try:
                    pem = read_file(text) if field == "public_key_files" else text.encode()
                    keys.append(load_public_key(pem))
                except LoadRefused as exc:
                    raise PolicyProblem((field, i), str(exc)) from None
                except (OSError, ValueError) as exc:
                    raise PolicyProblem((field, i), f"not a PEM public key or certificate: {exc}") from None
        return keys

    async def apply(self, context: HandshakeContext) -> None:
        token = self._find_token(context)
        if token is None:
            raise _unauthorized("a bearer token is required", "token_missing", error=None)
        # A reconnecting client's token is in the cache: its checks run here, without the coroutines
        # a verification needs (the same checks, in the same order, as verify_token makes).
        claims = self._cached(token)
        if claims is None:
            claims = await self._decode_and_keep(token)
        self._check_claims(claims)
        context.claims = claims
        exp = claims.get("exp")
        if isinstance(exp, _NUMBER):
            context.credential_expires_at = float(exp)
        context.credential_verifier = self

    async def verify_token(self, token: str) -> dict[str, Any]:
        """The claims of a token validated with these settings (signature, times, issuer, audience,
        claim checks); raises ``HandshakeDenied``. Also used for in-band credential refresh."""
        claims = self._cached(token)
        if claims is None:
            claims = await self._decode_and_keep(token)
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if not self.checks:
            return
        lookup = _Claims(claims)
        for check in self.checks:
            if not check.holds(lookup):
                raise deny(
                    403,
                    f"the token's claim '{check.ref.path[0]}' does not satisfy the API's requirement",
                    reason="token_claims",
                    headers=[(b"www-authenticate", b'Bearer error="insufficient_scope"')],
                )

    def _find_token(self, context: HandshakeContext) -> str | None:
        """The token the request carries; every copy of it in a query or a subprotocol is taken out of
        the upstream request. A query parameter's or a cookie's copies are those of every spelling of
        its name a server may read as it (``?ACCESS_TOKEN=``, ``Cookie: %6Awt=``).

        RFC 6750's own places (``Authorization``, the ``access_token`` query parameter) are read even
        when ``token:`` does not name them: a token found elsewhere must be the only credential there
        too. An upstream following RFC 6750 (or a framework's default JWT middleware) reads them
        whatever this policy reads, so a forged ``Authorization: Bearer`` beside a valid query token
        reached it unchecked. They never admit a request on their own.

        Raises:
            HandshakeDenied: 400 when the request carries two different tokens (RFC 6750: one method per
                request): the upstream could read the one not checked here.
        """
        found, foreign = self._copies(self.sources, context)
        tokens = list(dict.fromkeys(token for token in found if token))
        if tokens and self.rfc6750_sources:
            unread, unread_foreign = self._copies(self.rfc6750_sources, context)
            tokens += [token for token in dict.fromkeys(unread) if token and token not in tokens]
            foreign += unread_foreign
        if len(tokens) > 1 or (tokens and foreign):
            what = f"{len(tokens)} different tokens" if len(tokens) > 1 else "a token and another credential"
            raise deny(400, f"the request carries {what}: send one",
                       reason="token_ambiguous",
                       headers=[(b"www-authenticate", b'Bearer error="invalid_request"')])  # fmt: skip
        return tokens[0] if tokens else None

    @staticmethod
    def _copies(sources: list[_Reading], context: HandshakeContext) -> tuple[list[str], int]:
        """The token copies ``sources`` find (query and subprotocol ones taken out of the upstream
        request), and how many values of a token header carry a credential in another scheme."""
        request = context.request
        found: list[str] = []
        foreign = 0  # values of a token header in another scheme: credentials the upstream may read
        for source, header, scheme in sources:
            if header:
                for value in request.header_values(header):
                    if scheme:
                        # The scheme ends at a space or a tab: a tab-separated token is read (and checked)
                        # as a lenient upstream reads it; "Bearer:x" or "Basic x" is another credential.
                        given, *rest = _BLANKS.split(value.strip(" \t"), maxsplit=1)
                        value = rest[0] if rest else ""
                        if given.lower() != scheme:
                            foreign += 1
                            continue
                    found.append(value.strip())
            elif source.query is not None:  # every spelling of the name (names.fold_name), as for a cookie
                values = request.query_copies(source.query)
                if values:
                    context.upstream.remove_query(source.query)
                    found += values
            elif source.cookie is not None:
                found += request.cookie_copies(source.cookie)
            elif source.subprotocol is not None:
                for offered in request.subprotocols:
                    if offered.startswith(source.subprotocol) and len(offered) > len(source.subprotocol):
                        context.upstream.remove_subprotocol(offered)
                        found.append(offered[len(source.subprotocol) :])
        return found, foreign

    def _cached(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before (a copy, its times checked now), or None when it must
        be verified; raises ``HandshakeDenied`` for a token too large, or one whose time is up."""
        if len(token) > _MAX_TOKEN:
            raise _unauthorized("the token is too large", "token_invalid")
        cache = self.cache
        if cache is None or len(token) > MAX_CACHED_TOKEN:
            return None
        digest = token_digest(token)
        claims = cache.get(digest, self.jwks.current_generation() if self.jwks is not None else 0)
        if claims is None:
            return None
        problem = time_problem(claims, self.clock(), self.settings.clock_skew)
        if problem is not None:
            cache.discard(digest)
            raise _unauthorized(*problem)
        return claims

    async def _decode_and_keep(self, token: str) -> dict[str, Any]:
        """The claims of a token not in the cache, verified (:meth:`_decode`), then kept when it may be."""
        cache = self.cache if len(token) <= MAX_CACHED_TOKEN else None
        if cache is None:
            return await self._decode(token)
        # The key set's generation before the checks: a refresh meanwhile makes the entry a stale one.
        generation = self.jwks.current_generation() if self.jwks is not None else 0
        claims = await self._decode(token)
        cache.put(token_digest(token), claims, generation)
        return claims

    async def _decode(self, token: str) -> dict[str, Any]:
        """The payload of a token after every check (signature, types, times, issuer, audience)."""
        self.verifications += 1
        try:
            # One parse for the header and the payload (as jwt.get_unverified_header and jwt.decode
            # without verification would each make, with the same checks).
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
            header = unverified["header"]
            # Types first, before pyjwt's int() makes "1767000000" or true a time: checking the
            # unverified payload can only refuse more, never admit.
            payload = unverified["payload"]
            problem = numeric_date_problem(payload) or depth_problem(payload) or surrogate_problem(payload)
        except jwt.InvalidTokenError:
            raise _unauthorized("the token is malformed", "token_invalid") from None
        if problem is not None:
            raise _unauthorized(problem, "token_invalid")
        if "crit" in header:
            # RFC 7515 §4.1.11: a token naming critical extensions the recipient does not implement
            # MUST be refused, and the gateway implements none. pyjwt before 2.12 ignored "crit" (the
            # floor this package allows): such a token, whose issuer said "do not accept me unless you
            # understand this", was accepted.
            raise _unauthorized("the token names critical header extensions (crit), which the gateway does not "
                                "support", "token_invalid")  # fmt: skip
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _unauthorized("the token's algorithm is not accepted", "token_algorithm")
        keys = await self._keys(alg, kid if isinstance(kid, str) else None)
        if not keys:
            raise _unauthorized("no key matches the token", "token_unknown_key")
        s = self.settings
        error: jwt.InvalidTokenError | None = None
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=s.audience,
                    issuer=s.issuer,
                    leeway=s.clock_skew,
                    options=self.options,
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                error = exc  # another key with the same kid (or none) may verify it
            except jwt.InvalidTokenError as exc:
                error = exc
                break
        raise _unauthorized(_explain(error), "token_expired" if isinstance(error, jwt.ExpiredSignatureError)
                            else "token_invalid")  # fmt: skip

    async def _keys(self, alg: str, kid: str | None) -> list[Any]:
        if alg in HMAC:
            return [self.secret] if self.secret is not None else []
        keys = [key for key in self.public_keys if key_fits(key, alg)]
        if self.jwks is not None:
            try:
                fetched = await self.jwks.keys(kid, alg)
            except KeysUnavailable as exc:
                if not keys:  # the detail is for the log and the span: a 5xx body does not carry it
                    raise deny(
                        503,
                        f"the token's signing keys cannot be fetched right now ({exc})",
                        reason="jwks_unavailable",
                        headers=[(b"retry-after", b"5")],
                    ) from None
                return keys
            if kid is None and len(fetched) > self.settings.jwks_keys_without_kid:
                # Each key tried is a signature check on the event loop (ES512: ~0.6 ms): an issuer's set
                # of many keys must not multiply what one forged, kid-less token costs.
                if not keys:
                    raise _unauthorized(f"the token names no key (kid), and the key set has {len(fetched)} "
                                        f"keys for {alg}", "token_unknown_key")  # fmt: skip
                fetched = []  # the configured keys only
            keys.extend(fetched)
        return keys


_Reading = tuple[TokenSource, str, str]
"""A token source with its header's name and scheme in lower case (the scheme "" when the value is the
token alone; both "" for other sources): worked out once, when the policy is built."""


def _readings(sources: list[TokenSource]) -> list[_Reading]:
    readings: list[_Reading] = []
    for source in sources:
        header = source.header.lower() if source.header is not None else ""
        scheme = source.scheme if source.scheme is not None else ("Bearer" if header == "authorization" else "")
        readings.append((source, header, scheme.lower()))
    return readings


def _rfc6750_sources_not_in(sources: list[TokenSource]) -> list[TokenSource]:
    """RFC 6750's places for a bearer token (§2.1 ``Authorization: Bearer``, §2.3 ``access_token``
    in the query) that ``sources`` do not name: upstreams read a token there whatever the policy reads."""
    implicit: list[TokenSource] = []
    if not any(s.header is not None and s.header.lower() == "authorization" for s in sources):
        implicit.append(TokenSource(header="Authorization"))
    if not any(s.query is not None and fold_name(s.query) == "access_token" for s in sources):
        implicit.append(TokenSource(query="access_token"))
    return implicit


def _key_warnings(s: ValidateJwtSettings) -> list[tuple[str, str]]:
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


def _loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


class _Claims:
    """Claim checks' view of a token's claims (``{jwt.*}`` only)."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        value: object = self.claims if namespace == "jwt" else None
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


_TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253402300799
"""The last second of the year 9999: a later ``exp`` is treated as a forgery, not as "never expires"."""


def numeric_date_problem(claims: dict[str, Any]) -> str | None:
    """Why a registered time claim is not an RFC 7519 NumericDate, or None if all present ones are.

    pyjwt converts with ``int()``, so ``"1767000000"`` and ``true`` pass its checks; this does not:
    a JSON number (not a bool), finite, from 0 to :data:`MAX_NUMERIC_DATE`.
    """
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"the token's '{name}' claim is not a number"
        if not (math.isfinite(value) and 0 <= value <= MAX_NUMERIC_DATE):
            return f"the token's '{name}' claim is out of range"
    return None


MAX_CLAIM_DEPTH = 32
"""Levels of objects and arrays a token's payload may nest (the payload itself is one)."""


def depth_problem(claims: dict[str, Any]) -> str | None:
    """Why a payload is refused for nesting deeper than :data:`MAX_CLAIM_DEPTH`, or None.

    A signed payload nested hundreds deep decodes, then broke whatever walks it recursively (the
    verified-token cache's copy, a template writing the claim) with a ``RecursionError``; no issuer
    nests claims that deep."""
    if nests_deeper(claims, MAX_CLAIM_DEPTH):
        return f"the token's payload nests deeper than {MAX_CLAIM_DEPTH} levels"
    return None


def surrogate_problem(claims: dict[str, Any]) -> str | None:
    """Why a payload is refused for a lone surrogate (``"\\ud800"``) in a string or a name, or None.

    Python's JSON parser keeps one, which UTF-8 cannot encode: templated into the upstream URL
    (``rewrite-uri``, ``set-query-parameter``) a signed one failed the handshake with a 500 and a
    traceback. Readers disagree on it (Go reads U+FFFD), as message policies refuse it in a message."""
    stack: list[object] = [claims]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and LONE_SURROGATE.search(item):
                return "the token's payload holds a lone surrogate (\\uD800-\\uDFFF), which is not text"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _explain(error: jwt.InvalidTokenError | None) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is for another audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token is from another issuer"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the '{error.claim}' claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature is not valid"
    return "the token is not valid"


def _unauthorized(detail: str, reason: str, error: str | None = "invalid_token") -> HandshakeDenied:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return deny(401, detail, reason=reason, headers=[(b"www-authenticate", challenge.encode())])


class CheckHeaderSettings(PolicySettings):
    """``check-header``: a request header must be present and, if given, match values or a pattern."""

    header: HeaderName = Field(description="Header name.")
    values: list[str] = Field(default_factory=list, description="Accepted values (any of).")
    pattern: str | None = Field(default=None, description="A regular expression (RE2) the whole value must match.")
    ignore_case: bool = False
    failed_status: Literal[400, 401, 403] = 401
    message: str | None = Field(default=None, description="Problem detail when the check fails.")


@register_policy("check-header")
class CheckHeader:
    Settings = CheckHeaderSettings

    def __init__(self, settings: CheckHeaderSettings, env: PolicyEnv) -> None:
        self.name = "check-header"
        self.settings = settings
        self.pattern: Pattern | None = None
        if settings.pattern is not None:
            try:
                self.pattern = compile_regex(settings.pattern, ignore_case=settings.ignore_case)
            except ValueError as exc:
                raise PolicyProblem("pattern", str(exc)) from None
        self.values = {v.lower() if settings.ignore_case else v for v in settings.values}

    async def apply(self, context: HandshakeContext) -> None:
        s = self.settings
        # Each copy of a repeated header on its own: the upstream gets them all and may read any one, so
        # "acme" then "evil" must not pass as "acme, evil" would pass a pattern such as acme.*
        copies = context.request.header_values(s.header.lower())
        ok = bool(copies) and all(self._passes(value) for value in copies)
        if not ok:
            detail = s.message or f"header {s.header} is missing or has a value that is not accepted"
            raise deny(s.failed_status, detail, reason="header_check")

    def _passes(self, value: str) -> bool:
        if self.values and (value.lower() if self.settings.ignore_case else value) not in self.values:
            return False
        return self.pattern is None or self.pattern.fullmatch(value) is not None


__all__ = ["MAX_NUMERIC_DATE", "CheckHeader", "ClaimCheck", "TokenSource", "ValidateJwt", "numeric_date_problem"]
