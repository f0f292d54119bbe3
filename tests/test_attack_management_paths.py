"""Names and ids in the management API's URLs: each is one path segment, whatever it holds.

The SDK (and the command line, which uses it) percent-encodes every name or id it puts in a path,
``/`` included: ``subscriptions delete ../apis/x`` must not become ``DELETE /apis/x``, nor may
``?`` or ``#`` cut a name short. Real uvicorn, real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from asgi_ws_gateway.cli import main
from asgi_ws_gateway.management import ManagementAPIError, ManagementClient
from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer

Call = Callable[[ManagementClient, str], Awaitable[Any]]


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"apis": [api("x", "/ws/x", upstream)], "products": [{"name": "p", "apis": ["x"]}]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        yield running


CALLS: dict[str, Call] = {
    "get_api": lambda c, v: c.get_api(v),
    "replace_api": lambda c, v: c.replace_api(v, {"path": "/ws/moved", "upstreams": ["ws://127.0.0.1:1/"]}),
    "delete_api": lambda c, v: c.delete_api(v),
    "delete_product": lambda c, v: c.delete_product(v),
    "get_subscription": lambda c, v: c.get_subscription(v),
    "suspend_subscription": lambda c, v: c.suspend_subscription(v),
    "activate_subscription": lambda c, v: c.activate_subscription(v),
    "regenerate_key": lambda c, v: c.regenerate_key(v),
    "delete_subscription": lambda c, v: c.delete_subscription(v),
    "send": lambda c, v: c.send(v, "hi"),
    "kick": lambda c, v: c.kick(v),
}


async def _state(managed: Managed) -> tuple[Any, ...]:
    async with managed.client() as client:
        return await client.export_config(), await client.list_products(), await client.list_subscriptions()


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("value", ["../apis/x", "../products/p", "x/..", "..%2Fapis%2Fx"])
async def test_an_id_with_a_slash_reaches_no_other_resource(managed: Managed, call: Call, value: str) -> None:
    """A ``/`` (or ``%2F``) in a name or id is sent encoded: the server answers 404 and changes nothing."""
    before = await _state(managed)
    async with managed.client() as client:
        with pytest.raises(ManagementAPIError) as refused:
            await call(client, value)
        assert refused.value.status == 404
        assert (await client.get_api("x"))["name"] == "x"
    assert await _state(managed) == before


@pytest.mark.parametrize(
    ("call", "detail"),
    [
        (CALLS["get_api"], "no WebSocket API named '{}'"),
        (CALLS["delete_product"], "no product named '{}'"),
        (CALLS["get_subscription"], "no subscription '{}'"),
        (CALLS["kick"], "no open connection '{}'"),
    ],
    ids=["get_api", "delete_product", "get_subscription", "kick"],
)
@pytest.mark.parametrize("value", ["x?y", "x#y", "x y", "x?", "x#", "x%3Fy", "x;y", "x\\y"])
async def test_a_name_with_a_space_question_mark_or_hash_reaches_the_server_whole(
    managed: Managed, call: Call, detail: str, value: str
) -> None:
    """``?``, ``#``, a space (and a ``%`` escape) are part of the name the server looks up."""
    async with managed.client() as client:
        with pytest.raises(ManagementAPIError) as refused:
            await call(client, value)
    assert (refused.value.status, refused.value.detail) == (404, detail.format(value))


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("value", ["", ".", ".."])
async def test_an_empty_or_dot_segment_is_refused_before_sending(call: Call, value: str) -> None:
    """``""``, ``.`` and ``..`` would name the collection or its parent once URLs are normalised."""
    sent: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(204)

    async with ManagementClient("http://gateway/_gateway", transport=httpx2.MockTransport(record)) as client:
        with pytest.raises(ValueError, match="cannot be a name or id"):
            await call(client, value)
    assert sent == []


async def test_the_command_line_deletes_no_api_through_a_crafted_subscription_id(
    managed: Managed, capsys: pytest.CaptureFixture[str]
) -> None:
    """``subscriptions delete ../apis/x``: not found (exit 3), API x is still there; ``..``: exit 2."""
    args = ["subscriptions", "delete", "../apis/x", "--url", managed.base, "--token", TOKEN]
    assert await asyncio.to_thread(main, args) == 3
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: 404 ")  # after --token's warning
    args[2] = ".."
    assert await asyncio.to_thread(main, args) == 2  # a usage error, nothing sent
    assert "'..' cannot be a name or id" in capsys.readouterr().err
    async with managed.client() as client:
        assert (await client.get_api("x"))["name"] == "x"
