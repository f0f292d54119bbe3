"""Who a JWT is for: its ``sub``, or the client a client-credentials token names instead.

A token of the OAuth 2.0 client-credentials grant often has no ``sub``: the principal is the client,
named by ``azp`` (OpenID Connect), ``client_id`` (RFC 9068, Keycloak, Okta) or ``appid`` (Entra ID
v1). Two such tokens of one issuer are not one principal because both lack a ``sub``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUBJECT_CLAIMS = ("sub", "azp", "client_id", "appid")
"""The claims naming a token's principal, the first present one deciding."""

Subject = tuple[str, str | int]
"""The claim naming the principal and its value (``("azp", "billing-service")``)."""


def token_subject(claims: Mapping[str, Any] | None) -> Subject | None:
    """The first of :data:`SUBJECT_CLAIMS` holding a non-empty string or an integer, with its name; None
    when the token names no principal (an empty ``sub``, or one that is an object, names none).

    The claim's name is part of the answer: ``{"client_id": "alice"}`` is not ``{"sub": "alice"}``.
    """
    if not claims:
        return None
    for name in SUBJECT_CLAIMS:
        value = claims.get(name)
        if (isinstance(value, str) and value) or (isinstance(value, int) and not isinstance(value, bool)):
            return name, value
    return None


__all__ = ["SUBJECT_CLAIMS", "Subject", "token_subject"]
