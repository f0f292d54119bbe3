"""What the console watches, through real uvicorn and a real upstream: series and refusals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.clients import connect, expect_status
from support.jwts import HS_SECRET, token
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {
        "apis": [
            api("echo", "/ws/echo", upstream),
            api("chat", "/ws/chat", upstream, policies=[JWT]),
            {"name": "dead", "path": "/ws/dead", "upstreams": ["ws://127.0.0.1:1/"]},
        ]
    }
    with managed_gateway(config, tmp_path / "state.json", sample_interval=0.2) as running:
        yield running


def _series(document: dict[str, Any], name: str, api_name: str, label: str) -> list[int | None]:
    for series in document["series"]:
        if (series["name"], series["api"], series["label"]) == (name, api_name, label):
            return list(series["values"])
    raise AssertionError(f"no series {name}/{api_name}/{label} in {[s['name'] for s in document['series']]}")


async def test_series_count_real_traffic_by_outcome_direction_policy_backend_and_code(managed: Managed) -> None:
    """Messages and bytes each way, accepted and refused handshakes, refusals by policy,
    upstream failures by backend and closes by code, as the charts read them."""
    async with await connect(managed.url("/ws/echo")) as ws:
        for text in ("a", "bb", "ccc"):
            await ws.send(text)
            assert await ws.recv() == text
        async with managed.http() as http:
            live = (await http.get("metrics/series")).json()
            connections = (await http.get("connections")).json()["connections"]
        assert _series(live, "active", "echo", "")[-1] == 1
        assert [c["backend"] for c in connections] == [managed.gateway.config.apis[0].upstreams[0].label]
    assert (await expect_status(managed.url("/ws/chat")))[0] == 401
    bad = token(exp=1)
    assert (await expect_status(managed.url("/ws/chat"), additional_headers={"Authorization": f"Bearer {bad}"}))[
        0
    ] == 401
    assert (await expect_status(managed.url("/ws/dead")))[0] == 502
    async with managed.http() as http:
        document = (await http.get("metrics/series")).json()
        only_chat = (await http.get("metrics/series", params={"api": "chat"})).json()
    assert document["interval"] == 0.2 and document["workers"] == {"answered": 1, "expected": 1}
    assert len(document["times"]) == len(_series(document, "messages", "echo", "in"))
    assert _series(document, "messages", "echo", "in")[-1] == 3
    assert _series(document, "messages", "echo", "out")[-1] == 3
    assert _series(document, "bytes", "echo", "in")[-1] == 6
    assert _series(document, "bytes", "echo", "out")[-1] == 6
    assert _series(document, "handshakes", "echo", "accepted")[-1] == 1
    assert _series(document, "handshakes", "chat", "401")[-1] == 2
    assert _series(document, "refusals", "chat", "validate-jwt")[-1] == 2
    assert _series(document, "handshakes", "dead", "502")[-1] == 1
    assert _series(document, "upstream_failures", "dead", "ws://127.0.0.1:1/")[-1] == 1
    assert _series(document, "closes", "echo", "1000")[-1] == 1
    assert _series(document, "active", "echo", "")[-1] == 0
    assert {s["api"] for s in only_chat["series"]} == {"chat"}
    assert bad not in str(document)


async def test_since_returns_only_the_new_slots(managed: Managed) -> None:
    async with managed.http() as http:
        first = (await http.get("metrics/series")).json()
        last = first["times"][-1]
        later = (await http.get("metrics/series", params={"since": last})).json()
    assert all(at > last for at in later["times"])


async def test_refusals_list_the_refused_handshakes_newest_first_without_secrets(managed: Managed) -> None:
    bad = token(exp=1)  # expired
    await expect_status(managed.url("/ws/chat"), additional_headers={"Authorization": f"Bearer {bad}"})
    await expect_status(managed.url(f"/ws/chat?access_token={bad}"))
    await expect_status(managed.url("/ws/dead?key=qs3cretq"))
    async with managed.http() as http:
        response = await http.get("refusals")
        chat = (await http.get("refusals", params={"api": "chat", "limit": 1})).json()
    assert response.status_code == 200
    found = response.json()["refusals"]
    assert [(r["api"], r["status"], r["policy"]) for r in found] == [
        ("dead", 502, None),
        ("chat", 401, "validate-jwt"),
        ("chat", 401, "validate-jwt"),
    ]
    assert found[0]["at"] >= found[1]["at"] >= found[2]["at"]
    assert all(r["reason"] and r["worker"] for r in found)
    assert [r["api"] for r in chat["refusals"]] == ["chat"]
    assert bad not in response.text and bad.split(".")[1] not in response.text and "qs3cretq" not in response.text


@pytest.mark.parametrize(
    ("path", "params", "problem"),
    [
        ("metrics/series", {"since": "yesterday"}, "since: not a number"),
        ("metrics/series", {"since": "nan"}, "since: not a number"),
        ("metrics/series", {"since": "inf"}, "since: not a number"),
        ("refusals", {"limit": "0"}, "limit: an integer from 1 to 1000"),
        ("refusals", {"limit": "1001"}, "limit: an integer from 1 to 1000"),
        ("refusals", {"limit": "2.5"}, "limit: an integer from 1 to 1000"),
        ("refusals", {"limit": "ten"}, "limit: not a number"),
    ],
)
async def test_a_bad_query_is_422_with_the_field(
    managed: Managed, path: str, params: dict[str, str], problem: str
) -> None:
    async with managed.http() as http:
        response = await http.get(path, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert any(p.startswith(problem) for p in response.json()["problems"])


@pytest.mark.parametrize("token_value", [None, "wrong-token"], ids=["no-token", "wrong"])
@pytest.mark.parametrize("path", ["metrics/series", "refusals", "metrics/series?api=chat", "refusals?limit=1"])
async def test_the_new_endpoints_need_the_admin_token(managed: Managed, path: str, token_value: str | None) -> None:
    await expect_status(managed.url("/ws/chat"))  # something to leak, were the token not checked
    async with managed.http(token_value) as http:
        response = await http.get(path)
    assert response.status_code == 401
    assert 'refusals"' not in response.text and 'series"' not in response.text


async def test_the_openapi_document_describes_the_new_endpoints(managed: Managed) -> None:
    async with managed.http(None) as http:
        document = (await http.get("openapi.json")).json()
    assert set(document["paths"]["/metrics/series"]) == {"get"}
    assert set(document["paths"]["/refusals"]) == {"get"}
    assert "401" in document["paths"]["/refusals"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert {"MetricSeries", "Refusal"} <= set(schemas)
    assert schemas["Refusal"]["properties"].keys() >= {"at", "api", "status", "reason", "policy", "detail"}


async def test_the_live_page_and_its_script_are_served_without_a_token_and_carry_no_data(managed: Managed) -> None:
    """The static page needs no token (it asks for one); every number it shows comes from the protected API."""
    await expect_status(managed.url("/ws/chat"))
    async with managed.http(None) as http:
        page = await http.get("console/live")
        script = await http.get("console/live.js")
    assert page.status_code == 200 and "<title>asgi-ws-gateway live console</title>" in page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text) == ["live.js"]  # no CDN: works offline
    assert "fetch(" in script.text and "validate-jwt" not in page.text + script.text
    assert "innerHTML" not in script.text  # gateway values are written as text, never parsed as HTML
