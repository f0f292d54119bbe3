"""Fixtures for a test module run through both relays: ``from support.relays import both_relays,
module_upstream``.

``both_relays`` is the module's ``uvicorn_server``, overriding the conftest's: each test runs once
relayed (uvicorn's websockets-sansio) and once through the frame relay (the gateway's protocol,
message policies on the fast path); ``module_upstream`` is its ``upstream_server``, one recording
upstream for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .gateway import PASSTHROUGH
from .servers import UvicornFactory, UvicornServer, WSImpl
from .upstream import UpstreamServer


@pytest.fixture(params=["relay", "framed"], name="uvicorn_server")
def both_relays(uvicorn_server: UvicornFactory, request: pytest.FixtureRequest) -> UvicornFactory:
    """Each test relayed under uvicorn's websockets-sansio and through the frame relay."""
    if request.param == "relay":
        return uvicorn_server

    def start(app: Any, *, ws: WSImpl = "websockets-sansio", **config: Any) -> UvicornServer:
        return uvicorn_server(app, ws=PASSTHROUGH, **config)

    return start


@pytest.fixture(scope="module", name="upstream_server")
def module_upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


__all__ = ["both_relays", "module_upstream"]
