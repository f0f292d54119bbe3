"""Who may use the management API: the admin token, its check, and which refusals count as guesses.

The admin token opens every operation of the API: one no client could send is refused (``ValueError``),
one that is short or public is warned about, and only a request that presented credentials counts
against the lockout (:mod:`.lockout`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request

from .client_endpoint import token_problem

logger = logging.getLogger(__name__)

Auth = Callable[[Request], Awaitable[bool]]
"""Decides whether a request may use the management API (True) or gets 401 (False)."""


SHORT_TOKEN = 16
"""An admin token shorter than this is warned about: a list of likely words finds it despite the lockout."""
EXAMPLE_ADMIN_TOKEN = "dev-admin-token-for-the-example"
"""The example application's token when none is set: printed by it and in the README, so public."""


MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def weak_token_problem(token: str) -> str | None:
    """Why ``token`` is guessable, if it is: short (the lockout counts per address and per worker, so a
    guesser with a few dozen addresses tries a thousand a minute), or published."""
    if token == EXAMPLE_ADMIN_TOKEN:
        return "the admin token is the example's, which is public"
    if len(token) < SHORT_TOKEN:
        return f"the admin token is {len(token)} characters: guessable"
    return None


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` cannot work as an admin token, if it cannot: a header carries visible ASCII only,
    so a space, a control or a non-ASCII character made a token no client could ever send."""
    if not token:
        return "the admin token is empty"
    if token_problem(token) is not None:  # the rule the management client checks before sending
        return "the admin token must be visible ASCII characters (no space): no client could send this one"
    return None


def token_auth(token: str) -> Auth:
    """Accept ``Authorization: Bearer <token>`` (compared in constant time).

    Raises:
        ValueError: the token is one no client could send (:func:`admin_token_problem`).
    """
    if (problem := admin_token_problem(token)) is not None:
        raise ValueError(problem)
    if (weak := weak_token_problem(token)) is not None:
        logger.warning("%s; use %d or more random characters (%s)", weak, SHORT_TOKEN, MAKE_TOKEN)
    return _BearerToken(token.encode())


class _BearerToken:
    """:func:`token_auth`'s check; the lockout counts only the requests that present a token to it."""

    def __init__(self, expected: bytes) -> None:
        self._expected = expected

    async def __call__(self, request: Request) -> bool:
        # Exactly one Authorization: of two, this read the first while a proxy in front may judge the last.
        presented = request.headers.getlist("authorization")
        if len(presented) != 1:
            return False
        scheme, _, given = presented[0].partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._expected)


def guessed(auth: Auth, request: Request) -> bool:
    """Whether a refused request counts as a guess: it presented a token, or ``auth`` is one whose
    credentials the gateway cannot see (a cookie, a certificate). A request without any
    ``Authorization`` guesses nothing, and any page can make a browser send one."""
    return not isinstance(auth, _BearerToken) or "authorization" in request.headers


__all__ = [
    "EXAMPLE_ADMIN_TOKEN",
    "MAKE_TOKEN",
    "SHORT_TOKEN",
    "Auth",
    "admin_token_problem",
    "guessed",
    "token_auth",
    "weak_token_problem",
]
