"""An identity provider's JWKS endpoint down: one WARNING as the outage starts, then one per interval, and a
metric (``ws_gateway.jwks.failures``), not a WARNING per fetch.

Before: each failed fetch was a WARNING, one a second per worker while handshakes came (19 lines in 20 s of
one ``run`` worker refusing tokens with 503; 3,600 lines an hour), and no metric counted them: with keys
cached, nothing at all did while the refresh failed and the keys grew stale.
"""

from __future__ import annotations

import json
import logging

import pytest

from asgi_ws_gateway.policies.jwks import JwksCache, KeysUnavailable
from asgi_ws_gateway.policies.jwks_failures import JWKS_FAILURES
from support.clock import Clock
from support.jwts import signing_key

OUTAGE = 60
"""Seconds of the outage: a fetch tried each second, as handshakes keep coming."""


async def test_an_outage_is_one_line_per_10_s_and_each_failed_fetch_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    up = False
    key = signing_key("ES256")

    async def fetch(url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        if not up:
            raise OSError("JWKS answered 503")
        return json.dumps({"keys": [key.jwk()]}).encode()

    cache = JwksCache("https://idp.example/jwks.json", fetch, clock=clock)
    counted = JWKS_FAILURES["fetch"]
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.policies.jwks")
    for _ in range(OUTAGE):
        with pytest.raises(KeysUnavailable):
            await cache.keys(None, "ES256")
        clock.now += 1
    assert JWKS_FAILURES["fetch"] - counted == OUTAGE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == OUTAGE // 10, warnings  # the first at once, then one per 10 s saying how many
    assert "fetch failed: JWKS answered 503" in warnings[0] and "more since the last such line" not in warnings[0]
    assert warnings[1].endswith("(9 more since the last such line)"), warnings[1]
    caplog.clear()
    up = True
    assert await cache.keys(None, "ES256")
    assert [r.getMessage() for r in caplog.records] == [
        f"JWKS https://idp.example/jwks.json fetched again, after {OUTAGE} failed fetch(es)"
    ]
    caplog.clear()
    up = False
    clock.now += cache.refresh_interval
    assert await cache.keys("rotated", "ES256") == []  # stale, and a kid it lacks: a refresh, waited for
    (line,) = [r.getMessage() for r in caplog.records]  # the next outage said at once
    assert "refresh failed (JWKS answered 503); keeping 1 cached key(s)" in line, line
    assert JWKS_FAILURES["fetch"] - counted == OUTAGE + 1
