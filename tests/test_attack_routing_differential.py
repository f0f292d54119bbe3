"""Differential probe: the API whose policies ran is the API whose path the upstream was sent.

Each example is a raw upgrade request for an API's path (or an application's) spelled as some layer
may read it otherwise: percent-encodings (``%2F``, ``%2f``, ``%252F``, ``%2e%2e``, ``%00``, ``%5C``),
dot segments, ``//``, backslashes, ``;params``, trailing dots and slashes, letter case, Unicode
(fullwidth solidus, NFC against NFD, raw UTF-8), long paths, ``?`` and ``#``, absolute-form targets,
under a ``Mount`` and uvicorn's ``--root-path``. Every carrier serves them: ``asgi-ws-gateway run``
(its own protocol; relayed, spliced), stock uvicorn under each WebSocket implementation, uvicorn with
the package's protocol (spliced; httptools, h11), and in-process (``asgi:``) upstreams.

Each API's policies set a header of its name (``X-Api``) and of the parameter they judged
(``X-Room``); the network upstream records them with the path it was sent, the application (the
in-process upstream too) with the route its router chose. For every 101:

- from an upstream: the API is the one an independent model of the documented routing gives (the
  path split at its real ``/``, each segment decoded once, exact templates), its policies saw the
  model's parameter, and the upstream path is the API's backend template filled with it (for an
  in-process upstream without ``path``: the API's own path, which the app routes to its route there);
- from the application, with no API's policies: no API owns the raw path it was given (less the
  mount's or root path), and its router did not take it to its route at an API's path;
- never from an API that denies (``admin``, ``roomadmin``: no key is ever sent).

Found, each on 2 of the 12 carriers: under a root path (uvicorn's ``--root-path``, a ``Mount``), an
in-process upstream without ``path`` was sent the whole path (``/api/ws/chat``) with no root path,
while the policies judged ``/ws/chat``: its router took it to another route than the API's (a
catch-all here). Under a ``Mount("/v1")``, ``/v1/ws/rooms/lobby%0A`` went to the application, not
refused: Starlette's Mount gives a path ending in a newline the root path ``/v1/``, which the gateway
read whole. ``ROUTING_EXAMPLES`` sets the number of generated targets per carrier (20).

Without sockets, ten times as many targets: Starlette's own router, on the scopes a server, its root
path and a ``Mount`` make of each, against the gateway's.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Match, Mount, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.routing import Router, param_problem, resolve_scope
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from support.apps import ASGIApp
from support.configs import write_config
from support.gateway import PASSTHROUGH
from support.processes import ready_server
from support.rawhttp import handshake, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

pytestmark = pytest.mark.filterwarnings(
    # uvicorn's legacy implementation, one of the carriers, warns that it is deprecated when it starts.
    "ignore::uvicorn.config.UvicornDeprecationWarning"
)

DENY = [{"check-header": {"header": "x-key", "values": ["secret"], "failed_status": 403}}]
SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
"""What an in-process upstream's path leaves unencoded in a segment (``upstream.request``)."""


@dataclass(frozen=True)
class Api:
    name: str
    path: str
    backend: str
    """The network upstream's path (and query), ``{room}`` the path parameter."""
    deny: bool = False
    rewrite: str | None = None
    """A ``rewrite-uri`` template: the upstream path its policies write instead."""

    @property
    def network_only(self) -> bool:
        """Its upstream path is not its own: an in-process upstream would route it elsewhere."""
        return self.rewrite is not None or "?" in self.backend

    @property
    def segments(self) -> list[str | None]:
        return [None if part.startswith("{") else part for part in self.path.split("/")[1:]]

    def policies(self) -> list[dict[str, Any]]:
        own = [{"set-header": {"header": "X-Api", "value": self.name}}]
        if "{room}" in self.path:
            own.append({"set-header": {"header": "X-Room", "value": "{path.room}"}})
        if self.rewrite is not None:
            own.append({"rewrite-uri": {"template": self.rewrite}})
        return DENY + own if self.deny else own


APIS = [
    Api("chat", "/ws/chat", "/up/chat"),
    Api("rooms", "/ws/rooms/{room}", "/up/rooms/{room}"),  # beside a longer template under the same prefix
    Api("roomadmin", "/ws/rooms/{room}/admin", "/up/roomadmin/{room}", deny=True),
    Api("admin", "/ws/admin", "/up/admin", deny=True),
    Api("cafe", "/ws/café", "/up/cafe"),
    Api("case", "/ws/Case", "/up/case"),
    Api("feed", "/ws/feed/{room}", "/up/feed?room={room}"),  # the parameter in the query
    Api("v2", "/ws/v2/{room}", "/up/unused", rewrite="/up/v2/{path.room}/x"),
]
BY_NAME = {api.name: api for api in APIS}
APP_PATHS = ["/app/x", "/ws/chat2", "/ws", "/ws/rooms"]
"""The application's own paths, no API's."""


# -- the model ------------------------------------------------------------------------------------

_SCHEME_AND_HOST = re.compile(r"\A[A-Za-z][A-Za-z0-9+.\-]*:(//[^/?#]*)?")


def origin_form(path: str) -> str:
    """An absolute form's path (``ws://gw/ws/chat``: ``/ws/chat``); any other as it is."""
    absolute = _SCHEME_AND_HOST.match(path)
    return path[absolute.end() :] or "/" if absolute else path


def readings(target: str) -> list[str]:
    """The paths a server may make of ``target``: an absolute form's path, with or without a ``#`` on."""
    path = origin_form(target.partition("?")[0])
    return list(dict.fromkeys([path, path.partition("#")[0] or "/"]))


def model_route(path: str, *, decoded: bool = False) -> tuple[Api, str | None] | None:
    """The documented routing: split at the real ``/``, each segment decoded once (a ``decoded`` path:
    not again), exact templates; the API and its ``room`` (None without one)."""
    try:
        parts = [part if decoded else unquote_to_bytes(part).decode() for part in path.split("/")[1:]]
    except UnicodeDecodeError:
        return None
    for api in APIS:
        if len(api.segments) == len(parts) and all(s in (None, p) for s, p in zip(api.segments, parts, strict=True)):
            rooms = [p for s, p in zip(api.segments, parts, strict=True) if s is None]
            if all(rooms):
                return api, rooms[0] if rooms else None
    return None


# -- the application and the carriers --------------------------------------------------------------


@dataclass
class Seen:
    """A handshake the application took: the route its router chose, what it was given."""

    route: str
    path: str
    raw_path: bytes | None
    api: str | None
    """The ``X-Api`` header: which API's policies ran (as an in-process upstream), None for none."""
    room: str | None


class InnerApp:
    """A Starlette app with a route at every API's path (the service it fronts) and a catch-all."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}

    def __repr__(self) -> str:  # what hypothesis prints of a failing example: not every handshake seen
        return "InnerApp()"

    def endpoint(self, route: str) -> Callable[[WebSocket], Any]:
        async def endpoint(websocket: WebSocket) -> None:
            headers = websocket.headers
            self.seen[headers.get("x-probe", "")] = Seen(
                route, websocket.scope["path"], websocket.scope.get("raw_path"), headers.get("x-api"),
                headers.get("x-room"),
            )  # fmt: skip
            await websocket.accept()
            await websocket.close()

        return endpoint

    def app(self) -> Starlette:
        routes = [WebSocketRoute(api.path, self.endpoint("api:" + api.name)) for api in APIS]
        return Starlette(routes=[*routes, WebSocketRoute("/{rest:path}", self.endpoint("app"))])


def config(upstream: UpstreamServer, *, app: Starlette | None = None, passthrough: bool = False) -> dict[str, Any]:
    """Every API to the network upstream's backend path, or (but for a network-only one) to ``app`` in process."""

    def backends(api: Api) -> list[Any]:
        return [upstream.url(api.backend)] if app is None or api.network_only else [{"app": app}]

    apis = [{"name": api.name, "path": api.path, "upstreams": backends(api), "policies": api.policies(),
             "passthrough": passthrough} for api in APIS]  # fmt: skip
    return {"apis": apis}


@dataclass
class Carrier:
    port: int
    prefix: str = ""
    """Sent before every target (a mount's path)."""
    root_path: str = ""
    """The server's root path, which it puts before every path it is sent."""
    inner: InnerApp | None = None
    in_process: bool = False
    """The APIs' upstream is the application itself, in process."""


def _uvicorn(
    upstream: UpstreamServer, ws: Any, *, in_process: bool = False, mount: str = "", **options: Any
) -> Iterator[Carrier]:
    inner = InnerApp()
    app = inner.app()
    apis = config(upstream, app=app if in_process else None, passthrough=ws == PASSTHROUGH)
    gateway: ASGIApp = WebSocketGateway(app, config=apis)
    served: ASGIApp = Starlette(routes=[Mount(mount, app=gateway)]) if mount else gateway
    with UvicornServer(served, ws=ws, **options) as server:
        yield Carrier(server.port, mount, options.get("root_path", ""), inner, in_process)


def _run(upstream: UpstreamServer, directory: Path, *, passthrough: bool) -> Iterator[Carrier]:
    path = write_config(directory, config(upstream, passthrough=passthrough))
    command = ["-m", "asgi_ws_gateway", "run", str(path), "--log-level", "warning", "--port"]
    with ready_server(lambda port: [*command, str(port)]) as server:
        yield Carrier(server.port)


CARRIERS: dict[str, Callable[[UpstreamServer, Path], Iterator[Carrier]]] = {
    "run-relay": lambda upstream, directory: _run(upstream, directory, passthrough=False),
    "run-splice": lambda upstream, directory: _run(upstream, directory, passthrough=True),
    "websockets-sansio": lambda upstream, _: _uvicorn(upstream, "websockets-sansio"),
    "wsproto": lambda upstream, _: _uvicorn(upstream, "wsproto", http="h11"),
    "websockets": lambda upstream, _: _uvicorn(upstream, "websockets"),
    "splice-httptools": lambda upstream, _: _uvicorn(upstream, PASSTHROUGH, http=GatewayHTTPProtocol),
    "splice-h11": lambda upstream, _: _uvicorn(upstream, PASSTHROUGH, http=GatewayH11Protocol),
    "root-path": lambda upstream, _: _uvicorn(upstream, "websockets-sansio", root_path="/api"),
    "mount": lambda upstream, _: _uvicorn(upstream, "wsproto", mount="/v1"),
    "in-process": lambda upstream, _: _uvicorn(upstream, "websockets-sansio", in_process=True),
    "in-process-root-path": lambda upstream, _: _uvicorn(upstream, "wsproto", in_process=True, root_path="/api"),
    "in-process-mount": lambda upstream, _: _uvicorn(upstream, "websockets-sansio", in_process=True, mount="/v1"),
}


@pytest.fixture(scope="module")
def routed_upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer(compression=None) as upstream:
        yield upstream


@pytest.fixture(scope="module", params=list(CARRIERS))
def carrier(
    request: pytest.FixtureRequest, routed_upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Carrier]:
    yield from CARRIERS[request.param](routed_upstream, tmp_path_factory.mktemp(request.param))


# -- targets ---------------------------------------------------------------------------------------

ROOM_CHARACTERS = "aZ9.-_~;:@!$&'()*+,=%/\\?#é\u212a\uff0f\uff0e\x00 "
"""Separators, escapes, dot and NUL, a Kelvin sign, fullwidth solidus and full stop, a space."""
ROOM_TEXT = st.text(alphabet=st.sampled_from(ROOM_CHARACTERS), min_size=1, max_size=6)


def _spelled(room: str, how: str) -> str:
    if how == "plain":
        return quote(room, safe=SEGMENT_SAFE)
    if how == "every-byte":
        return "".join(f"%{byte:02x}" for byte in room.encode())
    return quote(quote(room, safe=""), safe="")  # twice


ROOMS = st.builds(_spelled, ROOM_TEXT, st.sampled_from(["plain", "every-byte", "twice"]))
BASES = st.one_of(
    st.builds(lambda api, room: api.path.replace("{room}", room), st.sampled_from(APIS), ROOMS),
    st.sampled_from([api.path.replace("{room}", "lobby") for api in APIS] + APP_PATHS),
)


def _at_slash(path: str, where: int, new: Callable[[str, int], str]) -> str:
    slashes = [i for i, c in enumerate(path) if c == "/"] or [0]
    return new(path, slashes[where % len(slashes)])


def _at_letter(path: str, where: int, new: Callable[[str, int], str]) -> str:
    letters = [i for i, c in enumerate(path) if c.isascii() and c.isalpha()]
    return new(path, letters[where % len(letters)]) if letters else path


def _raw_unicode(path: str) -> str:
    """``%C3%A9`` sent as the raw UTF-8 bytes (nothing else decoded)."""
    return path.replace("%C3%A9", "é").replace("%c3%a9", "é")


MUTATIONS: dict[str, Callable[[str, int], str]] = {
    "encoded-slash": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "%2F" + s[i + 1 :]),
    "encoded-slash-lower": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "%2f" + s[i + 1 :]),
    "slash-encoded-twice": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "%252F" + s[i + 1 :]),
    "backslash": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "\\" + s[i + 1 :]),
    "encoded-backslash": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "%5C" + s[i + 1 :]),
    "fullwidth-solidus": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "%EF%BC%8F" + s[i + 1 :]),
    "double-slash": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "/" + s[i:]),
    "dot": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "/." + s[i:]),
    "dot-dot": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "/x/.." + s[i:]),
    "encoded-dot-dot": lambda p, w: _at_slash(p, w, lambda s, i: s[:i] + "/x/%2e%2e" + s[i:]),
    "upper": lambda p, w: _at_letter(p, w, lambda s, i: s[:i] + s[i].swapcase() + s[i + 1 :]),
    "encoded-letter": lambda p, w: _at_letter(p, w, lambda s, i: s[:i] + f"%{ord(s[i]):02X}" + s[i + 1 :]),
    "nul": lambda p, _: p + "%00",
    "newline": lambda p, _: p + "%0A",
    "param": lambda p, _: p + ";x=1",
    "trailing-dot": lambda p, _: p + ".",
    "trailing-slash": lambda p, _: p + "/",
    "nfd": lambda p, _: p.replace("%C3%A9", quote(unicodedata.normalize("NFD", "é"))),
    "raw-unicode": lambda p, _: _raw_unicode(p),
    "query": lambda p, _: p + "?room=x&a=%2F../admin",
    "fragment": lambda p, _: p + "#/../admin",
    "encoded-question": lambda p, _: p + "%3F/x",
    "absolute": lambda p, _: "ws://gw" + p,
    "absolute-other": lambda p, _: "http://other:81" + p,
    "absolute-upper": lambda p, _: "WS://GW" + p,
    "absolute-userinfo": lambda p, _: "ws://gw@other" + p,
    "scheme-only": lambda p, _: "ws:" + p,
    "long": lambda p, _: p + "/" + "a" * 3000,
}


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = quote(draw(BASES), safe="/%" + SEGMENT_SAFE)
    for name in draw(st.lists(st.sampled_from(list(MUTATIONS)), max_size=3)):
        path = MUTATIONS[name](path, draw(st.integers(0, 8)))
    return path


# -- the exchange and the property -----------------------------------------------------------------

_probes = itertools.count()


def upgrade(port: int, target: str, probe: str) -> bytes:
    """The response head to a raw upgrade request for ``target`` (sent as is), tagged with ``probe``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake(target, extra=b"X-Probe: " + probe.encode() + b"\r\n"))
        received = b""
        while b"\r\n\r\n" not in received and (block := sock.recv(65536)):
            received += block
    return received


def model_routes(carrier: Carrier, target: str) -> list[tuple[Api, str | None]]:
    """The APIs (and rooms) the model routes ``target`` to on ``carrier``, under each reading of it."""
    if target.startswith("/"):
        reads = readings(target)
    elif carrier.prefix:  # the mount's path spelled otherwise (/v1%2Fws/chat): its decoded path is routed
        decoded = unquote((carrier.prefix + target).partition("?")[0])
        route = model_route(decoded[len(carrier.prefix) :], decoded=True)
        return [route] if route is not None and decoded.startswith(carrier.prefix + "/") else []
    else:  # under a root path, the server's path is the root and the target: an absolute form is no longer one
        reads = [] if carrier.root_path else readings(target)
    return [route for route in map(model_route, reads) if route is not None]


def _blank_free(value: str | None) -> str:
    return (value or "").strip(" \t")


def _as_served(carrier: Carrier, raw_path: bytes | None) -> str:
    """The application's raw path as the client sent it: without the mount's or the server's root path."""
    path = (raw_path or b"").decode("latin-1")
    for root in (carrier.prefix, carrier.root_path):
        if root and path.startswith(root + "/"):  # as Starlette's get_route_path takes it off
            path = path[len(root) :]
    return path


def check(carrier: Carrier, upstream: UpstreamServer, target: str) -> None:
    probe = str(next(_probes))
    sent = carrier.prefix + target
    response = upgrade(carrier.port, sent, probe)
    if not response:  # a request line the server cannot parse may be closed on without an answer
        return
    status = status_of(response)
    records = [record for record in upstream.handshakes if record.header("x-probe") == probe]
    seen = carrier.inner.seen.get(probe) if carrier.inner else None
    if status != 101:
        assert seen is None or seen.api is None, (sent, status, seen)
        return
    assert len(records) + (seen is not None) == 1, f"{sent!r}: {records}, {seen}: {response[:300]!r}"
    if seen is not None and seen.api is None:
        owned = model_route(origin_form(_as_served(carrier, seen.raw_path)))
        assert owned is None, f"{sent!r}: the application took a path of {owned[0].name} unchecked: {seen}"
        assert not seen.route.startswith("api:"), f"{sent!r}: the application's router took it to {seen.route}"
        return
    if records:
        (record,) = records
        name, room, (path, _, query) = record.header("x-api"), record.header("x-room"), record.path.partition("?")
    else:
        assert seen is not None and carrier.in_process
        name, room, path, query = seen.api, seen.room, (seen.raw_path or b"").decode("latin-1"), ""
    routes = model_routes(carrier, target)
    assert name in {api.name for api, _ in routes}, f"{sent!r}: {name}'s policies ran, the model's routes: {routes}"
    api = BY_NAME[name]
    assert not api.deny, f"{sent!r} reached {name}, which denies"
    # A header's value reaches its reader without the blanks around it (a room of ' ').
    judged = [value for routed, value in routes if routed is api and _blank_free(value) == _blank_free(room)]
    assert judged, f"{sent!r}: {name}'s policies saw {room!r}, the model {routes}"
    room = judged[0]
    if not records:  # in process: the API's own path, each segment encoded as the gateway encodes it
        expected = "/" + "/".join(quote(room or "" if s is None else s, safe=SEGMENT_SAFE) for s in api.segments)
        assert seen is not None and seen.route == "api:" + name, f"{sent!r}: the app routed {path!r} to {seen}"
    else:
        expected, _, own_query = (api.rewrite or api.backend).replace("{path.room}", "{room}").partition("?")
        expected = expected.replace("{room}", quote(room or "", safe=""))
        if own_query:  # the operator's parameter, the client's copies of it dropped
            rooms = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == "room"]
            assert rooms == [room], f"{sent!r}: the upstream's query {query!r}, the policies saw {room!r}"
    assert path == expected, f"{sent!r}: the upstream got {path!r}, {name}'s backend is {expected!r}"


@settings(max_examples=int(os.environ.get("ROUTING_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(target=targets())
@example(target="/ws/chat")
@example(target="/ws/rooms/lobby")
@example(target="/ws/admin")
@example(target="/ws/rooms/lobby/admin")
@example(target="/ws/rooms/%2e%2e")
@example(target="/ws/rooms/a%2Fb/admin")
@example(target="/ws/rooms/lobby%2Fadmin")
@example(target="/ws/rooms/%252e%252e")
@example(target="/ws/Case")
@example(target="/ws/case")
@example(target="/ws/caf%C3%A9")
@example(target="/ws/cafe%CC%81")
@example(target="ws://gw/ws/admin")
@example(target="ws://gw/ws/rooms/x")
@example(target="/ws/chat#/../admin")
@example(target="/app/x")
@example(target="/ws/feed/lobby?room=staff&ROOM=x")
@example(target="/ws/v2/a%3Bb%2F..")
@example(target="/ws/rooms/lobby%0A")  # under a Mount: the root path "/v1/"
@example(target="%2Fws/chat")  # under a Mount: its path spelled otherwise
def test_the_upstream_is_sent_the_path_the_policies_judged(
    carrier: Carrier, routed_upstream: UpstreamServer, target: str
) -> None:
    check(carrier, routed_upstream, target)


def _starlette_scopes(target: str) -> Iterator[dict[str, Any]]:
    """The scopes an app behind the gateway is given for ``target``: at the root, under uvicorn's root path,
    under a ``Mount("/v1")`` (what Starlette's mount makes of it, when it matches)."""
    raw = target.partition("?")[0]

    def scope(root: str, root_path: str = "") -> dict[str, Any]:
        path, raw_path = root + unquote(raw), (root + raw).encode()
        return {"type": "websocket", "path": path, "raw_path": raw_path, "root_path": root_path}

    yield scope("")
    yield scope("/api", "/api")
    mounted = scope("/v1")
    match, child = Mount("/v1", app=InnerApp().app()).matches(mounted)
    if match is Match.FULL:
        yield {**mounted, **child}


ROUTER = Router([(api.path, api) for api in APIS])
API_ROUTES = [route for route in InnerApp().app().routes if isinstance(route, WebSocketRoute)][: len(APIS)]


@settings(max_examples=int(os.environ.get("ROUTING_EXAMPLES", "20")) * 10, deadline=None)
@given(target=targets())
@example(target="/ws/rooms/lobby%0A")
@example(target="/ws/rooms/lobby%2Fadmin")
def test_no_scope_starlette_takes_to_an_apis_route_passes_the_gateway(target: str) -> None:
    """Starlette's router against the gateway's, on the scopes a server and a mount make: a scope the app
    would take to its route at an API's path is that API's to the gateway, or refused (a disguised path,
    a parameter that cannot go upstream)."""
    for scope in _starlette_scopes(target):
        routed = next((route.path for route in API_ROUTES if route.matches(scope)[0] is Match.FULL), None)
        if routed is not None:
            resolved, disguised = resolve_scope(ROUTER, scope)
            assert resolved is not None, f"{scope}: the app's route {routed}, no API's to the gateway"
            api, params = resolved
            refused = disguised is not None or any(map(param_problem, params.values()))
            assert refused or api.path == routed, f"{scope}: the gateway's {api.name}, the app's {routed}"
