"""A JWKS listing many keys under one ``kid``: a forged token naming it is checked against a few only.

An attack pass served the gateway a JWKS (real HTTP, :func:`~asgi_ws_gateway.policies.jwks.fetch_url`)
of 256 ES512 keys, every one ``kid: "k"``: a token naming ``k`` with a made-up signature was checked
against all 256, 138 ms of the event loop per handshake (a kid-less token was already held to
``jwks_keys_without_kid``). An identity provider lists a key once; a ``kid`` now keeps its first
``KEYS_PER_KID`` keys (of the algorithms that fit it), the rest skipped with the JWKS WARNING.
"""

from __future__ import annotations

import logging

import pytest

from asgi_ws_gateway.policies.jwks import KEYS_PER_KID, JwksCache, fetch_url
from support.jwts import JwksServer, signing_key


async def test_a_kid_listed_many_times_keeps_only_its_first_keys(caplog: pytest.LogCaptureFixture) -> None:
    genuine = signing_key("ES256", "k")
    copies = [signing_key("ES256", "k") for _ in range(63)]
    with JwksServer(genuine, *copies, signing_key("ES256", "other")) as server:
        cache = JwksCache(server.url, fetch_url)
        with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway.policies.jwks"):
            keys = await cache.keys("k", "ES256")
            other = await cache.keys("other", "ES256")
    assert len(keys) == KEYS_PER_KID, len(keys)  # 64 signature checks for one forged token, before
    assert keys[0].public_numbers() == genuine.private.public_key().public_numbers()  # document order
    assert len(other) == 1
    assert f"60 key(s) skipped, the others in use: 'k': more than {KEYS_PER_KID} keys under this kid" in caplog.text
