"""Path templates and routing (pure logic)."""

from __future__ import annotations

import pytest

from asgi_ws_gateway.routing import PathTemplate, Router, TemplateError, overlapping


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


def test_parameters_are_percent_decoded() -> None:
    assert Router([("/r/{room}", 1)]).resolve("/r/caf%C3%A9%20au") == (1, {"room": "café au"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("nope", "must start with '/'"),
        ("/a/{x}/{x}", "repeats parameter 'x'"),
        ("/a/pre{x}", "must be a whole segment"),
    ],
)
def test_malformed_templates(pattern: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        PathTemplate(pattern)


def test_overlap_detection() -> None:
    assert overlapping(PathTemplate("/ws/{a}"), PathTemplate("/ws/chat"))
    assert overlapping(PathTemplate("/ws/{a}/x"), PathTemplate("/ws/{b}/x"))
    assert not overlapping(PathTemplate("/ws/{a}/x"), PathTemplate("/ws/{b}/y"))
    assert not overlapping(PathTemplate("/ws/{a}"), PathTemplate("/ws/{a}/x"))
