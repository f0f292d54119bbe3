"""An upstream's cookie reaches the request's host and its API's paths, no more, unless the operator allows it.

A ``Set-Cookie`` an upstream may set (neither read by a policy nor left out of ``response_cookies``)
passed as written: ``Domain=.example.com`` sent it to every sibling host under the domain, ``Path=/``
(or no ``Path``: the browser's default, ``/ws`` for ``/ws/evil``) to every other API and page of the
origin, and a ``__Host-`` cookie, the origin's own kind, set or replaced the origin's ``__Host-session``.
Now its ``Domain`` goes (host-only) unless listed in ``response_cookie_domains``, its ``Path`` becomes
the API's unless within it or listed in ``response_cookie_paths``, a ``__Host-`` cookie is dropped
unless ``/`` is listed; a throttled WARNING says so. Raw upstreams answer for the splice, the frame
relay and the relay (101 and refusal); an in-process app through its accept and its refusal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.upstream.cookie_scope import CookieScope, api_cookie_path, cookie_scope, scoped_cookies
from support.apps import answering_with
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.rawhttp import answer_head, header_values, headered_upstream, status_of
from support.servers import UvicornServer

HOSTILE = [
    "wide=1; Domain=.example.com; Path=/; HttpOnly",  # every sibling host, every path
    "root=2; Path=/",  # every API of the origin
    "__Host-session=3; Path=/; Secure",  # the origin's own kind of cookie
    "__host-lower=4; Path=/; Secure",  # the prefix as browsers read it: whatever its case
    "=__Host-nameless=5; Path=/; Secure",  # a nameless cookie sent as __Host-nameless=5
    "sibling=6; Path=/ws/evilx",  # not under /ws/evil, though it starts so
    "dots=7; Path=/ws/evil/../bank",  # under it as written, not as read
    "encoded=8; Path=/ws/evil/%2e%2e/bank",
    "twice=9; Path=/ws/evil; path=/",  # the last counts
    "host=10; Path=/ws/evil; DOMAIN=127.0.0.1",  # a Domain even the request's host widens (its subdomains)
]
"""Set-Cookie values of an upstream of /ws/evil asking for more than its API."""
SCOPED = [
    "wide=1; HttpOnly; Path=/ws/evil",
    "root=2; Path=/ws/evil",
    "sibling=6; Path=/ws/evil",
    "dots=7; Path=/ws/evil",
    "encoded=8; Path=/ws/evil",
    "twice=9; Path=/ws/evil",
    "host=10; Path=/ws/evil",
]
"""What the client gets of HOSTILE (the __Host- cookies dropped)."""
WITHIN = ["affinity=b2; Path=/ws/evil; HttpOnly", "deeper=c3; Path=/ws/evil/room; Secure"]
"""Cookies within the API: passed as written."""
NO_PATH = ("theme=dark", "theme=dark; Path=/ws/evil")
"""A cookie without a Path (the browser's default would be /ws): given the API's, not reported."""
EVIL = CookieScope("/ws/evil")


def _headers(values: list[str]) -> list[tuple[bytes, bytes]]:
    return [(b"set-cookie", value.encode()) for value in values]


def test_each_cookie_is_held_to_the_request_host_and_the_apis_path() -> None:
    kept, narrowed = scoped_cookies([*_headers([*HOSTILE, *WITHIN, NO_PATH[0]]), (b"x-app", b"chat")], EVIL)
    assert kept == [*_headers([*SCOPED, *WITHIN, NO_PATH[1]]), (b"x-app", b"chat")]
    assert [n.name for n in narrowed] == [
        "wide", "root", "__host-session", "__host-lower", "__host-nameless",
        "sibling", "dots", "encoded", "twice", "host",
    ]  # fmt: skip
    assert narrowed[0].asked == "Domain=.example.com, Path=/"
    # What ws_gateway.cookies.changed counts: one reason per thing asked.
    assert [n.reasons for n in narrowed] == [
        ("domain_removed", "path_narrowed"), ("path_narrowed",), *[("host_prefix_dropped",)] * 3,
        *[("path_narrowed",)] * 4, ("domain_removed",),
    ]  # fmt: skip


def test_cookies_within_the_api_pass_as_they_are() -> None:
    headers = [*_headers(WITHIN), (b"x-app", b"chat")]
    assert scoped_cookies(headers, EVIL) == (headers, [])
    assert scoped_cookies([(b"x-app", b"chat")], EVIL)[1] == []


def test_the_operator_allows_a_domain_and_paths() -> None:
    allowed = CookieScope("/ws/evil", frozenset({"example.com"}), frozenset({"/", "/ws"}))
    values = ["wide=1; Domain=.EXAMPLE.com; Path=/", "__Host-session=3; Path=/; Secure", "w=2; Path=/ws"]
    values.append("eu=4; Domain=eu.example.com; Path=/ws/evil")  # under an allowed domain: fewer hosts
    assert scoped_cookies(_headers(values), allowed) == (_headers(values), [])
    kept, narrowed = scoped_cookies(_headers(["other=1; Domain=evil.example; Path=/ws/bank"]), allowed)
    assert kept == _headers(["other=1; Path=/ws/evil"])
    assert scoped_cookies(_headers(["x=1; Domain=notexample.com"]), allowed)[0] == _headers(["x=1; Path=/ws/evil"])
    assert narrowed[0].asked == "Domain=evil.example, Path=/ws/bank"


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/ws/evil", "/ws/evil"), ("/ws/rooms/{room}", "/ws/rooms"), ("/ws/r-{id}/x", "/ws"), ("/{tenant}/ws", None),
        ("/ws/caf\u00e9/{room}", "/ws/caf%C3%A9"), ("/ws/\u20ac", "/ws/%E2%82%AC"),
        ("/a;Domain=x.com", "/a%3BDomain=x.com"),
        ("/a b/[v]|^", "/a%20b/[v]|^"),  # as a browser sends each: written decoded in the configuration
    ],
)  # fmt: skip
def test_an_apis_cookie_path_is_its_literal_start(template: str, path: str | None) -> None:
    assert api_cookie_path(template) == path


def test_the_cookie_path_is_the_path_the_client_sees() -> None:
    scope: dict[str, Any] = {"path": "/api/ws/evil", "raw_path": b"/api/ws/evil", "root_path": "/api"}
    assert cookie_scope(scope, "/ws/evil", frozenset(), frozenset()).path == "/api/ws/evil"
    scope = {"path": "/acme/ws", "raw_path": b"/%61cme/ws?x=1", "root_path": ""}
    assert cookie_scope(scope, None, frozenset(), frozenset()).path == "/%61cme/ws"  # as the browser compares it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_cookie_domains", "example.com\r\nSet-Cookie: x=1"),
        ("response_cookie_domains", "exa mple.com"),
        ("response_cookie_domains", ""),
        ("response_cookie_paths", "/ws\r\nX: 1"),
        ("response_cookie_paths", "/ws;Domain=example.com"),
        ("response_cookie_paths", "ws"),
        ("response_cookie_paths", "/ws/../admin"),
        ("response_cookie_paths", "/ws/%2e%2e"),
        ("response_cookie_paths", "/\u00e9"),
    ],
)
def test_an_allowed_domain_or_path_that_is_not_one_is_a_problem_by_field(field: str, value: str) -> None:
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], field: [value]}
    with pytest.raises(ConfigError) as info:
        load_config({"apis": [api]})
    assert [problem.partition(": ")[0] for problem in info.value.problems] == [f"apis[0].{field}[0]"]


def _lines() -> bytes:
    return b"".join(f"Set-Cookie: {value}\r\n".encode() for value in (*HOSTILE, *WITHIN, NO_PATH[0]))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "for more than the API" in r.getMessage()
    ]


@pytest.mark.parametrize("mode", list(CONNECTORS))
@pytest.mark.parametrize(("refuse", "status"), [(False, 101), (True, 403)])
async def test_a_network_upstreams_cookies_reach_no_more_than_its_api(
    mode: str, refuse: bool, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    heads = []
    async with headered_upstream(_lines()) as (upstream_side, port):
        upstream = f"ws://127.0.0.1:{port}" + ("/refuse" if refuse else "/")
        api = {"name": "evil", "path": "/ws/evil", "upstreams": [upstream], **CONNECTORS[mode]}
        with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
            for _ in range(3):
                upstream_side.ended.clear()
                heads.append(await answer_head(server.port, "/ws/evil"))
                await asyncio.wait_for(upstream_side.ended.wait(), 10)
    for head in heads:
        assert status_of(head) == status
        assert header_values(head, "set-cookie") == [*SCOPED, *WITHIN, NO_PATH[1]]
    (warned,) = _warnings(caplog)  # three answers, one line
    assert warned.startswith("API evil: an upstream's answer set a cookie for more than the API ('wide' ")
    assert "'Domain=.example.com, Path=/'" in warned and "the path '/ws/evil'" in warned


@pytest.mark.parametrize(("refuse", "status"), [(False, 101), (True, 403)])
async def test_an_in_process_apps_cookies_reach_no_more_than_its_api(
    refuse: bool, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = answering_with([("set-cookie", value) for value in (*HOSTILE, *WITHIN, NO_PATH[0])], refuse=refuse)
    gateway = ProbedGateway(
        {"apis": [{"name": "evil", "path": "/ws/evil", "upstreams": [{"url": "asgi:", "app": app}]}]}
    )
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, "/ws/evil")
    assert status_of(head) == status
    assert header_values(head, "set-cookie") == [*SCOPED, *WITHIN, NO_PATH[1]]
    assert len(_warnings(caplog)) == 1


async def test_what_the_operator_allows_passes_as_written(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    values = ["wide=1; Domain=.example.com; Path=/; HttpOnly", "__Host-session=3; Path=/; Secure"]
    app = answering_with([("set-cookie", value) for value in values], refuse=False)
    api = {
        "name": "evil",
        "path": "/ws/evil",
        "upstreams": [{"url": "asgi:", "app": app}],
        "response_cookie_domains": [".Example.com"],
        "response_cookie_paths": ["/"],
    }
    with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, "/ws/evil")
    assert header_values(head, "set-cookie") == values
    assert _warnings(caplog) == []


LONG_WITHIN = "/ws/evil/" + "a" * 1100
"""Within the API as written, but past the 1024 octets a browser reads of an attribute (RFC 6265bis
§5.7): Chromium 156 ignores it and stores the cookie for the request path's directory, ``/ws``."""


@pytest.mark.parametrize(
    "value",
    [f"long=1; Path={LONG_WITHIN}", f"long=1; Path=/ws/evil; Path={LONG_WITHIN}", f"long=1; Path=  {LONG_WITHIN}\t"],
)
def test_a_path_longer_than_a_browser_reads_counts_as_outside(value: str) -> None:
    kept, narrowed = scoped_cookies(_headers([value]), EVIL)
    assert kept == _headers(["long=1; Path=/ws/evil"])
    assert [n.name for n in narrowed] == ["long"]


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        (b"/x;Path=/;Domain=127.0.0.1;/ws", "/x%3BPath=/%3BDomain=127.0.0.1%3B/ws"),
        (b"/x; Path=/ /ws", "/x%3B%20Path=/%20/ws"),
        (b"/\xe9\t\x7f/ws?q=;", "/%E9%09%7F/ws"),
    ],
)
def test_the_clients_own_path_ends_no_attribute(raw: bytes, written: str) -> None:
    """The request's path when the API's first segment is a placeholder: written as sent, its ``;``
    ended the ``Path`` and wrote the client's ``Path=/`` and ``Domain`` after it."""
    scope = cookie_scope({"path": "/", "raw_path": raw, "root_path": ""}, None, frozenset(), frozenset())
    assert scope.path == written
    (cookie,) = header_values_of(scoped_cookies(_headers(["affinity=1"]), scope)[0])
    assert cookie == f"affinity=1; Path={written}"


def test_a_root_path_a_mount_decoded_ends_no_attribute() -> None:
    scope = {"path": "/a;Path=/;/ws/evil", "root_path": "/a;Path=/;", "raw_path": b"/a%3BPath=%2F%3B/ws/evil"}
    assert cookie_scope(scope, "/ws/evil", frozenset(), frozenset()).path == "/a%3BPath=/%3B/ws/evil"


def test_a_cookie_whose_path_a_browser_would_ignore_is_dropped() -> None:
    """A client's path longer than a browser reads: the API's path would be ignored, its default wider."""
    long = CookieScope("/t/" + "r" * 1100)
    kept, narrowed = scoped_cookies(_headers(["affinity=1", "other=2; Path=/elsewhere"]), long)
    assert kept == []
    assert [one.reasons for one in narrowed] == [("api_path_too_long",)] * 2  # counted as dropped
    assert scoped_cookies(_headers(["up=3; Path=/"]), long._replace(paths=frozenset({"/"})))[0] == _headers(
        ["up=3; Path=/"]
    )


def header_values_of(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [value.decode("latin-1") for name, value in headers if name == b"set-cookie"]


@pytest.mark.parametrize("refuse", [False, True])
async def test_a_clients_path_writes_no_cookie_attribute_through_the_gateway(refuse: bool) -> None:
    """A page can open a WebSocket to any path of the origin: ``/x;Path=/;Domain=example.com;/ws`` made
    the upstream's affinity cookie the whole origin's and its parent domain's (Chromium sends ``;`` in a
    path as it is)."""
    cookies = [("set-cookie", "affinity=b2"), ("set-cookie", f"long=1; Path=/x/{'a' * 1100}")]
    api = {"name": "t", "path": "/{tenant}/{room}/ws", "upstreams": [{"url": "asgi:", "app": answering_with(
        cookies, refuse=refuse)}]}  # fmt: skip
    with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, "/x;Path=/;Domain=example.com;/ws")
    assert status_of(head) == (403 if refuse else 101)
    written = "/x%3BPath=/%3BDomain=example.com%3B/ws"
    assert header_values(head, "set-cookie") == [f"affinity=b2; Path={written}", f"long=1; Path={written}"]


@pytest.mark.parametrize(
    ("path", "sent", "written"),
    [("/ws/\u20ac", "/ws/%E2%82%AC", "/ws/%E2%82%AC"), ("/a;Domain=example.com", "/a;Domain=example.com",
      "/a%3BDomain=example.com")],
    ids=["beyond-latin-1", "semicolon"],
)  # fmt: skip
async def test_an_apis_own_path_is_written_as_a_browser_sends_it(path: str, sent: str, written: str) -> None:
    """An API's path is configured decoded: ``/ws/€`` made every answer that set a cookie a 500 (a
    traceback: not Latin-1), and ``/a;Domain=example.com`` wrote the operator's ``;`` as the end of
    the attribute."""
    app = answering_with([("set-cookie", "sid=1")], refuse=False)
    api = {"name": "a", "path": path, "upstreams": [{"url": "asgi:", "app": app}]}
    with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
        head = await answer_head(server.port, sent)
    assert status_of(head) == 101
    assert header_values(head, "set-cookie") == [f"sid=1; Path={written}"]
