"""An upstream's answer cannot set a cookie the gateway's policies read, for any API of the origin.

Every API shares the gateway's origin, and every connector passed an upstream's ``Set-Cookie`` on: the
upstream of one API (``/ws/evil``) answered with ``Set-Cookie: access_token=<its token>; Path=/``, and
the browser sent that token with its next handshake to another API (``/ws/bank``), whose
``validate-jwt`` reads ``access_token`` from a cookie: signed in as the backend's account, or, beside
its own token, refused 400 ``token_ambiguous`` on every handshake. Now a ``Set-Cookie`` of a cookie any
policy reads (a token place, a ``{cookie.*}`` template), in every spelling the policies fold to it and
as a nameless cookie the browser sends as ``access_token=...``, is dropped from the 101 and from a
relayed refusal, with a WARNING; other cookies (a backend's affinity cookie) pass. An API's
``response_cookies`` narrows what its upstreams may set to the cookies it names (``[]``: none), never to
a cookie a policy reads. Raw upstreams answer
for the splice, the frame relay and the relay; an in-process app through its accept and its refusal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from asgi_ws_gateway.upstream.set_cookies import kept_cookies, read_cookie_names, set_cookie_name
from support.apps import answering_with
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.rawhttp import answer_head, header_values, headered_upstream, status_of
from support.servers import UvicornServer

READ = [
    "access_token=FORGED; Path=/; HttpOnly",
    "ACCESS_TOKEN=FORGED; Path=/",
    "%61ccess_token=FORGED; Path=/",
    "access.token=FORGED; Path=/",
    "=access_token=FORGED; Path=/",
    " access_token =FORGED",
    "tenant=other; Path=/; Domain=127.0.0.1",
]
"""Set-Cookie values of cookies the bank API's policies read (its token; the tenant its limit keys by)."""
KEPT = ["affinity=b2; Path=/ws/evil; HttpOnly", "theme=dark"]
BANK: dict[str, Any] = {
    "name": "bank",
    "path": "/ws/bank",
    "upstreams": ["ws://127.0.0.1:9"],
    "policies": [
        {"check-origin": {"allowed": ["https://bank.example"]}},
        {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 32, "token": [{"cookie": "access_token"}]}},
        {"rate-limit-by-key": {"key": "{cookie.tenant|none}", "limit": 100, "window": 60}},
    ],
}


def test_the_names_read_are_every_token_place_and_cookie_reference() -> None:
    choose = {"choose": {"when": [{"if": {"ref": " cookie.Plan ", "equals": "free"}, "policies": []}]}}
    other = {"policies": [{"set-header": {"value": "{{cookie.x}} {cookie.sid}"}}, choose]}
    assert read_cookie_names({"apis": [BANK, other]}) == {"access_token", "tenant", "sid", "plan"}


@pytest.mark.parametrize("value", READ)
def test_each_spelling_names_the_cookie_read(value: str) -> None:
    assert set_cookie_name(value.encode()) in {"access_token", "tenant"}


def test_other_cookies_and_headers_pass_as_they_are() -> None:
    headers = [(b"set-cookie", value.encode()) for value in KEPT] + [(b"x-app", b"chat")]
    assert kept_cookies(headers, frozenset({"access_token"})) == (headers, [])


def _cookie_lines() -> bytes:
    return b"".join(f"Set-Cookie: {value}\r\n".encode() for value in (*READ, *KEPT))


def _pairs(values: list[str]) -> list[str]:
    """Each ``Set-Cookie`` value's cookie (``name=value``), without the attributes the gateway scopes
    (``upstream.cookie_scope``, ``tests/test_attack_upstream_cookie_scope.py``)."""
    return [value.partition(";")[0].strip() for value in values]


def _assert_read_cookies_dropped(head: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert _pairs(header_values(head, "set-cookie")) == _pairs(KEPT)
    warned = [r.getMessage() for r in caplog.records if "which the policies read" in r.getMessage()]
    assert warned, "no WARNING for the dropped cookies"
    assert "'access_token'" in warned[0] and "'tenant'" in warned[0]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records if r.getMessage() in warned)


@pytest.mark.parametrize("mode", list(CONNECTORS))
@pytest.mark.parametrize(("target", "status"), [("/ws/evil", 101), ("/ws/evil-refuse", 403)])
async def test_a_network_upstream_cannot_set_a_cookie_another_api_reads(
    mode: str, target: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with headered_upstream(_cookie_lines()) as (upstream_side, port):
        upstream = f"ws://127.0.0.1:{port}" + ("/refuse" if target.endswith("refuse") else "/")
        evil = {"name": "evil", "path": target, "upstreams": [upstream], **CONNECTORS[mode]}
        with UvicornServer(ProbedGateway({"apis": [BANK, evil]}), ws=PASSTHROUGH) as server:
            head = await answer_head(server.port, target)
            await asyncio.wait_for(upstream_side.ended.wait(), 10)
    assert status_of(head) == status
    _assert_read_cookies_dropped(head, caplog)


@pytest.mark.parametrize(("refuse", "status"), [(False, 101), (True, 403)])
async def test_an_in_process_app_cannot_set_a_cookie_another_api_reads(
    refuse: bool, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = answering_with([("set-cookie", value) for value in (*READ, *KEPT)], refuse=refuse)
    evil = {"name": "evil", "path": "/ws/evil", "upstreams": [{"url": "asgi:", "app": app}]}
    gateway = ProbedGateway({"apis": [BANK, evil]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, "/ws/evil")
    assert status_of(head) == status
    _assert_read_cookies_dropped(head, caplog)


async def test_without_a_policy_reading_cookies_every_cookie_passes() -> None:
    async with headered_upstream(_cookie_lines()) as (upstream_side, port):
        evil = {"name": "evil", "path": "/ws/evil", "upstreams": [f"ws://127.0.0.1:{port}/"]}
        with UvicornServer(ProbedGateway({"apis": [evil]}), ws=PASSTHROUGH) as server:
            head = await answer_head(server.port, "/ws/evil")
            await asyncio.wait_for(upstream_side.ended.wait(), 10)
    assert _pairs(header_values(head, "set-cookie")) == _pairs([*READ, *KEPT])


def test_response_cookies_list_the_only_cookies_that_pass() -> None:
    headers = [(b"set-cookie", value.encode()) for value in (*READ, *KEPT)] + [(b"x-app", b"chat")]
    kept, dropped = kept_cookies(headers, frozenset({"access_token"}), frozenset({"affinity", "access_token"}))
    assert kept == [(b"set-cookie", KEPT[0].encode()), (b"x-app", b"chat")]  # a cookie read: dropped, listed or not
    assert sorted(set(dropped)) == ["access_token", "tenant", "theme"]
    assert kept_cookies(headers, frozenset(), frozenset())[0] == [(b"x-app", b"chat")]


@pytest.mark.parametrize("mode", ["splice", "relay"])
@pytest.mark.parametrize(
    ("listed", "passed"),
    [(["Affinity"], KEPT[:1]), ([], []), (["access_token", "theme"], ["theme=dark"])],
    ids=["affinity", "none", "a-read-cookie-listed"],
)
async def test_response_cookies_is_what_an_apis_upstreams_may_set(
    mode: str, listed: list[str], passed: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with headered_upstream(_cookie_lines()) as (upstream_side, port):
        evil: dict[str, Any] = {
            "name": "evil",
            "path": "/ws/evil",
            "upstreams": [f"ws://127.0.0.1:{port}/"],
            "response_cookies": listed,
        }
        if mode == "relay":
            evil["passthrough"] = False
        with UvicornServer(ProbedGateway({"apis": [BANK, evil]}), ws=PASSTHROUGH) as server:
            head = await answer_head(server.port, "/ws/evil")
            await asyncio.wait_for(upstream_side.ended.wait(), 10)
    assert status_of(head) == 101
    assert _pairs(header_values(head, "set-cookie")) == _pairs(passed)
    warned = [r.getMessage() for r in caplog.records if "not in response_cookies" in r.getMessage()]
    assert warned and "'access_token'" in warned[0] and "'tenant'" in warned[0], warned
