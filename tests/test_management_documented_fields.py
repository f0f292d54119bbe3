"""Every field the management API answers with is documented in docs/management.md's table of
endpoints, in the row of its endpoint: asked of a real gateway under uvicorn, with a real upstream.

``/readyz`` answered ``revision`` and ``/connections``, ``/refusals`` and a message's or a close's answer
``served_by`` (and ``sent``, ``closed``), products ``policies`` and ``message_policies``, none documented
there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from support.clients import connect, expect_status
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer

DOC = Path(__file__).resolve().parent.parent / "docs" / "management.md"


def _row(endpoint: str) -> str:
    """The table row whose first cell holds ``endpoint`` (`` `GET /readyz` ``)."""
    (row,) = [
        line for line in DOC.read_text().splitlines() if line.startswith("| ") and endpoint in line.split(" | ")[0]
    ]
    return row


def _documented(field: str, row: str) -> bool:
    """``field`` as `` `field` `` or ``"field"`` in ``row``; ``messages_in`` as `` `messages_in/out` ``."""
    if re.search(rf"[`\"]{field}[`\"]", row):
        return True
    stem, _, side = field.rpartition("_")
    return side in ("in", "out") and f"`{stem}_in/out`" in row


def _fields(answer: dict[str, Any], inside: str | None = None) -> set[str]:
    """``answer``'s names, and those of the objects listed under ``inside``."""
    names = set(answer)
    for item in answer.get(inside, []) if inside else []:
        names |= set(item)
    return names


async def _answers(managed: Managed) -> dict[str, tuple[set[str], str]]:
    """What each endpoint answered (its names) and the row that documents it."""
    seen: dict[str, tuple[set[str], str]] = {}
    async with managed.http() as http:

        async def get(path: str, endpoint: str, inside: str | None = None) -> dict[str, Any]:
            answer = await http.get(path)
            assert answer.status_code == 200, answer.text
            seen[path] = (_fields(answer.json(), inside), _row(endpoint))
            return dict(answer.json())

        await get("healthz", "`GET /healthz`")
        created = await http.post("subscriptions", json={"product": "gold", "name": "alice"})
        seen["POST subscriptions"] = (set(created.json()), _row("`POST /subscriptions`"))
        await get("subscriptions", "`GET /subscriptions?product=`", "subscriptions")
        await get(f"subscriptions/{created.json()['id']}", "`GET /subscriptions?product=`")
        await get("products", "`GET`/`POST /products`", "products")
        await get("products/gold", "`GET`/`POST /products`")
        await get("apis", "`GET /apis`")
        assert (await expect_status(managed.url("/other")))[0] == 401  # a refusal to list
        async with await connect(managed.url("/echo")) as ws:
            listed = await get("connections", "`GET /connections?api=&limit=`", "connections")
            (connection,) = listed["connections"]
            sent = await http.post(f"connections/{connection['id']}/messages", json={"text": "hi"})
            assert await ws.recv() == "hi"
            seen["messages"] = (set(sent.json()), _row("`POST /connections/{id}/messages`"))
            closed = await http.post(f"connections/{connection['id']}/close", json={"code": 4000})
            seen["close"] = (set(closed.json()), _row("`POST /connections/{id}/close`"))
        refusals = await get("refusals", "`GET /refusals?api=&limit=`", "refusals")
        assert refusals["refusals"], refusals
        ready = await get("readyz", "`GET /readyz`")
        assert ready == {"status": "ready", "revision": (await http.get("apis")).json()["revision"]}
        assert ready["revision"] == 1  # the subscription created above: one change
    return seen


async def test_every_field_answered_is_documented_in_its_endpoints_row(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    config = {
        "apis": [api("echo", "/echo", upstream_server), api("other", "/other", upstream_server)],
        "products": [{"name": "gold", "apis": ["other"]}],
    }
    with managed_gateway(config, tmp_path / "state.json") as managed:
        seen = await _answers(managed)
    undocumented = {call: sorted(f for f in names if not _documented(f, row)) for call, (names, row) in seen.items()}
    assert {call: names for call, names in undocumented.items() if names} == {}
    assert len(seen) == 12


async def test_healthz_and_readyz_answer_their_documented_documents(
    tmp_path: Path, upstream_server: UpstreamServer
) -> None:
    with managed_gateway({"apis": [api("echo", "/echo", upstream_server)]}, tmp_path / "state.json") as managed:
        async with managed.http(token=None) as http:
            assert (await http.get("healthz")).json() == {"status": "ok"}
            assert (await http.get("readyz")).json() == {"status": "ready", "revision": 0}
            paths = (await http.get("openapi.json")).json()["paths"]
    for path, status, names in (("/healthz", "200", {"status"}), ("/readyz", "200", {"status", "revision"}),
                                ("/readyz", "503", {"status"})):  # fmt: skip
        schema = paths[path]["get"]["responses"][status]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == names and schema["additionalProperties"] is False, path
    assert '`200 {"status": "ok"}`' in _row("`GET /healthz`")
    assert '`200 {"status": "ready", "revision": 3}`' in _row("`GET /readyz`")
