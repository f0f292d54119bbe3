"""The ``Host`` header: only a host a client connects to passes, and ``{request.hostname}`` names it one way.

Before: ``check_host`` took every RFC 3986 reg-name character and any run of port digits. ``Host:
evil.test,gw.test`` was a 101 whose upstream got ``X-Forwarded-Host: evil.test,gw.test`` (Express reads
the first element, Werkzeug's ``ProxyFix`` the last); ``gw.test;for=1.2.3.4``, ``gw%2etest``,
``gw.test:99999`` and ``:`` passed too. And a policy could compare only the raw ``{request.host}``: a
``choose`` gating ``admin.example.com`` let ``ADMIN.example.com`` and ``admin.example.com:443`` by, which
the upstream's server routes to the same virtual host.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.handshake import host_header
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.host_header import check_host
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.templates import Template

CLIENTS_HOSTS = [
    "localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:8000", "[2001:db8::7]:443",
    "[::ffff:192.0.2.1]", "gw.test", "GW.Test:8443", "xn--bcher-kva.example", "my_host", "chat-1.internal:9000",
    "example.com.", "123.example", "a:65535", "a:1", "h" * 300,
]  # fmt: skip

REFUSED = [
    "evil.test,gw.test", "gw.test, evil.test", "gw.test;for=1.2.3.4", "gw.test=x", "gw!test", "gw$test",
    "gw&test", "gw'test", "gw(test)", "gw*test", "gw+test", "gw%2etest", "gw~test",  # reg-name's other characters
    "gw.test:99999", "gw.test:65536", "gw.test:0", "gw.test:080", "gw.test:", "gw.test:+80", "gw.test:8080:1",
    ":", ":80", "",  # no host
    "[fe80::1%eth0]", "[fe80::1%25eth0]:80", "[v1.fe]", "[::1", "[::1]x", "[::1]:", "::1", "[gw.test]",
    "127.1", "0x7f.0.0.1", "2130706433", "127.0.0.01", "999.1.1.1", "1.2.3.4.5", "1.2.3.4.", "gw.0x1",
    "gw..test", ".gw.test", "gw.test..", ".", "gw .test", "gw.t\xe9st",
]  # fmt: skip


def _check(host: str) -> None:
    check_host([(b"host", host.encode("latin-1")), (b"upgrade", b"websocket")])


@pytest.mark.parametrize("host", CLIENTS_HOSTS)
def test_a_host_a_client_sends_passes(host: str) -> None:
    _check(host)


@pytest.mark.parametrize("host", REFUSED)
def test_anything_else_is_a_400_before_any_policy(host: str) -> None:
    with pytest.raises(HandshakeDenied) as info:
        _check(host)
    assert (info.value.status, info.value.reason) == (400, "bad_request")


_LABEL = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=4), st.booleans(), st.none() | st.integers(1, 65535))
def test_every_name_of_labels_with_an_optional_port_passes(labels: list[str], dot: bool, port: int | None) -> None:
    """Letters, digits, ``-`` and ``_`` in labels, a trailing dot, a port from 1 to 65535."""
    name = ".".join(labels) + ("." if dot else "")
    _check(name if port is None else f"{name}:{port}")


@given(st.lists(_LABEL, min_size=1, max_size=3), st.sampled_from(",;=!$&'()*+%~@/?#[]\\\"<>{}|^`\x00\x7f\xe9"))
def test_a_name_with_any_other_character_is_a_400(labels: list[str], bad: str) -> None:
    name = ".".join(labels)
    for value in (f"{name}{bad}x", f"{bad}{name}", f"{name}:8{bad}"):
        with pytest.raises(HandshakeDenied):
            _check(value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("admin.example.com", "admin.example.com"),
        ("ADMIN.example.com", "admin.example.com"),
        ("admin.example.com:443", "admin.example.com"),
        ("Admin.Example.Com:8080", "admin.example.com"),
        ("admin.example.com.", "admin.example.com"),
        ("ADMIN.EXAMPLE.COM.:8443", "admin.example.com"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[2001:DB8::A]", "[2001:db8::a]"),
        ("[::FFFF:192.0.2.1]", "[::ffff:c000:201]"),  # as browsers write it, on any Python version
        ("my_Host:80", "my_host"),
        ("evil.test,gw.test", ""),
        ("", ""),
    ],
)
def test_the_hostname_is_the_host_spelled_one_way(host: str, expected: str) -> None:
    assert host_header.hostname(host) == expected


def _context(host: str) -> HandshakeContext:
    scope: dict[str, Any] = {"type": "websocket", "path": "/ws/chat", "query_string": b"", "scheme": "ws",
                             "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 5000)}  # fmt: skip
    return HandshakeContext("chat", RequestView(scope, {}, Networks(())))


def test_request_hostname_is_a_template_value_and_request_host_stays_as_sent() -> None:
    context = _context("Admin.Example.Com.:8443")
    assert Template("{request.hostname}|{request.host}").render(context) == "admin.example.com|Admin.Example.Com.:8443"
    assert context.request.hostname == "admin.example.com"


def _warnings(*conditions: dict[str, Any], top: bool = False) -> list[str]:
    gate = {"choose": {"when": [{"if": list(conditions), "policies": [
        {"check-header": {"header": "x-admin-key", "values": ["s3cret"]}}]}]}}  # fmt: skip
    api = {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://up.internal:9000/"], "policies": [gate]}
    config = {"apis": [{**api, "policies": []} if top else api], "policies": [gate] if top else []}
    return [w for w in load_policies(config).warnings if "{request.hostname}" in w]


@pytest.mark.parametrize(
    "condition",
    [
        {"ref": "request.host", "equals": "admin.example.com"},
        {"ref": "request.host", "not_equals": "public.example.com"},
        {"ref": "header.host", "in": ["admin.example.com", "root.example.com"]},
        {"ref": "header.Host", "equals": "admin.example.com"},
        {"ref": "header.x-forwarded-host", "equals": "admin.example.com"},
        {"ref": "request.host", "matches": "^admin\\."},
    ],
)
def test_a_condition_comparing_the_raw_host_is_warned_about_by_field_path(condition: dict[str, Any]) -> None:
    found = _warnings({"ref": "query.v", "exists": False}, condition)
    assert len(found) == 1 and found[0].startswith("apis[0].policies[0].choose.when[0].if: compares {"), found


def test_a_global_condition_is_warned_about_once() -> None:
    assert [w.split(":")[0] for w in _warnings({"ref": "request.host", "equals": "a.test"}, top=True)] == [
        "policies[0].choose.when[0].if"
    ]


@pytest.mark.parametrize(
    "condition",
    [
        {"ref": "request.hostname", "equals": "admin.example.com"},
        {"ref": "request.hostname", "in": ["admin.example.com"]},
        {"ref": "request.host", "exists": True},
        {"ref": "header.x-tenant", "equals": "admin.example.com"},
    ],
)
def test_a_condition_on_the_hostname_or_on_the_host_s_presence_is_not(condition: dict[str, Any]) -> None:
    assert _warnings(condition) == []
