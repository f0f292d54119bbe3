"""``python -m example_app`` (what ``make run`` serves) as a process: the gateway's protocols, no ERROR per refusal."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.processes import SRC, ServerProcess, ready_server


@pytest.fixture
def example() -> Iterator[ServerProcess]:
    with ready_server(lambda port: ["-m", "example_app", "--port", str(port)], cwd=SRC.parent) as server:
        yield server


async def test_the_example_server_echoes_refuses_and_limits_with_the_gateway_s_protocols(
    example: ServerProcess,
) -> None:
    """An echo goes through; a refused handshake gets its status and leaves no ERROR line (uvicorn's
    own protocols log "ASGI callable returned without completing handshake" for every refusal)."""
    async with connect(f"ws://127.0.0.1:{example.port}/ws/echo") as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{example.port}/ws/chat/lobby", additional_headers={"X-Tenant": "nobody"}):
            pass
    assert refused.value.response.status_code == 451
    async with httpx2.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{example.port}/_gateway/console")).status_code == 200
        # A request head over the gateway's HTTP limit: 431 (uvicorn's own protocol would buffer it).
        big = await client.get(f"http://127.0.0.1:{example.port}/", headers={"X-Big": "x" * 70_000})
        assert big.status_code == 431
    example.stop()  # uvicorn.run re-raises SIGTERM after its graceful shutdown
    output = example.output()
    assert '"WebSocket /ws/echo" 101' in output  # the access line
    assert "ERROR" not in output and "Traceback" not in output
