"""The management API's path is its own: no API may live under it, or its requests would never reach it.

GatewayManagement answers every request under its path before the gateway sees it: with
``--management /ws`` the file's ``/ws/echo`` was silently refused by the management API (403), and
an API created at ``/_gateway/x`` could never be reached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement
from asgi_ws_gateway.management.service import Manager
from asgi_ws_gateway.standalone import not_found
from support.management import TOKEN, api, managed_gateway
from support.upstream import UpstreamServer


async def test_an_api_of_the_file_under_the_management_path_fails_start_up(upstream: UpstreamServer) -> None:
    apis = [api("echo", "/ws/echo", upstream), api("ws", "/ws", upstream)]
    gateway = WebSocketGateway(not_found, config={"apis": apis})
    manager = Manager(gateway, reserved_path="/ws")
    with pytest.raises(ConfigError) as info:
        await manager.start()
    assert info.value.problems == [
        "apis[0].path: '/ws/echo' is under the management API's path '/ws', which would take its requests",
        "apis[1].path: '/ws' is under the management API's path '/ws', which would take its requests",
    ]
    await manager.stop()


async def test_apis_beside_the_management_path_are_fine(upstream: UpstreamServer) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": [api("a", "/ws-x", upstream), api("b", "/x/ws", upstream)]})
    manager = Manager(gateway, reserved_path="/ws")
    await manager.start()
    await manager.stop()


@pytest.mark.parametrize("path", ["/_gateway/x", "/_gateway", "/_gateway/{room}"])
async def test_an_api_created_under_the_management_path_is_refused(
    upstream: UpstreamServer, tmp_path: Path, path: str
) -> None:
    with managed_gateway({"apis": []}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            response = await http.post("apis", json=api("under", path, upstream))
            assert response.status_code == 422
            assert response.json()["problems"] == [
                f"path: '{path}' is under the management API's path '/_gateway', which would take its requests"
            ]
            assert (await http.get("apis/under")).status_code == 404
    assert not (tmp_path / "state.json").exists()


def test_on_its_own_port_the_management_api_reserves_no_path(upstream: UpstreamServer) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": [api("echo", "/_gateway/echo", upstream)]})
    assert GatewayManagement(gateway, admin_token=TOKEN, port=9999).manager.reserved_path is None


@pytest.mark.parametrize("path", ["/", "", "//"])
def test_the_root_is_not_a_management_path(upstream: UpstreamServer, path: str) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": []})
    with pytest.raises(ValueError, match="a path of its own"):
        GatewayManagement(gateway, admin_token=TOKEN, path=path)
