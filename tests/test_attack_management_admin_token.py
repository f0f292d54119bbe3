"""The admin token is read from exactly one ``Authorization`` header (real uvicorn, real management API).

Two ``Authorization`` headers, the right token in the first, used to be a ``200``: the check read the
first while a proxy in front (or its log, or its own rules) may read the last. One credential per
request, as for the handshake policies (docs/security.md, "The management API").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from support.management import TOKEN, Managed, api, managed_gateway
from support.upstream import UpstreamServer


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def _status(managed: Managed, headers: list[tuple[str, str]]) -> int:
    async with httpx2.AsyncClient(base_url=managed.base + "/", trust_env=False, timeout=10) as http:
        return (await http.get("apis", headers=headers)).status_code


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")],
        [("Authorization", "Bearer other"), ("Authorization", f"Bearer {TOKEN}")],
        [("Authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
    ],
    ids=["right-then-wrong", "wrong-then-right", "right-twice"],
)
async def test_two_authorization_headers_are_refused(managed: Managed, headers: list[tuple[str, str]]) -> None:
    assert await _status(managed, headers) == 401


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN}"])
async def test_one_authorization_header_in_any_scheme_case_is_accepted(managed: Managed, value: str) -> None:
    assert await _status(managed, [("Authorization", value)]) == 200
