"""The stored changes are bounded as a whole, not only request by request.

An attack pass sent seventy ``POST /apis`` of about 1 MB each, every one within the body limit: the
state file grew past the 64 MiB a file may have to be read, after which every management call
(``GET`` and ``DELETE`` included) was a 503 and ``run`` refused to start (exit 7). Now a change that
would take the stored changes past ``MAX_STATE_BYTES`` is a 422 naming the sizes, nothing is saved,
and a change that frees space still passes. Real uvicorn and a real state file; the bound is lowered
for the test (it is read when each change is made).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.management import service
from asgi_ws_gateway.management.store import FileStore
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer

BOUND = 200_000


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Managed]:
    monkeypatch.setattr(service, "MAX_STATE_BYTES", BOUND)
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


def _large_api(upstream: UpstreamServer, index: int) -> dict[str, object]:
    headers = [{"set-header": {"header": f"X-Pad-{n}", "value": "p" * 4000}} for n in range(10)]
    return api(f"big{index}", f"/ws/big{index}", upstream, policies=headers)


async def test_changes_past_the_bound_are_refused_and_what_is_stored_stays_readable(
    managed: Managed, upstream: UpstreamServer
) -> None:
    async with managed.http() as http:
        statuses = []
        for index in range(8):  # about 40 KB each: the bound is passed at the fifth
            response = await http.post("/apis", json=_large_api(upstream, index))
            statuses.append(response.status_code)
            if response.status_code == 422:
                (problem,) = response.json()["problems"]
                assert problem.startswith("(state): the stored changes would take ")
                assert f"more than the {BOUND:,} they may; remove some first" in problem
        created = statuses.count(201)
        assert 0 < created < 8 and statuses == [201] * created + [422] * (8 - created), statuses
        assert managed.state.stat().st_size <= BOUND
        # Still readable and changeable: a change that frees space passes, and then a new one fits.
        assert (await http.get("/apis")).status_code == 200
        assert (await http.delete(f"/apis/big{created - 1}")).status_code == 204
        assert (await http.post("/apis", json=_large_api(upstream, 99))).status_code == 201
    overlay = await FileStore(managed.state).load()  # what a restart reads
    assert sorted(overlay.apis) == sorted([f"big{index}" for index in range(created - 1)] + ["big99"])
