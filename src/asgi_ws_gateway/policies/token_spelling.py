"""The spellings of one signed JWT: what the verified-token cache must count as one token.

A JWT's signature covers its header and payload as written, not its signature segment: the same
signature may be written several ways that all verify, and a client holding one token could send each
as a new token (a cache miss, a full check, a new entry pushing another client's out). What pyjwt
verifies alike:

* the segment padded with ``=`` to a multiple of four characters (pyjwt 2.15 reads ``==`` or ``=`` so;
  before 2.14 it also read any number of ``=``, characters outside the alphabet, ``+`` and ``/``, and
  unused low bits set in the last character, as the same bytes);
* an ECDSA signature (``ES256``, ``ES256K``, ``ES384``, ``ES512``) as ``(r, s)`` and as ``(r, n - s)``:
  OpenSSL verifies both (JWS makes no low-``s`` rule, and issuers sign in either half).

The cache keys a token without its padding (:func:`unpadded`), looks a missed ECDSA token up again as
its other ``s`` (:func:`other_ecdsa_spelling`), and keeps only tokens whose signature is written as an
encoder writes it (:func:`written_by_an_encoder`): what an older pyjwt reads past is verified on each
use, never kept. A spelling that finds another's entry verifies exactly as that one did (the same
signing input, the same signature bytes, or the ECDSA equivalent under the same key).
"""

from __future__ import annotations

import base64
import binascii
import json

_ORDERS = {  # SEC 2's P-256, secp256k1, P-384, P-521
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "ES384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    "ES512": int("01" + "FF" * 32 + "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16),
}  # fmt: skip
"""The group order of each ECDSA algorithm's curve; a JWS signature is ``r || s``, each as long as the order."""
_ECDSA_SEGMENTS = frozenset((8 * ((order.bit_length() + 7) // 8) + 2) // 3 for order in _ORDERS.values())
"""The lengths of their signatures in unpadded base64url (86, 128, 176 characters)."""
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def unpadded(token: str) -> str | None:
    """``token`` with the ``=`` padding of its signature taken off (the token itself when it has none); None
    when that padding is not the one or two ``=`` that make the segment a multiple of four characters."""
    if not token.endswith("="):
        return token  # as issuers write it: nothing to build
    signing_input, dot, segment = token.rpartition(".")
    bare = segment.rstrip("=")
    if not dot or not bare or len(segment) % 4 or len(segment) - len(bare) > 2:
        return None
    return f"{signing_input}.{bare}"


def written_by_an_encoder(token: str) -> bool:
    """Whether the signature segment is base64url as an encoder writes its bytes, padded or not: no
    character outside the alphabet, no unused bit set in the last one, no more padding than
    :func:`unpadded` takes off, something at all."""
    bare = unpadded(token)
    if bare is None:
        return False
    segment = bare.rpartition(".")[2]
    return _signature(segment) is not None


def other_ecdsa_spelling(token: str) -> str | None:
    """The token as ``(r, n - s)`` for its ECDSA signature ``(r, s)``, unpadded: it verifies exactly
    when ``token`` does. None for any other token (its header's ``alg`` decides: an HS512 or EdDSA
    signature is 64 bytes too, and flipping one would make a forgery's spelling a valid token's)."""
    bare = unpadded(token)
    if bare is None:
        return None
    signing_input, dot, segment = bare.rpartition(".")
    if not dot or len(segment) not in _ECDSA_SEGMENTS:
        return None  # an RSA or HS256 signature, without reading the header
    order = _ORDERS.get(_algorithm(signing_input) or "")
    signature = _signature(segment) if order is not None else None
    if order is None or signature is None or len(signature) != 2 * ((order.bit_length() + 7) // 8):
        return None
    half = len(signature) // 2
    s = int.from_bytes(signature[half:])
    if not 0 < s < order:
        return None  # verifies under no key
    other = signature[:half] + (order - s).to_bytes(half)
    return f"{signing_input}.{base64.urlsafe_b64encode(other).rstrip(b'=').decode()}"


def _signature(segment: str) -> bytes | None:
    """The bytes of an unpadded base64url segment written as an encoder writes them, else None."""
    padded = segment + "=" * (-len(segment) % 4)
    try:
        written = padded.encode("ascii")
        signature = binascii.a2b_base64(written.translate(_TO_STANDARD), strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    if not signature or binascii.b2a_base64(signature, newline=False).translate(_TO_URLSAFE) != written:
        return None  # + or / (read as - and _), unused bits set: not how an encoder writes these bytes
    return signature


def _algorithm(signing_input: str) -> str | None:
    """The ``alg`` of the header segment as pyjwt reads it (``json.loads``, the last of repeated names), or
    None. Remembered per header segment: an issuer's tokens share a few (a JSON parse was ~4 us)."""
    header_segment = signing_input.partition(".")[0]
    if header_segment in _ALGORITHMS:
        return _ALGORITHMS[header_segment]
    try:
        header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        header = None
    alg = header.get("alg") if isinstance(header, dict) else None
    if len(_ALGORITHMS) >= _ALGORITHMS_KEPT:
        _ALGORITHMS.clear()  # segments a client made up: forgotten, the issuers' read again at their next use
    _ALGORITHMS[header_segment] = alg if isinstance(alg, str) else None
    return _ALGORITHMS[header_segment]


_ALGORITHMS: dict[str, str | None] = {}
_ALGORITHMS_KEPT = 64


__all__ = ["other_ecdsa_spelling", "unpadded", "written_by_an_encoder"]
