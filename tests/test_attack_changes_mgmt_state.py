"""The management state under a running gateway: a state file restored from a backup, and changes that
would open an API that needed a subscription key.

An attack pass found a restored (older) state ignored by the gateway, whose writes were then
acknowledged and never applied, and ``DELETE /products/gold`` letting anonymous clients into the
API it guarded, silently. Each end-to-end test here failed before.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import connect, expect_status
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer

TYPED = {"Content-Type": "application/json"}


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def _echoes(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_a_state_file_restored_from_a_backup_is_adopted_and_a_change_after_it_applied(
    managed: Managed, upstream: UpstreamServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file replaced by an older copy while the gateway runs: the gateway runs what the file says
    (ERROR, both states named), and a change made then is applied, not answered 201 and ignored."""
    caplog.set_level(logging.ERROR, logger="asgi_ws_gateway.management")
    backup = tmp_path / "backup.json"
    async with managed.http() as http:
        assert (await http.post("apis", json=api("kept", "/ws/kept", upstream))).status_code == 201
        shutil.copy(managed.state, backup)
        for name in ("gone1", "gone2"):
            assert (await http.post("apis", json=api(name, f"/ws/{name}", upstream))).status_code == 201
        shutil.copy(backup, managed.state)  # restored from the backup: revision 1

        for _ in range(2):  # a 503 once, if the poll had not seen it yet; nothing was changed then
            created = await http.post("apis", json=api("late", "/ws/late", upstream))
            if created.status_code != 503:
                break
            assert created.headers["content-type"] == "application/problem+json"
        assert created.status_code == 201, created.text
        await _echoes(managed.url("/ws/late"))
        await _echoes(managed.url("/ws/kept"))
        assert (await expect_status(managed.url("/ws/gone1")))[0] == 404
        assert [a["name"] for a in (await http.get("apis")).json()["apis"]] == ["echo", "kept", "late"]
    went_back = [r.getMessage() for r in caplog.records if "the state store went back" in r.getMessage()]
    assert went_back and "from revision 3 of state" in went_back[0] and "to revision 1 of state" in went_back[0]


async def _keyed(managed: Managed, *products: str) -> None:
    async with managed.http() as http:
        for product in products:
            assert (await http.post("products", json={"name": product, "apis": ["echo"]})).status_code == 201
    assert (await expect_status(managed.url("/ws/echo")))[0] == 401


async def test_deleting_the_last_keyed_product_of_an_api_is_409_naming_it(managed: Managed) -> None:
    """The API would let clients in without a key: refused, problem+json, nothing changed. Deleting a
    product while another one still requires a key for the API needs no force."""
    await _keyed(managed, "gold", "silver")
    async with managed.http() as http:
        assert (await http.delete("products/silver", headers=TYPED)).status_code == 204
        refused = await http.delete("products/gold", headers=TYPED)
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["problems"] == ["echo: would need no subscription key"]
        assert "?force=true" in refused.json()["detail"]
        assert (await http.get("products/gold")).status_code == 200
    assert (await expect_status(managed.url("/ws/echo")))[0] == 401


async def test_force_deletes_it_with_a_warning(managed: Managed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_ws_gateway.management")
    await _keyed(managed, "gold")
    async with managed.http() as http:
        assert (await http.delete("products/gold?force=true", headers=TYPED)).status_code == 204
    await _echoes(managed.url("/ws/echo"))
    assert any(
        r.levelno == logging.WARNING and "without a subscription key into API(s) echo (forced)" in r.getMessage()
        for r in caplog.records
    )


async def test_an_open_product_over_a_keyed_api_is_409_unless_forced(managed: Managed) -> None:
    """A product that requires no key, added to an API that needed one, opens it too."""
    await _keyed(managed, "gold")
    free = {"name": "free", "apis": ["echo"], "subscription_required": False}
    async with managed.http() as http:
        assert (await http.post("products", json=free)).status_code == 409
        assert (await expect_status(managed.url("/ws/echo")))[0] == 401
        assert (await http.post("products?force=true", json=free)).status_code == 201
    await _echoes(managed.url("/ws/echo"))
