"""The path-overlap index finds exactly the overlaps the pairwise comparison finds (pure logic)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.config.checks import cross_check
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.routing import OverlapIndex, PathTemplate, overlapping

# A few literals (the empty segment among them: "/a//b", a trailing "/") and one parameter per place,
# so that random paths overlap often, differ often, and come in every length from 1 to 4 segments.
_SEGMENT = st.sampled_from(["a", "b", "", "{p}"])
_PATH = st.lists(_SEGMENT, min_size=1, max_size=4).map(
    lambda segments: "/" + "/".join(s if s != "{p}" else f"{{p{i}}}" for i, s in enumerate(segments))
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PATH, max_size=30))
def test_the_index_finds_what_every_pair_compared_finds(paths: list[str]) -> None:
    """Each template, looked up among those added before it, meets exactly the ones overlapping() says."""
    index: OverlapIndex[int] = OverlapIndex()
    templates = [PathTemplate(path) for path in paths]
    for i, template in enumerate(templates):
        found = index.overlapping(template)
        assert sorted(found) == [j for j in range(i) if overlapping(template, templates[j])]
        assert len(found) == len(set(found))  # each once
        index.add(template, i)


@settings(max_examples=100, deadline=None)
@given(st.lists(_PATH, max_size=20))
def test_cross_check_reports_every_overlapping_pair_once(paths: list[str]) -> None:
    """The configuration's overlap problems name each overlapping pair, the later API first, in order."""
    config = GatewayConfig.model_validate(
        {"apis": [{"name": f"api{i}", "path": path, "upstreams": ["ws://up:9000/"]} for i, path in enumerate(paths)]}
    )
    templates = [PathTemplate(path) for path in paths]
    expected = [
        f"apis[{i}].path: '{paths[i]}' overlaps apis[{j}].path '{paths[j]}'"
        for i in range(len(paths))
        for j in range(i)
        if overlapping(templates[i], templates[j])
    ]
    assert [p for p in cross_check(config) if " overlaps " in p] == expected
