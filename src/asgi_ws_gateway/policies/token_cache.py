"""The verified-token cache of ``validate-jwt``: a token's signature is checked once, not per handshake.

An entry is the payload of a token that passed every check once, keyed by the SHA-256 of the
token without its signature's padding (the token itself is not kept). The spellings of one token
that verify alike are one entry (:mod:`.token_spelling`): padded or not, an ECDSA signature's other
``s`` (looked up on a miss), and a token whose signature is not written as an encoder writes it is
never kept. It is used only while:

* it is younger than ``max_age`` (by the monotonic clock: the wall clock set back kept entries
  longer, set forward dropped them all), and the token has not expired (``exp`` plus the leeway,
  against the wall clock, whose time ``exp`` is: an expired token's entry refuses it and is discarded);
* the key set that verified it is unchanged (a JWKS refresh that drops or changes any key starts a
  new generation, and entries of older generations are discarded on their next use).

A hit skips the signature check and the decoding only: :func:`time_problem` re-checks ``exp``,
``nbf`` and ``iat`` against the clock on every use, and the policy re-runs everything else it does
per handshake (token location, claim checks). Only tokens that passed are stored; the least
recently used entry goes when ``max_entries`` is reached (every operation O(1)).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field

from ..strict_numbers import StrictNumbers
from .token_spelling import other_ecdsa_spelling, unpadded, written_by_an_encoder

MAX_CACHED_TOKEN = 4096
"""Longer tokens are verified on every use: they bound the memory one entry may take."""


class TokenCacheSettings(StrictNumbers):
    """``validate-jwt``'s ``cache``: ``{max_entries: 4096, max_age: 300}``; ``max_entries: 0`` turns it off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_entries: int = Field(
        default=4096, ge=0, le=1_000_000, description="Verified tokens kept (least recently used go first); 0: off."
    )
    max_age: float = Field(
        default=300.0, ge=0.01, le=86_400, description="Seconds a verified token is trusted before its signature is "
        "checked again (never past its exp)."
    )  # fmt: skip


def token_digest(token: str) -> bytes | None:
    """The cache key: SHA-256 of the token without its signature's padding; None when that padding is
    not what an encoder writes (such a token is never found nor kept).

    Keyed by the exact bytes, ``<token>==`` was another token, and so was the other ``s`` of an ECDSA
    signature (:meth:`TokenCache.find`): one client's ES256 token was four entries and four signature
    checks (as many as it liked with pyjwt before 2.14, which read any number of ``=``), pushing
    other clients' entries out."""
    bare = unpadded(token)
    return None if bare is None else _sha256(bare)


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    """Verified payloads by token digest, bounded (LRU) and aged; one per policy instance.

    Args:
        max_entries: entries kept at most (> 0).
        max_age: seconds an entry is used after its verification.
        clock: monotonic seconds, for the entries' age (``time.monotonic``; tests pass a fake one).
            A token's own times are wall times: the policy checks them (:class:`TokenTimes`).
    """

    def __init__(self, max_entries: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.clock = clock
        # claims, when they go (monotonic), the key set's generation, their times, and whether they are flat
        # (no dict or list inside: a hit copies them with dict.copy, without copy_claims looking at every value)
        self._entries: OrderedDict[bytes, tuple[dict[str, Any], float, int, TokenTimes, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, generation: int) -> tuple[dict[str, Any], TokenTimes] | None:
        """A copy of the payload verified for this digest under key-set ``generation`` and its times to
        check, or None."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        claims, expires_at, verified_in, times, flat = entry
        if verified_in != generation or self.clock() >= expires_at:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        # A copy: a policy that edits context.claims must not edit the next handshake's.
        copied: dict[str, Any] = claims.copy() if flat else copy_claims(claims)
        return copied, times

    def find(self, token: str, generation: int) -> tuple[bytes, dict[str, Any], TokenTimes] | None:
        """:meth:`get` for ``token`` in any of its spellings: its digest, a copy of its payload and its
        times, or None. An ECDSA token missed is looked up as its other ``s`` too (the same signature:
        an issuer's own spelling hits at once, a client's other one costs this look-up, not a check)."""
        if token.endswith("="):
            padded = token_digest(token)
            if padded is None:
                return None
            digest = padded
        else:  # as issuers write it: token_digest's usual case, without its two calls
            digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        entry = self._entries.get(digest)
        if entry is not None:  # get's hit, inline: the usual reconnecting client's
            claims, expires_at, verified_in, times, flat = entry
            if verified_in == generation and self.clock() < expires_at:
                self._entries.move_to_end(digest)
                # A copy: a policy that edits context.claims must not edit the next handshake's.
                return digest, claims.copy() if flat else copy_claims(claims), times
        found = self.get(digest, generation)  # a miss, or a stale entry (get discards it)
        if found is None:
            other = other_ecdsa_spelling(token)
            if other is None:
                return None
            digest = _sha256(other)  # unpadded already
            found = self.get(digest, generation)
        return None if found is None else (digest, *found)

    def keep(self, token: str, claims: dict[str, Any], generation: int) -> None:
        """:meth:`put` the verified ``token``'s payload, unless its signature is not written as an encoder
        writes it: what pyjwt before 2.14 read past (``!``, ``===``, unused bits) is checked on each use."""
        digest = token_digest(token)
        if digest is not None and written_by_an_encoder(token):
            self.put(digest, claims, generation)

    def put(self, digest: bytes, claims: dict[str, Any], generation: int) -> None:
        """Keep a verified payload (a copy) for ``max_age`` (its :class:`TokenTimes` refuse it past ``exp``)."""
        kept = copy_claims(claims)
        flat = type(kept) is dict and _IMMUTABLE.issuperset(map(type, kept.values()))
        self._entries[digest] = (kept, self.clock() + self.max_age, generation, TokenTimes(claims), flat)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def copy_claims(value: Any) -> Any:
    """A copy of a token's payload that shares nothing mutable with it: its dicts and lists copied,
    their immutable values shared. A payload is what ``json.loads`` makes; anything else is
    deep-copied (a copy per cache hit: ``copy.deepcopy`` cost ~10 times more for a flat payload)."""
    kind = type(value)
    if kind is dict:
        if _IMMUTABLE.issuperset(map(type, value.values())):  # the usual flat payload, checked in C
            return value.copy()
        return {key: copy_claims(item) for key, item in value.items()}
    if kind is list:
        if _IMMUTABLE.issuperset(map(type, value)):
            return value.copy()
        return [copy_claims(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


class TokenTimes:
    """A verified payload's ``iat``, ``nbf`` and ``exp`` as :func:`time_problem` reads them, read once
    when the token is kept (each hit then compares two numbers: ~3 k instructions less a handshake)."""

    __slots__ = ("expires", "not_before")

    def __init__(self, claims: dict[str, Any]) -> None:
        # iat and nbf refuse alike ("not valid yet"), so the later of the two is the one to compare.
        starts = [int(claims[name]) for name in ("iat", "nbf") if claims.get(name) is not None]
        self.not_before = max(starts) if starts else None
        exp = claims.get("exp")
        self.expires = int(exp) if exp is not None else None

    def problem(self, now: float, leeway: float) -> tuple[str, str] | None:
        """What :func:`time_problem` answers for the payload at ``now``."""
        if self.not_before is not None and self.not_before > now + leeway:
            return "the token is not valid yet", "token_invalid"
        if self.expires is not None and self.expires <= now - leeway:
            return "the token has expired", "token_expired"
        return None


def time_problem(claims: dict[str, Any], now: float, leeway: float) -> tuple[str, str] | None:
    """``(detail, reason)`` if ``exp``, ``nbf`` or ``iat`` refuses the token at ``now``, as pyjwt would.

    The claims were verified once, so each present one is a NumericDate (``numeric_date_problem``).
    """
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if iat is not None and int(iat) > now + leeway:
        return "the token is not valid yet", "token_invalid"
    if nbf is not None and int(nbf) > now + leeway:
        return "the token is not valid yet", "token_invalid"
    if exp is not None and int(exp) <= now - leeway:
        return "the token has expired", "token_expired"
    return None


__all__ = ["MAX_CACHED_TOKEN", "TokenCache", "TokenCacheSettings", "TokenTimes", "time_problem", "token_digest"]
