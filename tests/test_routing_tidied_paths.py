"""Paths that are an API's only once tidied as other routers tidy them: refused, never handed to the app.

Litestar strips leading and trailing ``/`` and collapses runs of them, Channels' ``URLRouter`` strips
the leading ones, werkzeug matches ``//ws/chat`` as ``/ws/chat``, BlackSheep folds letter case and a
trailing ``/``, a router reading ``websocket.url.path`` drops a ``#`` and what follows, and servers
pass an absolute-form target (``GET http://other/ws/chat``) on as the path. Such a path was no
API's to the gateway, so it went to the wrapped application, whose own route at the API's path took
it with none of the API's policies (an attack pass). Pure logic here; the servers and routers in
``test_attack_tidied_paths.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway.routing import Router, resolve_scope

APIS = [("/ws/chat", "chat"), ("/ws/rooms/{room}", "rooms"), ("/ws/feed/", "feed"), ("/WS/Upper", "upper")]
ROUTER = Router(APIS)


def _scope(path: str, raw_path: bytes | None = None, root_path: str = "") -> dict[str, Any]:
    raw = path.encode("utf-8", "surrogateescape") if raw_path is None else raw_path
    return {"type": "websocket", "path": path, "raw_path": raw, "root_path": root_path}


@pytest.mark.parametrize(
    ("path", "api", "params"),
    [
        ("//ws/chat", "chat", {}),
        ("///ws/chat", "chat", {}),
        ("/ws//chat", "chat", {}),
        ("/ws/chat/", "chat", {}),
        ("/ws/chat///", "chat", {}),
        ("/WS/CHAT", "chat", {}),
        ("/ws/Chat/", "chat", {}),
        ("http://other/ws/chat", "chat", {}),
        ("HTTP://user@other:80/ws/chat", "chat", {}),
        ("ws://other/ws/chat", "chat", {}),
        ("ws/chat", "chat", {}),  # h11 takes a target without its '/'
        ("/ws/chat#x", "chat", {}),
        ("/ws/chat?x", "chat", {}),  # '%3F' decoded
        ("/ws/./chat", "chat", {}),
        ("/./ws/chat", "chat", {}),
        ("/ws/x/../chat", "chat", {}),
        ("/../ws/chat", "chat", {}),
        ("/ws/chat/.", "chat", {}),
        ("//ws/rooms/lobby", "rooms", {"room": "lobby"}),
        ("/ws/rooms//lobby/", "rooms", {"room": "lobby"}),
        ("/ws/feed", "feed", {}),  # the API's path ends in '/': Litestar's and BlackSheep's routes do not
        ("/ws/upper", "upper", {}),
        ("/ws/chat/\n", "chat", {}),
    ],
)
def test_a_path_that_tidies_into_an_apis_is_refused(path: str, api: str, params: dict[str, str]) -> None:
    resolved, disguised = resolve_scope(ROUTER, _scope(path))
    assert resolved is not None and resolved[0] == api
    assert resolved[1] == params
    assert disguised is not None and "tidy" in disguised


@pytest.mark.parametrize("path", ["/ws/chat%2F", "/%2Fws/chat", "/ws%2F%2Fchat"])
def test_an_encoded_slash_that_tidies_into_an_apis_path_is_refused(path: str) -> None:
    """The decoded path is tidied: ``%2F`` at the end or start is a trailing or leading ``/``."""
    from urllib.parse import unquote

    resolved, disguised = resolve_scope(ROUTER, _scope(unquote(path), path.encode()))
    assert resolved is not None and resolved[0] == "chat"
    assert disguised is not None


@pytest.mark.parametrize(
    "path",
    ["/ws/chat2", "/static//x", "/ws/chat/more", "/ws/rooms/", "/ws/rooms//", "/", "//", "/.well-known/x",
     "/ws/chat.", "/ws/chat%20", "http://other/ws/chat2", "/ws/feed/x", "/ws#/chat"],
)  # fmt: skip
def test_a_path_no_api_owns_even_tidied_is_the_apps(path: str) -> None:
    assert resolve_scope(ROUTER, _scope(path)) == (None, None)


@pytest.mark.parametrize(
    ("path", "api", "params"),
    [("/ws/chat", "chat", {}), ("/ws/rooms/Lobby", "rooms", {"room": "Lobby"}), ("/ws/feed/", "feed", {}),
     ("/WS/Upper", "upper", {}), ("/ws/rooms/a.b", "rooms", {"room": "a.b"})],
)  # fmt: skip
def test_an_apis_own_path_is_routed_as_sent(path: str, api: str, params: dict[str, str]) -> None:
    assert resolve_scope(ROUTER, _scope(path)) == ((api, params), None)


def test_under_a_root_path_the_apps_reading_is_tidied() -> None:
    resolved, disguised = resolve_scope(ROUTER, _scope("/api//ws/chat", root_path="/api"))
    assert resolved == ("chat", {}) and disguised is not None


def test_a_path_an_api_names_whole_is_routed_before_any_tidied_reading() -> None:
    """``/api/ws/chat`` is the API ``full``'s as sent, though under ``root_path="/api"`` it tidies into ``feed``'s."""
    router = Router([("/ws/chat/", "feed"), ("/api/ws/chat", "full")])
    assert resolve_scope(router, _scope("/api/ws/chat", root_path="/api")) == (("full", {}), None)


_LITERAL = st.text(alphabet="abcXYZ019-_.~", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))
_VALUE = st.text(alphabet="abcXYZ019-_~", min_size=1, max_size=5)


@st.composite
def _api_and_path(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A random API path template and the segments of one path it matches (a trailing '/' apart)."""
    count = draw(st.integers(0, 4))
    template, segments = [], []
    for index in range(count):
        if draw(st.booleans()):
            template.append(f"{{p{index}}}")
            segments.append(draw(_VALUE))
        else:
            literal = draw(_LITERAL)
            template.append(literal)
            segments.append(literal)
    trailing = "/" if count and draw(st.booleans()) else ""
    return "/" + "/".join(template) + trailing, segments


@st.composite
def _tidied_variant(draw: st.DrawFn, segments: list[str]) -> str:
    """``segments`` as a path some router tidies into them: extra '/', dot segments, letter case,
    an absolute form, a fragment or a query left in the path."""
    parts: list[str] = []
    for segment in segments:
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from([".", "x/..", "./.", "X/y/../.."])))
        parts.append(draw(st.sampled_from([segment, segment.upper(), segment.lower(), segment.swapcase()])))
    separator = draw(st.sampled_from(["/", "//", "///"]))
    path = separator + "/".join(draw(st.sampled_from(["", "/"])) + part for part in parts)
    if draw(st.booleans()):
        path += draw(st.sampled_from(["/", "//"]))
    if draw(st.booleans()):
        path += draw(st.sampled_from(["#x", "?q", "#/a/b"]))
    if draw(st.booleans()):
        path = draw(st.sampled_from(["http://other", "WS://u@h:1", "https://h"])) + path
    return path


@given(st.data())
def test_every_tidied_variant_of_an_apis_path_is_routed_or_refused(data: st.DataObject) -> None:
    """Never handed to the application: the gateway routes it (as sent) or refuses it (400)."""
    template, segments = data.draw(_api_and_path())
    router = Router([(template, "api")])
    path = data.draw(_tidied_variant(segments))
    resolved, disguised = resolve_scope(router, _scope(path))
    assert resolved is not None and resolved[0] == "api", (template, path)
    if router.resolve(path, path.encode()) is not None:
        assert disguised is None


_PATH = st.text(alphabet="/.#?aAbc{}%2F\n", max_size=16)


@given(st.data())
def test_a_path_the_router_maps_is_never_refused(data: st.DataObject) -> None:
    template, segments = data.draw(_api_and_path())
    router = Router([(template, "api")])
    own = "/" + "/".join(segments) + ("/" if template.endswith("/") and segments else "")
    path = data.draw(st.one_of(st.just(own), _tidied_variant(segments), _PATH.map(lambda tail: "/" + tail)))
    if router.resolve(path, path.encode()) is not None:
        assert resolve_scope(router, _scope(path))[1] is None


@given(st.text(alphabet="/.#?aAbK\u212a\x00-", max_size=12))
def test_a_path_the_fast_check_passes_is_already_tidy(path: str) -> None:
    """The tidying is skipped for a path without '//', a trailing '/', '/.', '#', '?', a control
    character or an upper-case letter: tidying such a path changes nothing, so nothing is missed."""
    from asgi_ws_gateway.routing import _UNTIDY, _tidy_path

    if path.startswith("/") and _UNTIDY.search(path) is None and path.lower() == path:
        assert _tidy_path(path) == path
