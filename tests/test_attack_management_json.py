"""Attacks on the management API's JSON: bodies that parsers read differently are refused (422).

Duplicate names (``{"name": "a", "name": "b"}``: the first for some readers, the last for Python)
and the non-JSON constants Python accepts (``NaN``, ``Infinity``) would let what was validated,
logged and stored differ from what another reader of the state file sees. Real uvicorn, real HTTP;
a refusal leaves the state file as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import connect
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


def _state(managed: Managed) -> bytes | None:
    return managed.state.read_bytes() if managed.state.exists() else None


UP = '"upstreams": ["ws://127.0.0.1:9/x"]'
BODIES = {
    "duplicate-name": '{"name": "d1", "name": "d2", "path": "/d", ' + UP + "}",
    "duplicate-path": '{"name": "d", "path": "/a", "path": "/b", ' + UP + "}",
    "duplicate-nested": '{"name": "d", "path": "/d", ' + UP + ', "policies": [{"ip-filter": {"allow": ["10.0.0.0/8"], '
    '"allow": ["0.0.0.0/0"]}}]}',
    "duplicate-escaped": '{"name": "d", "na\\u006de": "e", "path": "/d", ' + UP + "}",
    "infinity": '{"name": "d", "path": "/d", "connect_timeout": Infinity, ' + UP + "}",
    "negative-infinity": '{"name": "d", "path": "/d", "cooldown": -Infinity, ' + UP + "}",
    "nan": '{"name": "d", "path": "/d", "idle_timeout": NaN, ' + UP + "}",
}


OVERFLOWING = {  # valid JSON numbers that Python reads as infinity: refused as the body is read, with the path
    "timeout": ('{"name": "d", "path": "/d", "connect_timeout": 1e400, ' + UP + "}", "connect_timeout"),
    "lease": (
        '{"name": "d", "path": "/d", ' + UP + ', "policies": [{"limit-concurrency": '
        '{"key": "{client.ip}", "max": 3, "lease_ttl": 1e999}}]}',
        "policies[0].limit-concurrency.lease_ttl",
    ),
    # Free-form values no field types: the client got the text Infinity (no JSON), the upstream null.
    "in a message's template": (
        '{"name": "d", "path": "/d", ' + UP + ', "message_policies": {"inbound": [{"transform-message": '
        '{"set": {"a": 1e999}}}]}}',
        "message_policies.inbound[0].transform-message.set.a",
    ),
}

LONG_INTEGER = "1" * 5000
"""More digits than Python reads (sys.get_int_max_str_digits): a 500 and a ValueError traceback before."""


async def test_an_integer_too_long_to_read_is_a_422(managed: Managed) -> None:
    before = _state(managed)
    async with managed.http() as http:
        body = '{"name": "d", "path": "/d", "connect_timeout": ' + LONG_INTEGER + ", " + UP + "}"
        response = await http.post("/apis", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert response.json()["problems"] == ["(body): an integer too long to read"]
    assert _state(managed) == before


@pytest.mark.parametrize(("body", "field"), OVERFLOWING.values(), ids=OVERFLOWING.keys())
async def test_a_number_that_overflows_to_infinity_is_refused(managed: Managed, body: str, field: str) -> None:
    before = _state(managed)
    async with managed.http() as http:
        response = await http.post("/apis", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert response.json()["problems"] == [f"{field}: inf is not a finite number (JSON has none)"]
        assert (await http.get("/apis/d")).status_code == 404
    assert _state(managed) == before


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_ambiguous_json_is_refused_and_nothing_is_stored(managed: Managed, body: str) -> None:
    """POST /apis with an ambiguous body: 422, no API created, the state file untouched."""
    before = _state(managed)
    async with managed.http() as http:
        response = await http.post("/apis", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert response.json()["detail"] == "the body is not valid JSON"
        assert (await http.get("/apis/d")).status_code == 404
        assert (await http.get("/apis/d1")).status_code == 404
        assert (await http.get("/apis/d2")).status_code == 404
    assert _state(managed) == before


async def test_a_duplicate_in_a_put_is_refused_too(managed: Managed) -> None:
    """PUT /apis/echo with a duplicate name: 422, the API unchanged."""
    async with managed.http() as http:
        before = (await http.get("/apis/echo")).json()
        body = '{"name": "echo", "path": "/ws/echo", "path": "/ws/other", ' + UP + "}"
        response = await http.put("/apis/echo", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert (await http.get("/apis/echo")).json() == before


async def test_the_same_name_in_different_objects_is_fine(managed: Managed) -> None:
    """Names repeated across objects (two policies with ``allow``) are plain JSON: 201."""
    body = (
        '{"name": "ok", "path": "/ok", ' + UP + ', "policies": [{"ip-filter": {"allow": ["10.0.0.0/8"]}}, '
        '{"ip-filter": {"allow": ["10.1.0.0/16"]}}]}'
    )
    async with managed.http() as http:
        response = await http.post("/apis", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 201


SURROGATES = [
    pytest.param("messages", r'{"text": "hi \ud800"}', "text", id="message-text"),
    pytest.param("messages", r'{"json": {"a": ["\udfff"]}}', "json.a[0]", id="message-json"),
    pytest.param("close", r'{"code": 4000, "reason": "\ud800"}', "reason", id="close-reason"),
    pytest.param("close", r'{"code": 4000, "\ud800": 1}', r"\ud800", id="a-name"),
]


@pytest.mark.parametrize(("action", "body", "field"), SURROGATES)
async def test_a_lone_surrogate_is_a_422_naming_the_field_and_the_connection_lives(
    managed: Managed, action: str, body: str, field: str
) -> None:
    """A string UTF-8 cannot encode (JSON's lone \\ud800) is refused by field path; the connection still relays."""
    async with await connect(managed.url("/ws/echo")) as ws, managed.http() as http:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        (connection,) = (await http.get("connections")).json()["connections"]
        response = await http.post(
            f"connections/{connection['id']}/{action}", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["problems"] == [f"{field}: a lone surrogate is not valid Unicode"]
        await ws.send("still there")
        assert await ws.recv() == "still there"
        sent = await http.post(f"connections/{connection['id']}/messages", json={"text": "from the admin"})
        assert sent.status_code == 200
        assert await ws.recv() == "from the admin"


async def test_a_lone_surrogate_in_an_api_is_refused_and_nothing_is_stored(managed: Managed) -> None:
    before = _state(managed)
    async with managed.http() as http:
        body = r'{"name": "s", "path": "/s\ud83d", "upstreams": ["ws://127.0.0.1:9/x"]}'
        response = await http.post("apis", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["problems"] == ["path: a lone surrogate is not valid Unicode"]
    assert _state(managed) == before


FORGED = [
    ("GET", "apis/x%0aCRITICAL:%20forged"),
    ("DELETE", "subscriptions/x%0d%0aCRITICAL:%20forged"),
    ("GET", "products/x%0d%0aCRITICAL:%20forged"),
    ("POST", "connections/x%0d%0aCRITICAL:%20forged/close"),
    ("GET", "apis/x%1b%5b2K%e2%80%aeforged"),
]


@pytest.mark.parametrize(("method", "path"), FORGED, ids=[p for _, p in FORGED])
async def test_control_characters_in_a_request_cannot_forge_management_log_lines(
    managed: Managed, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """The refused line, under any logging setup, writes a client's CR, LF, ESC and bidi characters as escapes."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.management")
    async with managed.http() as http:
        response = await http.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == 404
    (line,) = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert line.startswith("management ") and "refused: 404" in line
    assert not any(ch in line for ch in "\r\n\x1b\u202e"), line


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"json": 1e999}', "json: inf is not a finite number (JSON has none)"),
        ('{"json": {"a": [-1e400]}}', "json.a[0]: -inf is not a finite number (JSON has none)"),
        ('{"json": ' + LONG_INTEGER + "}", "(body): an integer too long to read"),
    ],
    ids=["infinity", "nested", "long-integer"],
)
async def test_a_message_with_a_number_json_cannot_carry_is_a_422_and_nothing_is_sent(
    managed: Managed, body: str, problem: str
) -> None:
    """The client got the text ``Infinity`` (no JSON reader takes it); a long integer was a 500."""
    async with await connect(managed.url("/ws/echo")) as ws, managed.http() as http:
        (connection,) = (await http.get("connections")).json()["connections"]
        response = await http.post(
            f"connections/{connection['id']}/messages", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["problems"] == [problem]
        sent = await http.post(f"connections/{connection['id']}/messages", json={"text": "next"})
        assert sent.status_code == 200
        assert await ws.recv() == "next"  # the refused message never reached the client
