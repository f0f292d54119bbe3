"""An admin-token holder sending a file API, and the file's credential, to a host of theirs with a product.

A product created through the management API runs its policies for the APIs it lists: its
``set-backend-service`` picked where the file's API ``chat`` connected, with the global (or a file
product's) credential, and the secret-host rule looked only at APIs created or changed here.
Real uvicorn, the management API, recording upstreams: the "attacker's" server is a second upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
AUTH = {"set-header": {"header": "X-Internal-Auth", "value": SECRET}}


@pytest.fixture
def attacker() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _product(name: str, backend: UpstreamServer) -> dict[str, Any]:
    backend_service = {"set-backend-service": {"base_url": f"ws://127.0.0.1:{backend.port}"}}
    return {"name": name, "apis": ["chat"], "subscription_required": False, "policies": [backend_service]}


async def test_a_product_created_here_cannot_move_a_file_api_with_a_global_secret(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    config = {"apis": [api("chat", "/chat", upstream)], "policies": [AUTH]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("products", json=_product("evil", attacker))
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            assert problem.startswith(
                f"product 'evil''s policies (set-backend-service): 127.0.0.1:{attacker.port} is not a host"
            )
            assert "API 'chat' would send it the global set-header X-Internal-Auth" in problem
            assert SECRET not in refused.text
            # A product that keeps the API on the file's own host is allowed.
            kept = await http.post("products", json=_product("fine", upstream))
            assert kept.status_code == 201, kept.text
        async with await connect(running.url("/chat")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert not attacker.handshakes
    assert [h.headers["x-internal-auth"] for h in upstream.handshakes] == [[SECRET]]


async def test_a_product_created_here_cannot_move_a_file_api_with_a_file_products_secret(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    secret = {"set-query-parameter": {"parameter": "access_token", "value": SECRET}}
    gold = {"name": "gold", "apis": ["chat"], "subscription_required": False, "policies": [secret]}
    config = {"apis": [api("chat", "/chat", upstream)], "products": [gold]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("products", json=_product("evil", attacker))
            assert refused.status_code == 422, refused.text
            assert "product 'gold''s set-query-parameter access_token" in refused.json()["problems"][0]
            assert SECRET not in refused.text
        async with await connect(running.url("/chat")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert not attacker.handshakes
    assert [h.path for h in upstream.handshakes] == [f"/echo?access_token={SECRET}"]


async def test_a_stored_product_that_would_take_a_new_file_secret_elsewhere_stops_start_up(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The product was created before the file sent a secret; the file now does: start-up names it."""
    state = tmp_path / "state.json"
    config: dict[str, Any] = {"apis": [api("chat", "/chat", upstream)]}
    with managed_gateway(config, state) as running:
        async with running.http() as http:
            assert (await http.post("products", json=_product("evil", attacker))).status_code == 201
    with pytest.raises(RuntimeError, match="did not start"), managed_gateway({**config, "policies": [AUTH]}, state):
        pass
    assert "the stored changes do not fit the configuration file:" in caplog.text
    assert f"product 'evil''s policies (set-backend-service): 127.0.0.1:{attacker.port} is not a host" in caplog.text
    assert not attacker.handshakes


async def test_a_product_created_here_cannot_move_a_file_api_with_its_own_secret(
    tmp_path: Any, upstream: UpstreamServer, attacker: UpstreamServer
) -> None:
    """The file's API sends its own credential: unchanged here, its policies are still the operator's."""
    own = [{"set-header": {"header": "X-Api-Key", "value": SECRET}}]
    with managed_gateway({"apis": [api("chat", "/chat", upstream, policies=own)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("products", json=_product("evil", attacker))
            assert refused.status_code == 422, refused.text
            assert "API 'chat' would send it the API's own set-header X-Api-Key" in refused.json()["problems"][0]
        async with await connect(running.url("/chat")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    assert not attacker.handshakes
