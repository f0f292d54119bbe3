"""Authentication policies: ``validate-jwt`` and ``check-header``.

``validate-jwt`` refuses with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750): no ``error``
when no token was presented, ``error="invalid_token"`` when the token is malformed, badly signed,
expired, not yet valid, or for another issuer or audience; a failed claim check is 403
``error="insufficient_scope"``; with no verification key obtainable (the JWKS was never fetched)
it is 503. Denial details never contain the token.

Their pieces: the settings (:mod:`.jwt_settings`), where a request carries the token
(:mod:`.token_sources`), its own keys (:mod:`.jwt_keys`), the key sets (:mod:`.jwks`), what a verified
payload may hold (:mod:`.jwt_claims`), the verified-token cache (:mod:`.token_cache`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..config.fields import HeaderName
from ..errors import HandshakeDenied
from ..handshake.context import HandshakeContext
from ..safe_regex import Pattern, compile_regex
from ..templates import Condition, caseless_pattern, dig
from .base import PolicyEnv, PolicyProblem, PolicySettings, deny, register_policy
from .jwt_claims import ClaimsView, depth_problem, duplicate_name_problem, numeric_date_problem, surrogate_problem
from .jwt_settings import ValidateJwtSettings
from .token_cache import MAX_CACHED_TOKEN, TokenCache
from .token_sources import rfc6750_sources_not_in, token_copies, token_readings

if TYPE_CHECKING:
    import jwt

    from .jwks import HMAC, JwksCache, KeysUnavailable, key_fits


def _import_jwt() -> None:
    """Bind the names a validation reads at each handshake to PyJWT and :mod:`.jwks`, as the first
    ``validate-jwt`` is built. PyJWT (cryptography with it) and the key sets' HTTP client (httpx2) were
    imported by every ``run``, ``check`` and worker, most of whose configurations have no ``validate-jwt``
    (docs/performance.md, "Start-up")."""
    global jwt, HMAC, KeysUnavailable, key_fits
    import jwt

    from .jwks import HMAC, KeysUnavailable, key_fits


_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_MAX_TOKEN = 16 * 1024
_NUMBER = (int, float)
"""What a JSON number is once parsed (a tuple: ``int | float`` would build a union at each check)."""


@register_policy("validate-jwt")
class ValidateJwt:
    """Validates a JWT; sets ``context.claims`` and ``context.credential_expires_at``."""

    Settings = ValidateJwtSettings

    def __init__(self, settings: ValidateJwtSettings, env: PolicyEnv) -> None:
        _import_jwt()
        from .jwks import ASYMMETRIC
        from .jwt_keys import configured_public_keys, hmac_secret_problem, key_warnings, refresh_warnings, shared_secret

        self.name = "validate-jwt"
        self.settings = s = settings
        for i, alg in enumerate(s.algorithms):
            if alg not in HMAC | ASYMMETRIC:
                known = ", ".join(sorted(HMAC | ASYMMETRIC))
                raise PolicyProblem(("algorithms", i), f"'{alg}' is not an allowed algorithm ({known})")
        self.algorithms = frozenset(s.algorithms)
        self.secret = shared_secret(s)
        self.public_keys = configured_public_keys(s)
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
        for field, warning in [*key_warnings(s), *refresh_warnings(s)]:
            env.warn((field,), warning)
        for alg in sorted(self.algorithms & HMAC):
            if self.secret is None:
                raise PolicyProblem("algorithms", f"{alg} needs secret or secret_env")
            if len(self.secret) < _HMAC_MIN_BYTES[alg]:
                raise PolicyProblem("secret", f"{alg} needs a secret of at least {_HMAC_MIN_BYTES[alg]} bytes")
        if self.algorithms & HMAC and self.secret is not None and (problem := hmac_secret_problem(self.secret)):
            raise PolicyProblem("secret_env" if s.secret_env is not None else "secret", problem)
        self.sources = token_readings(s.token)
        self.rfc6750_sources = token_readings(rfc6750_sources_not_in(s.token))
        # Only the query's access_token (the usual case: the token in Authorization): nothing to find in
        # a request without a query, and that pass over the sources was ~3 k instructions a handshake.
        self.rfc6750_query_only = all(source.query is not None for source, _, _ in self.rfc6750_sources)
        # The default place alone (Authorization: Bearer; RFC 6750's other, the query, read when there is
        # one): a request's one such header is read here, without token_copies' loop over the sources.
        self.bearer_only = [(header, scheme) for _, header, scheme in self.sources] == [("authorization", "bearer")]
        self.checks: list[Condition] = [c.condition(f"jwt.{c.claim}") for c in s.claims]
        self.caseless_checks = [check for check in self.checks if check.caseless]
        self.options: Any = {"require": list(s.require), "verify_aud": s.audience is not None}
        self.clock = env.clock
        self.cache = TokenCache(s.cache.max_entries, s.cache.max_age) if s.cache.max_entries else None
        self.verifications = 0  # tokens whose signature was checked (cache misses); tests read it

    async def apply(self, context: HandshakeContext) -> None:
        token = self._bearer_token(context) if self.bearer_only else None
        if token is None:
            token = self._find_token(context)
            if token is None:
                raise _unauthorized("a bearer token is required", "token_missing", error=None)
        # A reconnecting client's token is in the cache: its checks run here, without the coroutines
        # a verification needs (the same checks, in the same order, as verify_token makes).
        claims = self._cached(token)
        if claims is None:
            claims = await self._decode_and_keep(token)
        if self.checks:
            self._check_claims(claims)
        context.claims = claims
        for check in self.caseless_checks:  # a claim matched case-insensitively: one key for its spellings
            value = dig(claims, check.ref.path)
            if isinstance(value, str):
                context.admit_caseless("jwt", check.ref.path, value)
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
        lookup = ClaimsView(claims)
        for check in self.checks:
            if not check.holds(lookup):
                raise deny(
                    403,
                    f"the token's claim '{check.ref.path[0]}' does not satisfy the API's requirement",
                    reason="token_claims",
                    headers=[(b"www-authenticate", b'Bearer error="insufficient_scope"')],
                )

    def _bearer_token(self, context: HandshakeContext) -> str | None:
        """The usual request's token, read as :meth:`_find_token` reads it when ``token:`` is the default: one
        ``Authorization`` header, ``Bearer`` and a token separated by spaces, no query. None for any other
        request (:meth:`_find_token` then reads it, or refuses it)."""
        request = context.request
        values = request.header_values("authorization")
        if len(values) != 1 or request.scope.get("query_string"):
            return None
        value = values[0].strip(" \t")
        if "\t" in value:
            return None
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

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
        found, foreign = token_copies(self.sources, context)
        # RFC 6750's places to read too (none, for a request without a query when only its access_token is)
        read_rfc6750 = self.rfc6750_sources and (
            not self.rfc6750_query_only or context.request.scope.get("query_string")
        )
        if len(found) == 1 and found[0] and not foreign and not read_rfc6750:
            return found[0]  # the usual request: one copy, nothing else to read (the checks below admit it)
        # The usual request carries one copy: taken as it is, not through the duplicates' sieve.
        tokens = found if len(found) == 1 and found[0] else list(dict.fromkeys(token for token in found if token))
        if tokens and read_rfc6750:
            unread, unread_foreign = token_copies(self.rfc6750_sources, context)
            if unread:
                tokens += [token for token in dict.fromkeys(unread) if token and token not in tokens]
            foreign += unread_foreign
        if len(tokens) > 1 or (tokens and foreign):
            what = f"{len(tokens)} different tokens" if len(tokens) > 1 else "a token and another credential"
            raise deny(400, f"the request carries {what}: send one",
                       reason="token_ambiguous",
                       headers=[(b"www-authenticate", b'Bearer error="invalid_request"')])  # fmt: skip
        return tokens[0] if tokens else None

    def _cached(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before (a copy, its times checked now), or None when it must
        be verified; raises ``HandshakeDenied`` for a token too large, or one whose time is up."""
        if len(token) > _MAX_TOKEN:
            raise _unauthorized("the token is too large", "token_invalid")
        cache = self.cache
        if cache is None or len(token) > MAX_CACHED_TOKEN:
            return None
        found = cache.find(token, self.jwks.current_generation() if self.jwks is not None else 0)
        if found is None:
            return None
        digest, claims, times = found
        problem = times.problem(self.clock(), self.settings.clock_skew)  # wall times: the wall clock
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
        cache.keep(token, claims, generation)
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
            problem = (
                numeric_date_problem(payload) or depth_problem(payload) or surrogate_problem(payload)
                or duplicate_name_problem(token)
            )  # fmt: skip
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
    ignore_case: bool = Field(
        default=False,
        description="Compare values caseless (Unicode casefold: STRASSE is straße) and match the pattern "
        "case-insensitively; limit keys then count every spelling admitted as one.",
    )
    failed_status: Literal[400, 401, 403] = 401
    message: str | None = Field(default=None, description="Problem detail when the check fails.")


@register_policy("check-header")
class CheckHeader:
    """A request header must be present and, if given, be one of ``values`` and match ``pattern``.

    A check that admits a value whatever its case (``ignore_case``, or a pattern with ``(?i)`` and no
    list) tells the context so (``admit_caseless``): a limit keyed by the header counts every spelling
    it admitted as one (``ACME``, ``Acme`` and ``acme`` were a counter each, 2^n for n letters). The
    upstream is sent the header as the client spelled it."""

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
        # casefold, as limit keys fold what is admitted caseless: with lower(), "ß" was not "SS" here
        self.values = {v.casefold() if settings.ignore_case else v for v in settings.values}
        self.place = ("header", (settings.header.lower(),))
        if settings.values:  # the list decides what is one value: a case-sensitive list, each as listed
            self.caseless = settings.ignore_case
        else:
            self.caseless = settings.pattern is not None and (
                settings.ignore_case or caseless_pattern(settings.pattern)
            )

    async def apply(self, context: HandshakeContext) -> None:
        s = self.settings
        # Each copy of a repeated header on its own: the upstream gets them all and may read any one, so
        # "acme" then "evil" must not pass as "acme, evil" would pass a pattern such as acme.*
        copies = context.request.header_values(s.header.lower())
        ok = bool(copies) and all(self._passes(value) for value in copies)
        if not ok:
            detail = s.message or f"header {s.header} is missing or has a value that is not accepted"
            raise deny(s.failed_status, detail, reason="header_check")
        if self.caseless:
            namespace, path = self.place
            for value in copies:
                context.admit_caseless(namespace, path, value)

    def _passes(self, value: str) -> bool:
        if self.values and (value.casefold() if self.settings.ignore_case else value) not in self.values:
            return False
        return self.pattern is None or self.pattern.fullmatch(value) is not None


__all__ = ["CheckHeader", "ValidateJwt"]
