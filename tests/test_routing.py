"""Path templates and routing (pure logic), and the path-parameter checks that keep a parameter one segment."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.routing import PathTemplate, PathTemplateError, Router, overlapping, param_problem
from asgi_ws_gateway.upstream.checks import check_path_params, check_upstream_request
from asgi_ws_gateway.upstream.request import fill_template


def test_exact_and_template_routes() -> None:
    router = Router([("/ws/chat", "chat"), ("/ws/rooms/{room}", "rooms"), ("/ws/{a}/x/{b}", "two")])
    assert router.resolve("/ws/chat") == ("chat", {})
    assert router.resolve("/ws/rooms/lobby") == ("rooms", {"room": "lobby"})
    assert router.resolve("/ws/1/x/2") == ("two", {"a": "1", "b": "2"})


def test_no_prefix_match_no_empty_segment_no_trailing_slash() -> None:
    router = Router([("/ws/chat", "chat"), ("/ws/rooms/{room}", "rooms")])
    assert router.resolve("/ws/chat/more") is None
    assert router.resolve("/ws/chat/") is None
    assert router.resolve("/ws/rooms/") is None
    assert router.resolve("/ws/rooms/a/b") is None
    assert router.resolve("/other") is None


def test_parameters_are_percent_decoded_once_from_the_raw_path() -> None:
    router = Router([("/r/{room}", 1)])
    assert router.resolve("/r/café au", b"/r/caf%C3%A9%20au") == (1, {"room": "café au"})
    assert router.resolve("/r/%2e%2e", b"/r/%252e%252e") == (1, {"room": "%2e%2e"})


def test_without_raw_path_the_decoded_path_is_not_decoded_again() -> None:
    assert Router([("/r/{room}", 1)]).resolve("/r/%2e%2e") == (1, {"room": "%2e%2e"})


@pytest.mark.parametrize(
    "raw",
    [b"/r/%2e%2e", b"/r/%2E%2e", b"/r/.%2e", b"/r/%2e", b"/r/a%2Fb", b"/r/a%2fb", b"/r/a%5Cb", b"/r/%00",
     b"/r/a%0d%0aX:1", b"/r/%7f", b"/r/%c2%85", b"/r/%ff", b"/r/%c0%ae%c0%ae", b"/r/%e0%80%ae",
     b"/r/%EF%BC%8E%EF%BC%8E", b"/r/a%EF%BC%8Fb", b"/r/%EF%BC%BC", b"/r/%E2%80%A4%E2%80%A4"],
)  # fmt: skip
def test_dangerous_parameter_values_are_reported(raw: bytes) -> None:
    resolved = Router([("/r/{room}", 1)]).resolve(unquote(raw.decode()), raw)
    assert resolved is not None
    assert param_problem(resolved[1]["room"]) is not None
    with pytest.raises(HandshakeDenied) as caught:
        check_path_params(resolved[1])
    assert caught.value.status == 400


@pytest.mark.parametrize("raw", [b"/ws%2Fchat", b"/ws/chat%2F", b"/ws%2fchat", b"/ws/ch%2Fat"])
def test_encoded_separators_do_not_reach_a_literal_route(raw: bytes) -> None:
    router = Router([("/ws/chat", "chat"), ("/ws/{a}/{b}", "two")])
    assert router.resolve(unquote(raw.decode()), raw) is None


def test_a_param_cannot_span_segments_through_an_encoded_slash() -> None:
    router = Router([("/ws/{a}/x/{b}", "two")])
    assert router.resolve("/ws/1/x/2", b"/ws/1%2Fx/2") is None
    assert router.resolve("/ws/1/x/2", b"/ws/1/x/2") == ("two", {"a": "1", "b": "2"})


@given(st.text(min_size=1))
def test_any_parameter_fills_exactly_one_upstream_segment_or_is_refused(value: str) -> None:
    """Property: a parameter either round-trips into one upstream segment or is refused."""
    raw = b"/r/" + quote(value, safe="").encode()
    resolved = Router([("/r/{room}", 1)]).resolve(unquote(raw.decode()), raw)
    assert resolved is not None and resolved[1] == {"room": value}
    url = fill_template("ws://up:9/rooms/{room}/end", resolved[1])
    if param_problem(value) is not None:
        with pytest.raises(HandshakeDenied):
            check_path_params(resolved[1])
        return
    check_upstream_request(url, [], in_process=False)
    segments = urlsplit(url).path.split("/")
    assert len(segments) == 4 and segments[3] == "end"
    assert unquote(segments[2], errors="strict") == value
    assert unquote(segments[2]) not in (".", "..")
    assert unicodedata.normalize("NFKC", unquote(segments[2])) not in (".", "..")


@given(st.binary(min_size=1, max_size=40))
def test_any_raw_segment_is_refused_or_stays_one_segment(raw_segment: bytes) -> None:
    """Property: whatever bytes the client sends, the upstream sees one non-dot segment or 400."""
    raw = b"/r/" + raw_segment.replace(b"/", b"%2F").replace(b"?", b"%3F").replace(b"#", b"%23")
    resolved = Router([("/r/{room}", 1)]).resolve("", raw)
    if resolved is None:
        return
    params = resolved[1]
    try:
        check_path_params(params)
    except HandshakeDenied as denial:
        assert denial.status == 400
        return
    url = fill_template("ws://up:9/rooms/{room}/end", params)
    check_upstream_request(url, [], in_process=False)
    segments = urlsplit(url).path.split("/")
    assert len(segments) == 4 and unquote(segments[2]) not in (".", "..")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("nope", "must start with '/'"),
        ("/a/{x}/{x}", "repeats parameter 'x'"),
        ("/a/pre{x}", "must be a whole segment"),
    ],
)
def test_malformed_templates(pattern: str, message: str) -> None:
    with pytest.raises(PathTemplateError, match=message):
        PathTemplate(pattern)


def test_overlap_detection() -> None:
    assert overlapping(PathTemplate("/ws/{a}"), PathTemplate("/ws/chat"))
    assert overlapping(PathTemplate("/ws/{a}/x"), PathTemplate("/ws/{b}/x"))
    assert not overlapping(PathTemplate("/ws/{a}/x"), PathTemplate("/ws/{b}/y"))
    assert not overlapping(PathTemplate("/ws/{a}"), PathTemplate("/ws/{a}/x"))
