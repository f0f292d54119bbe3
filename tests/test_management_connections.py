"""GET /connections lists a page: the oldest ``limit`` (default 1000, at most 10,000) and how many are open.

Each worker used to send every connection it held, through Redis in the shared mode, and the live
console asks every few seconds: 100,000 connections were megabytes per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from support.clients import connect
from support.management import api, managed_gateway
from support.upstream import UpstreamServer


async def test_a_page_of_the_oldest_and_the_total(upstream: UpstreamServer, tmp_path: Path) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with contextlib.AsyncExitStack() as stack, managed.http() as http:
            for _ in range(5):
                ws = await stack.enter_async_context(await connect(managed.url("/ws/echo")))
                await ws.send("hi")
                await ws.recv()
                await asyncio.sleep(0.01)  # distinct opening times
            every = (await http.get("connections")).json()
            assert every["total"] == 5 and len(every["connections"]) == 5
            assert [c["opened_at"] for c in every["connections"]] == sorted(
                c["opened_at"] for c in every["connections"]
            )
            page = (await http.get("connections", params={"limit": 2})).json()
            assert page["total"] == 5
            assert [c["id"] for c in page["connections"]] == [c["id"] for c in every["connections"][:2]]
            async with managed.client() as client:
                assert (await client.list_connections(limit=3))[2]["id"] == every["connections"][2]["id"]
            other = (await http.get("connections", params={"api": "other", "limit": 1})).json()
            assert (other["total"], other["connections"]) == (0, [])


@pytest.mark.parametrize("limit", ["0", "10001", "2.5", "many", "-1"])
async def test_a_limit_out_of_range_is_a_422(upstream: UpstreamServer, tmp_path: Path, limit: str) -> None:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as managed:
        async with managed.http() as http:
            response = await http.get("connections", params={"limit": limit})
            assert response.status_code == 422
            (problem,) = response.json()["problems"]
            assert problem in ("limit: an integer from 1 to 10000", "limit: not a number: 'many'")
