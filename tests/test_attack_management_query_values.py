"""The management API's query values mean one thing or are a 422.

``DELETE /apis/echo?drain=on`` (or ``drain=maybe``, a bare ``?drain``) deleted the API and left its
connections open without a word: any value but 1/true/yes was false. ``?limit=١٢`` (Arabic-Indic
digits), ``+5``, `` 5``, ``5_0`` and ``1e3`` were numbers to Python's ``float`` and to no other reader,
and a parameter given twice was read once, whichever the framework picked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import connect, expect_close
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


@pytest.mark.parametrize("query", ["drain=on", "drain=maybe", "drain=", "drain", "drain=true&drain=false"])
async def test_an_unreadable_drain_is_a_422_and_deletes_nothing(managed: Managed, query: str) -> None:
    async with managed.http() as http:
        answer = await http.delete(f"apis/echo?{query}")
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"][0].startswith("drain: ")
        assert (await http.get("apis/echo")).status_code == 200


@pytest.mark.parametrize("value", ["true", "TRUE", "yes", "1"])
async def test_each_spelling_of_true_drains(managed: Managed, value: str) -> None:
    async with await connect(managed.url("/ws/echo")) as ws:
        async with managed.http() as http:
            assert (await http.delete(f"apis/echo?drain={value}")).status_code in (200, 204)
        code, _ = await expect_close(ws)
        assert code == 1001


async def test_false_spelled_out_keeps_the_connections(managed: Managed) -> None:
    async with await connect(managed.url("/ws/echo")) as ws:
        async with managed.http() as http:
            assert (await http.delete("apis/echo?drain=false")).status_code in (200, 204)
        await ws.send("still open")
        assert await ws.recv() == "still open"


@pytest.mark.parametrize("limit", ["\u0661\u0662", "+5", " 5", "5_0", "1e3", "0x10", "5\n"])
async def test_a_number_only_python_reads_is_a_422(managed: Managed, limit: str) -> None:
    async with managed.http() as http:
        for path in ("connections", "refusals"):
            answer = await http.get(path, params={"limit": limit})
            assert answer.status_code == 422, (path, limit, answer.text)
            assert answer.json()["problems"] == [f"limit: not a number: {limit!r}"]
        since = await http.get("metrics/series", params={"since": limit})
        assert since.status_code == 422


async def test_a_number_given_twice_is_a_422_and_decimals_still_read(managed: Managed) -> None:
    async with managed.http() as http:
        twice = await http.get("connections?limit=1&limit=2")
        assert twice.status_code == 422 and twice.json()["problems"] == ["limit: given 2 times"]
        assert (await http.get("connections", params={"limit": "10"})).status_code == 200
        assert (await http.get("metrics/series", params={"since": "1796464670.5"})).status_code == 200


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("format=xml", "format: json or yaml, not 'xml'"),
        ("format=YAML", "format: json or yaml, not 'YAML'"),
        ("format=", "format: json or yaml, not ''"),
        ("format", "format: json or yaml, not ''"),
        ("format=yaml&format=json", "format: given 2 times"),
        ("format=yaml&format=yaml", "format: given 2 times"),
    ],
)
async def test_an_export_format_it_does_not_write_is_a_422(managed: Managed, query: str, problem: str) -> None:
    """Fails before: ``?format=xml`` (and each of these) was answered 200 with the JSON document."""
    async with managed.http() as http:
        answer = await http.get(f"config?{query}")
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"] == [problem]


@pytest.mark.parametrize(("query", "media"), [("", "application/json"), ("?format=json", "application/json"),
                                              ("?format=yaml", "application/yaml")])  # fmt: skip
async def test_json_and_yaml_are_still_written(managed: Managed, query: str, media: str) -> None:
    async with managed.http() as http:
        answer = await http.get(f"config{query}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media)
        assert "echo" in answer.text


@pytest.mark.parametrize(
    "path",
    ["subscriptions?product=a&product=b", "connections?api=echo&api=other", "metrics/series?api=echo&api=echo",
     "refusals?api=echo&api=other"],
)  # fmt: skip
async def test_a_filter_given_twice_is_a_422(managed: Managed, path: str) -> None:
    """Fails before: the last one was read (``?product=a&product=b`` listed b's subscriptions only)."""
    name = path.split("?")[1].split("=")[0]
    async with managed.http() as http:
        answer = await http.get(path)
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"] == [f"{name}: given 2 times"]
        assert (await http.get(path.split("&")[0])).status_code == 200
