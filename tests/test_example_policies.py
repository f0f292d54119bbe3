"""The example app's handshake policies, through real uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from asgi_ws_gateway import load_config
from example_app.main import CONFIG, create_app
from support.clients import connect, expect_status
from support.servers import UvicornServer


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    with UvicornServer(create_app()) as running:
        yield running


def test_example_declares_policies() -> None:
    config = load_config(CONFIG)
    assert [next(iter(p)) for p in config.policies] == ["check-origin"]
    chat = next(api for api in config.apis if api.name == "chat")
    assert [next(iter(p)) for p in chat.policies] == [
        "rate-limit-by-key",
        "limit-concurrency",
        "set-header",
        "require-tenant",
    ]
    assert config.store.type == "memory"


async def test_foreign_origin_is_refused_and_own_origin_admitted(server: UvicornServer) -> None:
    """The console page's own origin connects; a page on another site gets 403."""
    status, headers, _ = await expect_status(server.url("/ws/echo"), origin="https://evil.test")
    assert (status, headers["content-type"]) == (403, "application/problem+json")
    async with await connect(server.url("/ws/echo"), origin=f"http://127.0.0.1:{server.port}") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_chat_concurrency_cap(server: UvicornServer) -> None:
    """The eleventh simultaneous connection to one room from one address is refused with 429."""
    opened = [await connect(server.url("/ws/chat/capped")) for _ in range(10)]
    try:
        status, headers, _ = await expect_status(server.url("/ws/chat/capped"))
        assert (status, headers["retry-after"]) == (429, "5")
    finally:
        for ws in opened:
            await ws.close()


async def test_chat_drops_an_oversize_message_with_an_error_and_keeps_the_connection(server: UvicornServer) -> None:
    """The example's message policy: a message over 4 KiB is answered with an error, not relayed."""
    async with await connect(server.url("/ws/chat/big")) as ws:
        await ws.send("x" * 5000)
        error = json.loads(await ws.recv())
        assert (error["type"], error["policy"]) == ("error", "limit-message-size")
        await ws.send("small")
        assert await ws.recv() == "small"  # the room echoes to its members: the connection is fine
