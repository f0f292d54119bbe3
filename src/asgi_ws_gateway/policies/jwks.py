"""Verification keys for ``validate-jwt``: a cached JWKS, PEM public keys, which algorithm fits which key.

The JWKS is fetched on first use and then kept:

* when it is older than ``refresh_interval``, a refresh starts in the background (the handshake
  uses the keys it has);
* a token whose ``kid`` is unknown (or whose ``kid`` names a key of another algorithm) triggers a
  refresh, at most once per ``min_refresh_interval`` and never twice within
  :data:`KID_REFRESH_FLOOR` (a stream of tokens with made-up ``kid`` values cannot hammer the
  identity provider, whatever the setting); one arriving while a fetch is under way waits for it;
* a failed refresh keeps the cached keys (an outage of the identity provider does not lock
  everybody out), and is tried again :data:`RETRY_INTERVAL` later (or at ``refresh_interval``, if
  shorter), not on the next handshake; only with no keys at all does validation fail, with 503;
* ``timeout`` bounds a whole fetch, not each read: a host that answers a byte at a time fails it
  on time, and its connection is closed then (the fetch runs on the event loop, not in a thread);
* redirects are not followed: the keys come from the configured URL only;
* no address in the file's ``upstream_networks.deny`` is connected to (:mod:`.jwks_fetch`);
* ``generation`` counts the key sets fetched: a refresh whose keys differ in any way (a ``kid``
  dropped, added or bound to another key) starts a new one, which retires every token verified
  under an older one (``validate-jwt``'s token cache).

Symmetric (``oct``) keys in a JWKS are ignored: HS algorithms only ever use the configured secret. So are
keys for anything but verifying signatures (``use`` other than ``sig``, ``key_ops`` without ``verify``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from jwt import PyJWK

from .._context import current_handshake
from ..log_throttle import OutageLog
from ..redact import redact_url
from .jwks_failures import JwksError, jwks_failed
from .jwks_fetch import fetch_url

logger = logging.getLogger(__name__)

Fetch = Callable[[str, float], Awaitable[bytes]]
"""``fetch(url, timeout) -> body``; raises on any failure (see :func:`.jwks_fetch.fetch_url`)."""

HMAC = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)
_EC_CURVES = {"ES256": "secp256r1", "ES256K": "secp256k1", "ES384": "secp384r1", "ES512": "secp521r1"}
MAX_JWKS_KEYS = 256
"""Key entries a JWKS document may list. Identity providers publish a handful; 1 MiB holds ~6,000 EC
keys, whose parsing held the event loop ~0.3 s per fetch (every ``jwks_min_refresh_interval`` when
clients send unknown ``kid`` values), and each handshake's key lookup scanned them all (~0.75 ms)."""
KEYS_PER_KID = 4
"""Keys kept under one ``kid`` (the first listed): a token naming it is checked against each that fits
its algorithm. An issuer lists a key once; a JWKS of 256 ES512 keys all named ``k`` made one forged
token naming ``k`` 256 signature checks, 138 ms of the event loop per handshake."""
RETRY_INTERVAL = 1.0
"""Seconds between attempts while no key was ever fetched, and after a failed refresh: a failed
background refresh was tried again by the next handshake, so that while the identity provider
answered errors every handshake was one more request to it."""
KID_REFRESH_FLOOR = 1.0
"""Least seconds between two refreshes caused by tokens, whatever ``min_refresh_interval`` says: at 0,
each token with a made-up ``kid`` was one JWKS fetch (a client made the gateway a 1:1 reflector of
its requests against the identity provider). A rotated key is still taken at once, by the first
token naming it; a second rotation within a second waits that second."""

MIN_RSA_BITS = 2048
"""RFC 7518 §3.3 and §3.5: an RS* or PS* key MUST be 2048 bits or larger. A 1024-bit one (from the JWKS
or ``public_keys``) verified tokens, pyjwt only warning in no log: whoever factors it signs any token."""


class KeysUnavailable(Exception):
    """No verification key could be obtained (the JWKS was never fetched successfully)."""


def key_fits(key: Any, alg: str) -> bool:
    """Whether a public key object may verify a token signed with ``alg`` (no cross-family use)."""
    if isinstance(key, rsa.RSAPublicKey):
        return alg[:2] in ("RS", "PS")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_CURVES.get(alg) == key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return alg == "EdDSA"
    return False


def weak_key_problem(key: Any) -> str | None:
    """Why a public key is too weak to verify tokens with, or None."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key_size} bits (RFC 7518: at least {MIN_RSA_BITS})"
    return None


_PUBLIC_KEY_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def load_public_key(pem: str | bytes) -> Any:
    """A public key from PEM text (a public key or a certificate); raises ValueError."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    key = load_pem_public_key(data)
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise ValueError("unsupported public key type")
    return key


class JwksCache:
    """The keys of one JWKS URL, shared by the policies that name it with the same settings.

    Args:
        url: the JWKS document's URL.
        fetch: how to GET it (tests pass their own).
        refresh_interval: seconds after which keys are refreshed in the background.
        min_refresh_interval: least seconds between refreshes triggered by unknown ``kid`` values
            (never less than :data:`KID_REFRESH_FLOOR` between two of them, even at 0).
        timeout: seconds one fetch may take.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        url: str,
        fetch: Fetch,
        *,
        refresh_interval: float = 600.0,
        min_refresh_interval: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        # What the fetch's span (url.full) and log lines show of the URL: no userinfo, no query value
        # (an issuer's ?api_key=, a password in http://user:password@...).
        self.shown_url = redact_url(url)
        self._fetch = fetch
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.clock = clock
        self.fetches = 0
        self.generation = 0
        self._fingerprint: tuple[tuple[str | None, str | None, bytes], ...] = ()
        self._keys: list[tuple[str | None, str | None, Any]] = []  # (kid, alg or None, key)
        self._fetched_at: float | None = None
        self._attempted_at = float("-inf")
        self._kid_refreshed_at = float("-inf")  # when a token's unknown kid last caused a refresh
        self._inflight: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Failed fetches since the last success: logged as an outage starts, then once per interval (one a
        # second, per worker, while handshakes came: 3,600 lines an hour).
        self._failed = 0
        self._failures_log = OutageLog(clock=clock)

    async def keys(self, kid: str | None, alg: str) -> list[Any]:
        """Keys that may verify a token with this ``kid`` (None: any) and ``alg``.

        Raises:
            KeysUnavailable: nothing was ever fetched and fetching fails now.
        """
        now = self.clock()
        if self._fetched_at is None:
            if now - self._attempted_at >= RETRY_INTERVAL or self._inflight is not None:
                await self._refresh()
            if self._fetched_at is None:
                # As written: the denial detail is redacted wherever it is shown (span, body, log line).
                raise KeysUnavailable(f"no keys from {self.url}")
        else:
            self._refresh_if_stale(now)
        found = self._select(kid, alg)
        if not found and kid is not None and self._refresh_for_unknown_kid(now):
            await self._refresh()  # perhaps the keys were rotated
            found = self._select(kid, alg)
        return found

    def _refresh_for_unknown_kid(self, now: float) -> bool:
        """Whether a token naming no key we hold may refresh the keys now: join a fetch under way (it
        costs the identity provider nothing more), else one per ``min_refresh_interval`` after any
        fetch and per :data:`KID_REFRESH_FLOOR` after the last one a token caused."""
        if self._joinable():
            return True
        if now - self._attempted_at < self.min_refresh_interval or now - self._kid_refreshed_at < KID_REFRESH_FLOOR:
            return False
        self._kid_refreshed_at = now
        return True

    def _joinable(self) -> bool:
        return self._inflight is not None and self._inflight.get_loop() is asyncio.get_running_loop()

    def current_generation(self) -> int:
        """The key set's generation; like :meth:`keys`, starts a background refresh when it is stale
        (a token cache that skips :meth:`keys` must not keep a revoked key alive)."""
        if self._fetched_at is not None:
            self._refresh_if_stale(self.clock())
        return self.generation

    def _refresh_if_stale(self, now: float) -> None:
        assert self._fetched_at is not None
        if self._inflight is not None or now - self._fetched_at < self.refresh_interval:
            return
        # After a failed refresh, not at once: the keys stay stale and every handshake asked again.
        if now - self._attempted_at >= min(self.refresh_interval, RETRY_INTERVAL):
            self._start_refresh()

    def _select(self, kid: str | None, alg: str) -> list[Any]:
        return [
            key
            for key_id, key_alg, key in self._keys
            if (kid is None or key_id == kid) and (key_alg is None or key_alg == alg) and key_fits(key, alg)
        ]

    def _start_refresh(self) -> None:
        loop = asyncio.get_running_loop()
        future = self._inflight = loop.create_future()
        self._task = loop.create_task(self._do_refresh(future))

    async def _refresh(self) -> None:
        # The fetch runs in a task of its own, every handshake waiting on it shielded: run in the task
        # of the handshake that started it, it was cancelled with it (its client gone, its
        # policy_timeout): the handshakes that had joined it found no keys (503), and every handshake
        # for the next second too, without a fetch (RETRY_INTERVAL); a refresh for a rotated key's new
        # kid, cut so, kept that key out for min_refresh_interval.
        if self._inflight is None or not self._joinable():
            self._start_refresh()
        assert self._inflight is not None
        await asyncio.shield(self._inflight)

    async def _do_refresh(self, future: asyncio.Future[None]) -> None:
        self._attempted_at = self.clock()
        self.fetches += 1
        handshake = current_handshake()  # set when a handshake's unknown kid or first use triggered this
        stage: JwksError = "fetch"
        try:
            if handshake is None:
                body = await self._fetch_within_timeout()
            else:
                with handshake.io_span("jwks fetch", attributes={"url.full": self.shown_url}):
                    body = await self._fetch_within_timeout()
            stage = "invalid"
            keys = parse_jwks(body)
        except Exception as exc:
            self._fetch_failed("timeout" if isinstance(exc, TimeoutError) else stage, exc)
        else:
            if self._failed:
                logger.info("JWKS %s fetched again, after %d failed fetch(es)", self.shown_url, self._failed)
                self._failed, self._failures_log = 0, OutageLog(clock=self.clock)  # the next outage said at once
            fingerprint = tuple((kid, alg, key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
                                for kid, alg, key in keys)  # fmt: skip
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                self.generation += 1
            self._keys = keys
            self._fetched_at = self.clock()
        finally:
            if self._inflight is future:
                self._inflight = None
            if not future.done():
                future.set_result(None)

    def _fetch_failed(self, error: JwksError, exc: Exception) -> None:
        jwks_failed(error)
        self._failed += 1
        count = self._failures_log.event()
        if not count:
            return
        more = f" ({count - 1} more since the last such line)" if count > 1 else ""
        if self._keys:
            logger.warning("JWKS %s refresh failed (%s); keeping %d cached key(s)%s",
                           self.shown_url, exc, len(self._keys), more)  # fmt: skip
        else:
            logger.warning("JWKS %s fetch failed: %s%s", self.shown_url, exc, more)

    async def _fetch_within_timeout(self) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):  # whatever the fetch function does
                return await self._fetch(self.url, self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer within {self.timeout:g} s") from None


def parse_jwks(body: bytes) -> list[tuple[str | None, str | None, Any]]:
    """``(kid, alg, public key)`` for each usable signing key of a JWKS document.

    A key that cannot be used is skipped, alone, with a WARNING naming it: one entry the gateway
    cannot read (a point off its curve, no ``kty``, an ``alg`` that is a list, a private key) used
    to fail the whole document. Then no token was admitted on a first fetch (503), and a refresh
    failed for as long as the issuer published that entry: the keys it had revoked meanwhile were
    trusted on, its new keys never seen. pyjwt raises more than ``PyJWKError`` on such input
    (``InvalidKeyError``, ``KeyError``, ``NotImplementedError``): every failure is the key's.
    """
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    if len(document["keys"]) > MAX_JWKS_KEYS:
        raise ValueError(f"the JWKS lists {len(document['keys'])} keys, more than {MAX_JWKS_KEYS}")
    keys: list[tuple[str | None, str | None, Any]] = []
    skipped: list[str] = []
    per_kid: dict[str, int] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        problem = _entry_problem(entry)
        if problem is None and isinstance(kid, str):
            per_kid[kid] = per_kid.get(kid, 0) + 1
            if per_kid[kid] > KEYS_PER_KID:
                problem = f"more than {KEYS_PER_KID} keys under this kid"
        if problem is None:
            try:
                key = PyJWK(entry).key
            except Exception as exc:  # pyjwt's parsing of a hostile entry: any failure is this key's alone
                problem = f"{type(exc).__name__}: {str(exc)[:200]!r}"  # quoted: the host's text, newlines too
            else:
                if not isinstance(key, _PUBLIC_KEY_TYPES):  # "d" given: anyone who reads the JWKS can sign
                    problem = "a private key (it is public now: the issuer should revoke it)"
                else:
                    problem = weak_key_problem(key)
        if problem == "skip":
            continue
        if problem is not None:
            skipped.append(f"{kid!r}: {problem}"[:300])
            continue
        keys.append((kid, alg, key))
    if skipped:
        logger.warning("JWKS: %d key(s) skipped, the others in use: %s", len(skipped), "; ".join(skipped[:3]))
    return keys


def _entry_problem(entry: dict[str, Any]) -> str | None:
    """Why a key entry is unusable before its key is read: ``"skip"`` for a key that is not for
    verifying signatures (silently, as ``use: enc`` is), a problem for a ``kid``, ``alg`` or ``key_ops``
    of the wrong type."""
    kid, alg, key_ops = entry.get("kid"), entry.get("alg"), entry.get("key_ops")
    if kid is not None and not isinstance(kid, str):
        return "its kid is not a string"
    if key_ops is not None:
        if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
            return "its key_ops is not a list of strings"
        if "verify" not in key_ops:
            # RFC 7517 §4.3: the operations the key is for. One published to encrypt to (its private
            # half another party's) verified tokens as a signing key did.
            return "skip"
    if alg is None:
        return None
    if not isinstance(alg, str):
        return "its alg is not a string"
    return None if alg in ASYMMETRIC else "skip"


__all__ = [
    "ASYMMETRIC",
    "HMAC",
    "KEYS_PER_KID",
    "KID_REFRESH_FLOOR",
    "MAX_JWKS_KEYS",
    "MIN_RSA_BITS",
    "RETRY_INTERVAL",
    "JwksCache",
    "KeysUnavailable",
    "fetch_url",
    "key_fits",
    "load_public_key",
    "parse_jwks",
    "weak_key_problem",
]
