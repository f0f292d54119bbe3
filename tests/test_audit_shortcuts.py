"""An audit of the speed shortcuts of the handshake and message policies: each answers as its general
path does for what an adversarial client (or a misbehaving Redis) sends.

The Redis pipe's one-match reading of an integer array is held to ``_parse`` for integers Python cannot
read (past ``sys.get_int_max_str_digits()``): ``_parse`` fails the calls with a protocol error, and the
one match raised ``ValueError`` out of ``data_received`` (asyncio's "Fatal error" with a traceback, the
calls failed as a lost connection). ``strict_json``'s one reading, ``validate-jwt``'s one-token
shortcut and the header edits on the request's own copy are held to the general paths over generated
requests and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError, RedisError

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.upstream_edits import _edit
from asgi_ws_gateway.json_names import AmbiguousJson, check_names, check_unique_names, names_apart, strict_json
from asgi_ws_gateway.policies.auth import ValidateJwt
from asgi_ws_gateway.policies.message_rates import UNLIMITED, LocalBudget
from asgi_ws_gateway.policies.token_sources import token_copies
from asgi_ws_gateway.state.redis_pipe import Script, ScriptPipe, _Connection, _parse
from support.clients import count_handshake
from support.configs import build_config, write_config
from support.jwts import HS_SECRET
from support.policies import API, build, context
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

# -- the Redis pipe: an integer array read by one match --------------------------------------------

LIMIT = sys.get_int_max_str_digits()
TOO_LONG = b"1" * (LIMIT + 1)
"""An integer's digits that ``int()`` refuses: the one match takes them, as ``_parse``'s own match does."""


class _Wire:
    """A transport that keeps nothing and records an abort."""

    aborted = False

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


def _connection(calls: int) -> tuple[_Connection, _Wire, list[asyncio.Future[Any]]]:
    connection = _Connection(timeout=60)
    wire = _Wire()
    connection.connection_made(wire)  # type: ignore[arg-type]
    return connection, wire, [connection.call(b"PING") for _ in range(calls)]


def _outcome(future: asyncio.Future[Any]) -> tuple[str, Any]:
    assert future.done()
    exc = future.exception()
    if exc is None:
        return "reply", future.result()
    if isinstance(exc, ConnectionError):
        return "error", _kind(exc)
    return "reply", (type(exc).__name__, str(exc))  # an error reply: the call's own


def _kind(exc: ConnectionError) -> str:
    """A connection failure's kind (``Protocol error``): its text quotes the reply from where its reading
    stopped, which depends on how the reads cut it (``_parse`` item by item, or whole)."""
    return str(exc).partition(":")[0]


def _read_by_parse(wire: bytes, calls: int) -> list[tuple[str, Any]]:
    """What each call gets when every reply is read by ``_parse`` (the general reading): its reply,
    or, from the first reply that is not one, the protocol error for it and every call after."""
    outcomes: list[tuple[str, Any]] = []
    position = 0
    while len(outcomes) < calls:
        try:
            parsed = _parse(wire, position)
        except ConnectionError as exc:
            return outcomes + [("error", _kind(exc))] * (calls - len(outcomes))
        assert parsed is not None, "the test's wire holds every reply whole"
        reply, position = parsed
        outcomes.append(("reply", (type(reply).__name__, str(reply)) if isinstance(reply, RedisError) else reply))
    return outcomes


async def test_an_integer_python_cannot_read_fails_the_calls_as_a_protocol_error() -> None:
    """``*1 :<4,301 digits>``: a protocol error for the call and those after it, as ``_parse`` says;
    the earlier replies delivered; nothing raised out of ``data_received`` (asyncio's fatal error)."""
    wire = b"*2\r\n:1\r\n:2\r\n" + b"*1\r\n:" + TOO_LONG + b"\r\n" + b"*1\r\n:3\r\n"
    connection, transport, futures = _connection(3)
    connection.data_received(wire)
    outcomes = [_outcome(future) for future in futures]
    assert outcomes == _read_by_parse(wire, 3)
    assert outcomes[0] == ("reply", [1, 2])
    assert outcomes[1][0] == "error" and "Protocol error" in outcomes[1][1]
    assert transport.aborted and connection.closed


_ITEMS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: b"%d" % n),
    st.sampled_from([b"0", b"-0", b"007", b"-1", b"9" * 40, b"1" * LIMIT, TOO_LONG, b"-" + TOO_LONG, b"+1", b"x"]),
)
_REPLIES = st.one_of(
    st.lists(_ITEMS, min_size=1, max_size=10).map(lambda items: b"*%d\r\n" % len(items) + b"".join(
        b":" + item + b"\r\n" for item in items)),
    st.sampled_from([b":5\r\n", b"+OK\r\n", b"$1\r\na\r\n", b"*0\r\n", b"-ERR no\r\n", b"*2\r\n:1\r\n$1\r\nb\r\n"]),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(replies=st.lists(_REPLIES, min_size=1, max_size=5), data=st.data())
async def test_the_connection_reads_every_reply_as_parse_does_wherever_the_reads_cut_it(
    replies: list[bytes], data: st.DataObject
) -> None:
    """Integer arrays of any integers (huge, negative, signed, leading zeros), beside other replies:
    each call gets what ``_parse`` gives it, however two reads cut the stream."""
    wire = b"".join(replies)
    expected = _read_by_parse(wire, len(replies))
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    connection, _, futures = _connection(len(replies))
    connection.data_received(wire[:cut])
    if not connection.closed:
        connection.data_received(wire[cut:])
    assert [_outcome(future) for future in futures] == expected


def _commands(buffer: bytearray) -> list[bytes]:
    """The names of the whole RESP commands at the front of ``buffer``, taken out of it."""
    names: list[bytes] = []
    while buffer.startswith(b"*") and (end := buffer.find(b"\r\n")) > 0:
        position, parts = end + 2, list[bytes]()
        for _ in range(int(buffer[1:end])):
            if (line_end := buffer.find(b"\r\n", position)) < 0:
                return names
            size = int(buffer[position + 1 : line_end])
            if len(buffer) < line_end + 2 + size + 2:
                return names
            parts.append(bytes(buffer[line_end + 2 : line_end + 2 + size]))
            position = line_end + 2 + size + 2
        del buffer[:position]
        names.append(parts[0].upper())
    return names


_FAKE_REDIS_REPLIES = {b"PING": b"+PONG\r\n", b"HELLO": b"-ERR unknown command 'HELLO'\r\n"}
"""What the impostor answers besides the script calls (redis-py falls back to RESP2, as with a Redis 5)."""


@contextlib.asynccontextmanager
async def _redis_answering(script_reply: bytes) -> AsyncIterator[int]:
    """A server on 127.0.0.1 speaking enough RESP to pass for Redis (PONG, no HELLO, OK to the rest) that
    answers every script call with ``script_reply``: a Redis that has gone wrong, or an impostor."""

    handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers[asyncio.current_task()] = writer  # type: ignore[index]
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                for name in _commands(buffer):
                    writer.write(
                        _FAKE_REDIS_REPLIES.get(name, script_reply if name.startswith(b"EVAL") else b"+OK\r\n")
                    )
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in handlers.values():  # connections the client left open: ended here, not by the loop's close
            writer.transport.abort()  # (a handler cancelled instead is an error in 3.11's stream callback)
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_a_store_answering_an_integer_python_cannot_read_is_a_protocol_error_over_a_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over a real connection: the script's call fails with the protocol error (after its one retry
    on a fresh connection), and the event loop logs no fatal error with a traceback."""
    async with _redis_answering(HOSTILE_DECISION) as port:
        pipe = ScriptPipe(host="127.0.0.1", port=port, timeout=5)
        try:
            with caplog.at_level(logging.DEBUG, logger="asyncio"), pytest.raises(ConnectionError) as raised:
                await pipe.run(Script("return 1"), ["k"], [1])
        finally:
            await pipe.aclose()
    assert "Protocol error" in str(raised.value)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


HOSTILE_DECISION = b"*3\r\n:1\r\n:" + TOO_LONG + b"\r\n:0\r\n"
"""A limit script's decision whose second integer Python cannot read."""


@pytest.mark.parametrize(("on_store_error", "status"), [("open", 101), ("closed", 503)])
async def test_a_gateway_whose_store_answers_an_integer_python_cannot_read_fails_as_configured_without_a_traceback(
    tmp_path: Path, upstream: UpstreamServer, on_store_error: str, status: int
) -> None:
    """End to end (``asgi-ws-gateway run``, real clients): the store's answer is an outage of the
    store, as for any reply that is not RESP (fail open or closed as configured, one WARNING); the
    event loop's "Fatal error" and its traceback are not in the log."""
    policy = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 10, "window": 60,
                                    "on_store_error": on_store_error}}  # fmt: skip
    async with _redis_answering(HOSTILE_DECISION) as port:
        store = {"type": "redis", "url": f"redis://127.0.0.1:{port}/0", "timeout": 3}
        config = write_config(tmp_path, build_config(upstream, api={"policies": [policy]}, store=store))
        log = tmp_path / "gateway.log"
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as gateway:
            outcomes: Counter[int] = Counter()
            for _ in range(3):
                await count_handshake(gateway.url("/ws/echo"), outcomes)
    assert outcomes == Counter({status: 3})
    text = log.read_text()
    assert "Redis store failed: ConnectionError: Protocol error" in text
    assert "Fatal error" not in text and "Traceback" not in text


# -- strict_json: a compact message read once -------------------------------------------------------

_FOLDING_ALIKE = [
    ["a", "A"],
    ["ss", "SS", "ß", "ẞ", "sS"],
    ["s", "S", "\u017f"],
    ["k", "K", "\u212a"],
    ["\u03c3", "Σ", "ς"],
    ["µ", "μ", "\u039c"],
    ["é", "É"],
    ["å", "Å", "\u212b"],
    ["i̇", "İ"],
    ["ff", "FF", "ﬀ"],
]
"""Names equal ignoring case (``casefold``), each group's spellings (the long s, the Kelvin and Ångström
signs, final sigma, micro sign, a ligature)."""
_GROUPS_SPAN = math.lcm(*map(len, _FOLDING_ALIKE))
_NAMES = st.one_of(
    # A group, then one of its spellings, as one draw: each group's names repeated to the same count
    # (a flatmap built a strategy per draw, most of this test's time).
    st.sampled_from([name for group in _FOLDING_ALIKE for name in group * (_GROUPS_SPAN // len(group))]),
    st.sampled_from(["b", "ab", "aB", "e\u0301", "", " ", "a b", "{", "[", '"', "\\", "\u0000", "\U0001f600"]),
)  # fmt: skip
_SCALARS = st.one_of(
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.sampled_from(["true", "false", "null", '"x"', '""', '"{"', '"}"', '"\\u0000"']),
    st.sampled_from(["-0", "1.0", "1e2", "1E2", "-1.5", "1e400", "123456789012345678901234567890", '"\\u0041"',
                     '"\\ud83d\\ude00"', '"\\/"', " 1"]),
)  # fmt: skip
"""Numbers and strings as orjson writes them (most), and as it does not (read twice)."""


def _written_name(name: str, escape: bool) -> str:
    """A name as JSON text: as orjson writes it, or with every character escaped (the same name)."""
    if not escape:
        return orjson.dumps(name).decode()
    units = name.encode("utf-16-be")
    return '"' + "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)) + '"'


def _objects(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Compact objects whose names are mostly spellings of one group (so that some fold alike)."""

    def pairs(group: list[str]) -> st.SearchStrategy[list[tuple[str, bool, str]]]:
        escaped = st.integers(0, 5).map(lambda draw: draw == 0)  # a name escaped: 1 in 6
        return st.lists(st.tuples(st.sampled_from(group) | _NAMES, escaped, children), max_size=5)

    # One strategy per group, built once: one_of picks a group as sampled_from(...).flatmap(pairs) did,
    # without building a new strategy on every draw.
    return st.one_of([pairs(group) for group in _FOLDING_ALIKE]).map(
        lambda items: "{" + ",".join(f"{_written_name(n, e)}:{v}" for n, e, v in items) + "}"
    )


_MESSAGES = st.recursive(_SCALARS, _objects, max_leaves=10)
_WRITTEN_BY_ORJSON = st.recursive(
    st.integers(-9, 9) | st.booleans() | st.none() | st.text(max_size=2),
    lambda children: st.dictionaries(_NAMES, children, max_size=4),
    max_leaves=10,
).map(lambda value: orjson.dumps(value).decode())
"""Messages exactly as orjson writes them (the one reading's case): names folding alike at any depth."""


def _read(reader: Any, data: str | bytes) -> tuple[str, Any]:
    try:
        return "value", reader(data)
    except AmbiguousJson as exc:
        return "ambiguous", str(exc)
    except ValueError as exc:  # orjson's JSONDecodeError, or another ValueError the general path raises
        return type(exc).__name__, None


def _general(data: str | bytes) -> Any:
    """strict_json's general path: orjson, then every name read again by the scanner."""
    value = orjson.loads(data)
    check_unique_names(data)
    return value


# Each text is read both as str and as bytes: 400 examples hold each form to the general path on 400
# texts, as 800 examples with a drawn form did (about 400 a form), for half the drawing.
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_WRITTEN_BY_ORJSON | _objects(_MESSAGES) | _MESSAGES)
def test_strict_json_refuses_what_the_general_path_refuses(text: str) -> None:
    """Names twice exactly, ignoring case (ß/SS, the long s, the Kelvin sign, the Greek sigmas), spelled
    with escapes, numbers orjson writes otherwise: the one reading answers as orjson and the scanner do."""
    for data in (text, text.encode()):
        assert _read(strict_json, data) == _read(_general, data)


_ALIKE = [name for group in _FOLDING_ALIKE for name in group]
_DECLARED = st.lists(_NAMES, max_size=8) | st.lists(_NAMES, max_size=8).map(lambda names: _ALIKE + names)
"""A schema's declared names: a few, or every spelling alike besides (all of which fold with another)."""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_WRITTEN_BY_ORJSON | _objects(_MESSAGES), declared=_DECLARED)
def test_names_told_apart_are_refused_as_the_general_path_refuses(text: str, declared: list[str]) -> None:
    """Objects whose names are all among ``apart`` are not folded (the root's looked at by the caller, as
    validate-message does): the same answers as the general path, whatever spellings alike the declared
    names hold (those are left out of ``apart``)."""
    apart = names_apart(declared)

    def told(data: str | bytes) -> Any:
        value = orjson.loads(data)
        check_names(data, value, apart, root_apart=type(value) is dict and apart.issuperset(value))
        return value

    for data in (text, text.encode()):
        assert _read(told, data) == _read(_general, data)


def test_names_apart_leaves_out_every_name_another_equals_ignoring_case() -> None:
    declared = ["id", "ID", "type", "\u00df", "SS", "\u017f", "s", "K", "\u212a", "room"]
    assert names_apart(declared) == {"type", "room"}


@pytest.mark.parametrize(
    "text",
    ['{"ß":1,"SS":2}', '{"\u017f":1,"S":2}', '{"Σ":1,"ς":2}', '{"a":1,"\\u0041":2}', '{"a":{"K":1,"\u212a":2}}',
     '{"\\u00df":1,"ss":2}', '{"é":1,"É":2}'],
)  # fmt: skip
def test_compact_names_equal_ignoring_case_are_refused(text: str) -> None:
    with pytest.raises(AmbiguousJson):
        strict_json(text)
    with pytest.raises(AmbiguousJson):
        strict_json(text.encode())


# -- validate-jwt: one copy of the token ------------------------------------------------------------

_SOURCES: list[list[dict[str, str]]] = [
    [{"header": "Authorization"}],
    [{"query": "access_token"}],
    [{"query": "jwt"}],
    [{"cookie": "jwt"}],
    [{"header": "X-Token"}],
    [{"subprotocol": "bearer."}],
    [{"header": "Authorization"}, {"query": "access_token"}],
    [{"cookie": "jwt"}, {"header": "Authorization"}],
]
_AUTHORIZATION = st.sampled_from(["Bearer T1", "Bearer T2", "bearer T1", "BEARER  T1 ", "Bearer\tT2", "Basic T1",
                                  "Bearer", "Bearer ", "BearerT1", "Token T1", "Bearer T1, Bearer T2"])  # fmt: skip
_QUERY = st.sampled_from(["access_token=T1", "access_token=T2", "ACCESS_TOKEN=T1", "access_token=", "room=1",
                          "%61ccess_token=T2", "access.token=T2", "jwt=T1", "jwt=T2", "JWT=T1"])  # fmt: skip
_REQUESTS = st.fixed_dictionaries(
    {
        "authorization": st.lists(_AUTHORIZATION, max_size=2),
        "x_token": st.lists(st.sampled_from(["T1", "T2", ""]), max_size=2),
        "query": st.lists(_QUERY, max_size=3),
        "cookies": st.lists(st.sampled_from(["jwt=T1", "jwt=T2", "JWT=T1", "theme=dark"]), max_size=2),
        "subprotocols": st.lists(st.sampled_from(["bearer.T1", "Bearer.T2", "chat"]), max_size=2, unique=True),
    }
)


def _request(sent: dict[str, Any]) -> Any:
    headers = [("authorization", value) for value in sent["authorization"]]
    headers += [("x-token", value) for value in sent["x_token"]]
    headers += [("cookie", value) for value in sent["cookies"]]
    if sent["subprotocols"]:
        headers.append(("sec-websocket-protocol", ", ".join(sent["subprotocols"])))
    return context(headers=headers, query="&".join(sent["query"]), subprotocols=sent["subprotocols"])


def _general_token(policy: ValidateJwt, request: Any) -> str | None:
    """``_find_token`` before its shortcuts: every copy through the duplicates' sieve, RFC 6750's places
    always read beside a token found."""
    found, foreign = token_copies(policy.sources, request)
    tokens = list(dict.fromkeys(token for token in found if token))
    if tokens and policy.rfc6750_sources:
        unread, unread_foreign = token_copies(policy.rfc6750_sources, request)
        tokens += [token for token in dict.fromkeys(unread) if token and token not in tokens]
        foreign += unread_foreign
    if len(tokens) > 1 or (tokens and foreign):
        raise HandshakeDenied(400, "ambiguous", reason="token_ambiguous")
    return tokens[0] if tokens else None


def _found(find: Any, request: Any) -> tuple[Any, ...]:
    try:
        token = find(request)
    except HandshakeDenied as denial:
        return ("denied", denial.status, denial.reason, request.upstream._ops)
    return ("token", token, request.upstream._ops)


_POLICIES = [
    build({"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "token": sources}}) for sources in _SOURCES
]


@settings(max_examples=600, deadline=None)
@given(policy=st.sampled_from(_POLICIES), sent=_REQUESTS)
def test_the_one_token_shortcut_finds_what_the_general_path_finds(policy: Any, sent: dict[str, Any]) -> None:
    """A token in two places (header and query, two Authorization headers, a cookie and a header, a
    subprotocol), in other spellings and schemes: the same token or the same 400, the same copies
    taken out of the upstream request."""
    assert isinstance(policy, ValidateJwt)
    assert _found(policy._find_token, _request(sent)) == _found(lambda r: _general_token(policy, r), _request(sent))


# -- header edits on the request's own copy ---------------------------------------------------------


def test_header_edits_change_neither_the_clients_headers_nor_another_backends_request() -> None:
    """Two backends' requests from one handshake, the client's scope read by both: an edit lands on each
    request's own list (what the general edit makes of the unedited request), never on the scope's
    headers or on a request built before."""
    sent = [("x-tenant", "acme"), ("x-a", "1"), ("x-tenant", "other"), ("x-c", "3")]
    request_context = context("/ws/chat", params={"room": "chat"}, headers=sent)
    scope_headers = list(request_context.request.scope["headers"])
    request_context.upstream.set_header("x-tenant", "edited")
    request_context.upstream.set_header("x-b", "2", "append")
    request_context.upstream.set_header("x-c", "kept?", "skip")
    request_context.upstream.remove_header("x-a")
    first = request_context.build_request(API, API.upstreams[0])
    first_headers = list(first.headers)
    second = request_context.build_request(API, API.upstreams[0])
    unedited = context("/ws/chat", params={"room": "chat"}, headers=sent).build_request(API, API.upstreams[0])
    expected = _edit(unedited.headers, "x-tenant", "edited", "override")
    expected = _edit(_edit(expected, "x-b", "2", "append"), "x-c", "kept?", "skip")
    assert first.headers == first_headers == second.headers == _edit(expected, "x-a", None, "delete")
    assert first.headers is not second.headers
    assert request_context.request.scope["headers"] == scope_headers
    second.headers.append(("x-later", "3"))
    assert ("x-later", "3") not in first.headers


# -- the in-memory message rate limit: one call a message -------------------------------------------


class _UsedBudget:
    """The connection's budget before its one-call shortcut: what was used of the window, counted up."""

    def __init__(self, limits: tuple[int, int], window: float) -> None:
        self.limits, self.window = limits, window
        self.used = [0, 0]
        self.ends = 0.0

    def take(self, now: float, size: int) -> bool:
        if now >= self.ends:
            self.ends, self.used[0], self.used[1] = now + self.window, 0, 0
        if self.used[0] < self.limits[0] and self.used[1] + size <= self.limits[1]:
            self.used[0] += 1
            self.used[1] += size
            return True
        return False


@settings(max_examples=300, deadline=None)
@given(
    limits=st.sampled_from([(1, 10), (3, UNLIMITED), (UNLIMITED, 50), (2, 0), (5, 100)]),
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 0.0001, 0.5, 1.0, 1.0 - 2**-40, 1.0 + 2**-40, 3.0]),
                  st.sampled_from([0, 1, 9, 10, 11, 50, 51, 2**40])),
        max_size=40,
    ),
)  # fmt: skip
def test_the_message_budgets_shortcut_admits_what_the_used_count_admitted(
    limits: tuple[int, int], steps: list[tuple[float, int]]
) -> None:
    """At a window's very end and a hair either side, empty and oversized messages, one dimension
    unlimited: ``passes`` (and ``take`` after a ``passes`` that said no, as the handler calls it)
    admits exactly the messages the former count admitted, and ends its windows at the same times."""
    now = [1000.0]
    budget, reference = LocalBudget(limits, 1.0), _UsedBudget(limits, 1.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "monotonic", lambda: now[0])
        for wait, size in steps:
            now[0] += wait
            admitted = budget.passes(b"", size) or budget.take(now[0], size)
            assert admitted == reference.take(now[0], size)
            assert budget.ends == reference.ends


# -- a header read from the request as sent, names compared length first ----------------------------

_SENT_NAMES = st.sampled_from([b"authorization", b"Authorization", b"AUTHORIZATION", b"authorizatio",
                               b"authorization ", b"x-tenant", b"X-Tenant", b"x_tenant", b"x-tenan\xf4",
                               b"\xc1uthorization", b"x-forwarded-for", b"X-Real-IP", b"remote-user", b"cookie",
                               b"Cookie", b""])  # fmt: skip
_ASKED = ["authorization", "x-tenant", "x_tenant", "cookie", "x-forwarded-for", "x-real-ip", "remote-user", "x-tenanô"]


@settings(max_examples=300, deadline=None)
@given(
    sent=st.lists(st.tuples(_SENT_NAMES, st.sampled_from([b"a", b"", b"\xe9", b"Bearer x"])), max_size=8),
    trusted=st.booleans(),
)
def test_a_header_read_as_sent_is_what_the_full_parse_has(sent: list[tuple[bytes, bytes]], trusted: bool) -> None:
    """Names in any case, one character short or long, Latin-1 bytes, a proxy's names, from a trusted
    peer or not: the values found by comparing lengths first are the full header table's."""
    trusted_proxies = ["127.0.0.0/8"] if trusted else []
    for name in _ASKED:
        quick = context(trusted=trusted_proxies).request
        quick.scope["headers"] = sent
        full = context(trusted=trusted_proxies).request
        full.scope["headers"] = sent
        assert quick.header_values(name) == full.headers.get(name, []), name
