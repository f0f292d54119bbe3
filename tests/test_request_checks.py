"""The upstream request's last check before any connect, and set-backend-service's start-up rule (pure logic)."""

from __future__ import annotations

import pytest

from asgi_ws_gateway.errors import ConfigError, HandshakeDenied
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.upstream import checks
from asgi_ws_gateway.upstream.checks import MAX_UPSTREAM_URL, _check_url, check_upstream_request, valid_header
from support.policies import backend_claim_refusal, build, context, problems


def _refused(url: str, headers: list[tuple[str, str]] = (), *, in_process: bool = False) -> str:  # type: ignore[assignment]
    with pytest.raises(HandshakeDenied) as caught:
        check_upstream_request(url, list(headers), in_process=in_process)
    assert caught.value.status == 400 and caught.value.reason == "bad_request"
    return caught.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "ws://up:9000/a/../b", "ws://up:9000/a/%2e%2E/b", "ws://up:9000/a/./b", "ws://up:9000/a/%2E",
        "ws://up:9000/a%2Fb", "ws://up:9000/a%5cb", "ws://up:9000/a\\b", "ws://up:9000/a%00", "ws://up:9000/a%0d%0a",
        "ws://up:9000/a b", "ws://up:9000/caf\u00e9", "ws://up:9000/a%zz", "ws://up:9000/a%2", "ws://up:9000/a#frag",
        "ws://up:9000/a?q=1#frag", "ws://up:9000/a?q=a b", "ws://up:9000/a?q=%G1", "ws://up:9000/a?q=\u20ac",
        "http://up:9000/a", "ws://user:pw@up:9000/a", "ws://up:0/a", "ws://up:65536/a", "ws://up:9x/a",
        "ws://up%2Eevil/a", "ws://-up/a", "ws://[::1/a", "ws://[zz::1]/a", "ws:///a", "ws://a..b/a",
    ],
)  # fmt: skip
def test_an_unsendable_or_shape_changing_url_is_a_400(url: str) -> None:
    _refused(url)


@pytest.mark.parametrize(
    "url",
    ["ws://up:9000/a/b?c=d&e=%2F", "wss://chat-2.internal/x", "ws://[::1]:9/", "ws://127.0.0.1:1/%252e%252e",
     "ws://up./a/..x/.x/x.", "ws://up:9000"],
)  # fmt: skip
def test_a_good_url_passes(url: str) -> None:
    check_upstream_request(url, [("x-ok", "caf\u00e9\tvalue")], in_process=False)


def test_an_in_process_path_must_be_a_path() -> None:
    check_upstream_request("/rooms/a?x=1", [], in_process=True)
    _refused("ws://elsewhere/rooms", in_process=True)
    _refused("/rooms/..", in_process=True)


@pytest.mark.parametrize(
    "header",
    [("x-q", "\u20ac"), ("x-q", "a\r\nx-evil: 1"), ("x-q", "\x00"), ("x-q", "\x7f"), ("x q", "v"), ("x:q", "v"),
     ("", "v"), ("x-\u00e9", "v")],
)  # fmt: skip
def test_an_unsendable_header_is_a_400(header: tuple[str, str]) -> None:
    _refused("ws://up/a", [header])


def test_a_remembered_header_name_still_has_its_value_checked() -> None:
    """Names found to be tokens are remembered; each value is checked every time, and a name that is
    not a token is refused every time."""
    for _ in range(2):
        check_upstream_request("ws://up/a", [("x-seen", "printable"), ("x-seen", "caf\u00e9\tv")], in_process=False)
        for value in ["a\r\nx-evil: 1", "\x00", "\x7f", "\u20ac", "\u2028"]:
            _refused("ws://up/a", [("x-seen", value)])
            assert not valid_header("x-seen", value)
        _refused("ws://up/a", [("x seen", "v")])


def test_the_remembered_header_names_are_bounded() -> None:
    for n in range(600):
        assert valid_header(f"x-{n}", "v")
    assert valid_header("x-" + "n" * 100, "v")
    assert len(checks._TOKENS) <= checks._TOKENS_LIMIT
    assert "x-" + "n" * 100 not in checks._TOKENS


def test_a_url_verdict_is_remembered_only_when_it_passed() -> None:
    """A refused URL is refused every time; a URL that passed before still has its headers checked."""
    for _ in range(2):
        with pytest.raises(HandshakeDenied) as refused:
            check_upstream_request("ws://up/a/%2e%2e/b", [], in_process=False)
        assert refused.value.status == 400
    check_upstream_request("ws://up/remembered", [("x-ok", "1")], in_process=False)
    with pytest.raises(HandshakeDenied):
        check_upstream_request("ws://up/remembered", [("x-bad", "a\r\nb")], in_process=False)
    with pytest.raises(HandshakeDenied):  # the same string, but a path this time: checked on its own
        check_upstream_request("ws://up/remembered", [], in_process=True)
    remembered = _check_url.cache_info().currsize
    check_upstream_request("ws://up/remembered?access_token=SECRET", [], in_process=False)
    assert _check_url.cache_info().currsize == remembered  # a query (a credential, maybe) is never kept


def test_the_url_length_limit() -> None:
    base = "ws://upstream.example:9000/a?q="  # a host long enough for the request line to fit its 8 KiB too
    check_upstream_request(base + "x" * (MAX_UPSTREAM_URL - len(base)), [], in_process=False)
    assert "longer than 8192" in _refused(base + "x" * (MAX_UPSTREAM_URL - len(base) + 1))


@pytest.mark.parametrize(
    "namespace", ["header.x-host", "query.host", "cookie.h", "path.room", "client.ip", "request.host"]
)
def test_set_backend_service_cannot_use_client_values(namespace: str) -> None:
    (problem,) = problems({"set-backend-service": {"base_url": f"ws://{{{namespace}}}:9000"}})
    assert problem.startswith("apis[0].policies[0].set-backend-service.base_url: ")
    assert "must not use values the client sends" in problem


@pytest.mark.parametrize(
    "url", ["ws://{room}:9000/x", "ws://{room}.internal/x", "wss://chat:{room}/x", "ws://[{room}]/x", "ws://h-{room}/"]
)
def test_an_upstream_url_cannot_take_a_path_parameter_in_its_host_or_port(url: str) -> None:
    """``ws://{room}:9000`` let a client pick where the gateway connects (``/rooms/169.254.169.254``);
    set-backend-service refused client values in the host, the upstream URL itself did not."""
    document = {"apis": [{"name": "a", "path": "/rooms/{room}", "upstreams": [url]}]}
    with pytest.raises(ConfigError) as caught:
        load_config(document)
    (problem,) = caught.value.problems
    assert problem.startswith("apis[0].upstreams[0]: must not take a parameter in its host or port")
    load_config({"apis": [{"name": "a", "path": "/rooms/{room}", "upstreams": ["ws://chat:9000/rooms/{room}"]}]})


@pytest.mark.parametrize("region", ["evil.example:80@", "x/../../admin", "a#b", "a?b", "a b", "..", "eu%2Fx"])
async def test_a_claim_in_the_host_cannot_move_host_port_or_path(region: str) -> None:
    """A jwt value is escaped, so it can only make the host invalid (400), never another authority."""
    refused = await backend_claim_refusal("ws://chat-{jwt.region}.internal:9000", {"region": region}, "ws://up:9/x")
    assert refused.status == 400


async def test_a_plain_claim_in_the_host_is_used() -> None:
    policy = build({"set-backend-service": {"base_url": "ws://chat-{jwt.region}.internal:9000"}})
    ctx = context()
    ctx.claims = {"region": "eu"}
    await policy.apply(ctx)
    api = load_config({"apis": [{"name": "c", "path": "/ws/chat", "upstreams": ["ws://up:9/x"]}]}).apis[0]
    assert ctx.build_request(api, api.upstreams[0]).url == "ws://chat-eu.internal:9000/x"


@pytest.mark.parametrize("path", ["/" * 60 + "%", "/a" * 40 + "/%zz", "/" * 5000 + "\x7f"])
def test_a_path_check_is_linear(path: str) -> None:
    """Path characters include '/', so the old pattern could split a run of slashes 2^n ways before a
    bad character failed it: 22 slashes and a '%' took 0.33 s, each more slash doubling it (60 here:
    centuries). Refused at once now, as any path with a stray '%' or a control character."""
    _refused("ws://127.0.0.1:9" + path)
    check_upstream_request("ws://127.0.0.1:9" + "/" * 5000 + "%41", [], in_process=False)  # valid: passes
