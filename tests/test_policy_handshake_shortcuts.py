"""The policy set's per-handshake shortcuts (issue 13 item 4b) answer exactly as the general paths do.

A rate-limit check packs its ``EVALSHA`` from a head and constants packed once (``Script.keyed_command``),
reads a decision's integers with one match wherever it lies in the buffer, and digests a client's key
once (``StoreKeys``); ``validate-jwt``'s cache reads a token's times once (``TokenTimes``) and skips
RFC 6750's query place in a request without a query; a header a policy reads is found from a kept
decision on its name. Each is held here to the general reading, over the inputs where they could part.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError

from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.forwarded import Networks
from asgi_ws_gateway.handshake.context import HandshakeContext
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.policies.token_cache import TokenTimes, time_problem
from asgi_ws_gateway.state.base import (
    KEPT_KEY_LENGTH,
    KEYS_KEPT,
    Decision,
    StoreKeys,
    StoreUnavailable,
    count,
    store_key,
)
from asgi_ws_gateway.state.redis import CONSTANTS_KEPT, RedisState, _decision, _ms
from asgi_ws_gateway.state.redis_pipe import _KEYED_KEPT, Script, _parse
from support.jwts import signing_key, token
from support.policies import build
from support.redis import RedisServer, redis_available

SCRIPT = Script("return {KEYS[1], ARGV[1]}")

# -- the command: a head and constants packed once -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "constants", "last"),
    [
        ("rl:{c:0123}", (100_000, 60_000), "0f" * 16),
        ("", (), ""),
        ("é:{ü}\udc80", (-1, 0, 12345678901234567890), "\ud800x"),
        ("k", ("day", b"\x00\xff", 7), "m\r\n$3"),
        ("k" * 5000, (1,), "m" * 300),
    ],
)
def test_a_keyed_command_is_the_general_commands_bytes_and_redis_pys(
    key: str, constants: tuple[Any, ...], last: str
) -> None:
    packer = Connection(encoding_errors="surrogatepass")
    expected = b"".join(packer.pack_command("EVALSHA", SCRIPT.sha, 1, key, *constants, last))
    assert SCRIPT.command([key], [*constants, last]) == expected
    assert SCRIPT.keyed_command(key, constants, last) == expected
    assert SCRIPT.keyed_command(key, constants, last) == expected  # packed from what was kept


def test_constants_kept_are_bounded_and_the_others_still_packed() -> None:
    script = Script("return 1")
    for limit in range(3 * _KEYED_KEPT):
        assert script.keyed_command("k", (limit, 1000), "m") == script.command(["k"], [limit, 1000, "m"])
    assert len(script._keyed) == _KEYED_KEPT


def test_a_limits_constants_are_converted_as_each_call_converted_them() -> None:
    """A limit and window kept converted give what ``count`` and ``_ms`` give, whatever was kept before;
    NaN is refused on every call, never kept; at most CONSTANTS_KEPT pairs are kept."""
    store = RedisState("redis://127.0.0.1:1", prefix="p")  # never connected: the conversion only
    pairs: list[tuple[Any, Any]] = [(3, 60), (3, 60.0), (3.0, 60), (10**20, 1e300), (1, 0.0004), (1, 0.0006),
                                    (7, 2.5), (7, 2.5004), (True, 1), (1, 1)]  # fmt: skip
    for _ in range(2):  # made, then read from what was kept
        for limit, window in pairs:
            constants = store._constants(limit, window)
            assert constants == (count(limit), _ms(window)), (limit, window)
            assert b"%d %d" % constants == b"%d %d" % (count(limit), _ms(window))  # the digits sent
    for _ in range(2):
        with pytest.raises(ValueError):
            store._constants(3, float("nan"))
    assert all(window == window for _, window in store._kept_constants)
    for limit in range(3 * CONSTANTS_KEPT):
        assert store._constants(limit + 1, 30) == (limit + 1, 30_000)
    assert len(store._kept_constants) == CONSTANTS_KEPT


# -- replies: a decision's integers in one match ---------------------------------------------------


def _item_by_item(buffer: bytes, position: int) -> tuple[Any, int] | None:
    """The reading the match stands in for: an array's count, then each ``:`` item read by ``int()``."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    count, position, items = int(buffer[position + 1 : end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        assert buffer[position : position + 1] == b":"
        items.append(int(buffer[position + 1 : end]))
        position = end + 2
    return items, position


INTEGERS = [b"0", b"1", b"-1", b"-0", b"007", b"99999", b"12345678901234567890", b"+3", b" 4", b"5 ", b"6_0"]


@pytest.mark.parametrize("count", [1, 3, 4, 9, 10, 12])
@pytest.mark.parametrize("text", INTEGERS)
def test_an_integer_array_is_read_as_item_by_item_wherever_it_lies(count: int, text: bytes) -> None:
    """First, last, or between other replies; any count; items the match does not take left to that reading."""
    reply = b"*%d\r\n" % count + b":1\r\n" * (count - 1) + b":" + text + b"\r\n"
    expected = _item_by_item(reply, 0)
    assert expected is not None
    decision = b"*3\r\n:1\r\n:99998\r\n:0\r\n"
    buffer = decision + reply + decision + b"+OK\r\n"
    first = _parse(buffer, 0)
    assert first == ([1, 99998, 0], len(decision))
    assert _parse(buffer, len(decision)) == (expected[0], len(decision) + len(reply))
    assert _parse(buffer, len(decision) + len(reply)) == ([1, 99998, 0], len(buffer) - 5)
    for cut in range(len(reply)):
        assert _parse(reply[:cut], 0) is None


@pytest.mark.parametrize("wire", [b"*3\r\n:1\r\n:2\r\n:x\r\n", b"*2\r\n:1\r\n:\xd9\xa3\r\n", b"*1\r\n:\r\n"])
def test_an_array_of_what_is_not_integers_is_still_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ConnectionError, match="Protocol error"):
        _parse(wire + b":5\r\n", 0)


def _decision_before(result: Any) -> Decision:
    """The reading of a decision before it took three and four values apart."""
    try:
        allowed, remaining, retry_ms, *resets_at = map(int, result)
        if len(resets_at) > 1:
            raise ValueError(f"{len(resets_at) + 3} values")
    except (TypeError, ValueError) as exc:
        raise StoreUnavailable(f"Redis answered {type(result).__name__}, not a decision") from exc
    return Decision(allowed != 0, remaining if remaining > 0 else 0, retry_ms / 1000 if retry_ms > 0 else 0.0,
                    float(resets_at[0]) if resets_at else 0.0)  # fmt: skip


@pytest.mark.parametrize(
    "result",
    [[1, 99999, 0], [0, 0, 1500], [1, -3, -7], [0, 0, 1500, 1767225600], [b"1", b"2", b"3"], b"123", "123",
     [1, 2], [1, 2, 3, 4, 5], [], 7, None, [1, "x", 0], [1, 2, 3, "y"], [1.9, 2.5, 0]],
)  # fmt: skip
def test_a_decision_is_read_as_before(result: Any) -> None:
    try:
        expected: Decision | str = _decision_before(result)
    except StoreUnavailable as exc:
        expected = str(exc)
    try:
        got: Decision | str = _decision(result)
    except StoreUnavailable as exc:
        got = str(exc)
    assert got == expected


# -- a limit's keys: digested once per client ------------------------------------------------------


@pytest.mark.parametrize("key", ["alice", "", "é\udc80", "a:b{c}", "x" * KEPT_KEY_LENGTH, "y" * (KEPT_KEY_LENGTH + 1)])
def test_a_limits_keys_are_store_key(key: str) -> None:
    keys = StoreKeys("gw", "rate", "api:chat")
    assert keys[key] == keys[key] == store_key("gw", "rate", "api:chat", key)
    assert (key in keys) == (len(key) <= KEPT_KEY_LENGTH)


def test_the_keys_kept_are_bounded() -> None:
    keys = StoreKeys("gw", "conc", "c")
    for i in range(KEYS_KEPT + 10):
        assert keys[f"client-{i}"] == store_key("gw", "conc", "c", f"client-{i}")
    assert len(keys) <= KEYS_KEPT


# -- validate-jwt's cache: a token's times read once -------------------------------------------------


TIMES = [None, 0, 1000, 1000.5, 1029, 1030, 1031, 999.9]


@pytest.mark.parametrize("exp", TIMES)
@pytest.mark.parametrize("nbf", TIMES)
@pytest.mark.parametrize("iat", TIMES)
def test_a_tokens_times_refuse_as_time_problem_does(iat: float | None, nbf: float | None, exp: float | None) -> None:
    claims = {name: value for name, value in (("iat", iat), ("nbf", nbf), ("exp", exp), ("sub", "a"))}
    times = TokenTimes(claims)
    for now in (970.0, 999.5, 1000.0, 1000.4, 1029.0, 1030.0, 1060.0, 1061.0):
        for leeway in (0.0, 30.0):
            assert times.problem(now, leeway) == time_problem(claims, now, leeway), (now, leeway)


def _context(headers: list[tuple[bytes, bytes]], query: bytes = b"", client: str = "10.0.0.1") -> HandshakeContext:
    scope = {"type": "websocket", "path": "/ws", "headers": headers, "query_string": query, "client": (client, 1)}
    return HandshakeContext("api", RequestView(scope, {}))


async def _verdict(policy: Any, context: HandshakeContext) -> tuple[int, str] | None:
    try:
        await policy.apply(context)
    except HandshakeDenied as denial:
        return denial.status, denial.reason
    return None


@pytest.mark.parametrize(
    ("query", "verdict"),
    [(b"", None), (b"room=1", None), (b"access_token=SAME", None), (b"access_token=other", (400, "token_ambiguous")),
     (b"ACCESS_TOKEN=other", (400, "token_ambiguous")), (b"%61ccess_token=other", (400, "token_ambiguous")),
     (b"access_token=", None)],
)  # fmt: skip
async def test_the_querys_access_token_is_still_read_beside_authorization(query: bytes, verdict: Any) -> None:
    """Skipped only where there is no query: any copy of another token there is still refused."""
    key = signing_key("ES256")
    policy = build({"validate-jwt": {"algorithms": ["ES256"], "public_keys": [key.public_pem]}})
    raw = token(key)
    for _ in range(2):  # verified, then from the cache
        context = _context([(b"authorization", f"Bearer {raw}".encode())], query.replace(b"SAME", raw.encode()))
        assert await _verdict(policy, context) == verdict


# -- validate-jwt's usual request: one Authorization header read in place --------------------------------

_BEARER = signing_key("ES256")
_BEARER_POLICY: Any = build({"validate-jwt": {"algorithms": ["ES256"], "public_keys": [_BEARER.public_pem]}})
_SCHEMES = ["Bearer", "bearer", "BEARER", "Basic", "Bearer:", "Bearerx", "", "\tBearer", " Bearer", "\xa0Bearer",
            "\x0bBearer"]  # fmt: skip
_GAPS = [" ", "  ", "\t", " \t", "\t ", "", "\xa0"]
_TOKENS = ["abc.def.ghi", "a b", "", " x ", "\xa0y", "x\t", "tok ", "SAME"]


@given(
    values=st.lists(st.tuples(st.sampled_from(_SCHEMES), st.sampled_from(_GAPS), st.sampled_from(_TOKENS)),
                    max_size=3),
    name=st.sampled_from([b"authorization", b"Authorization"]),
    query=st.sampled_from([b"", b"room=1", b"access_token=SAME", b"access_token=other", b"ACCESS_TOKEN=x"]),
)  # fmt: skip
def test_the_bearer_header_read_in_place_is_the_token_find_token_reads(
    values: list[tuple[str, str, str]], name: bytes, query: bytes
) -> None:
    """Taken only where the general reading takes the same token and refuses nothing; else left to it."""
    headers = [(name, f"{scheme}{gap}{value}".encode("latin-1")) for scheme, gap, value in values]

    def context() -> HandshakeContext:
        return _context([(b"host", b"gw"), *headers, (b"x-other", b"Bearer zzz")], query)

    fast = _BEARER_POLICY._bearer_token(context())
    if fast is not None:
        assert _BEARER_POLICY._find_token(context()) == fast


def test_the_usual_bearer_header_is_read_in_place() -> None:
    """The default place and the usual request: the in-place reading answers (the property above is not idle)."""
    assert _BEARER_POLICY.bearer_only
    assert _BEARER_POLICY._bearer_token(_context([(b"authorization", b"Bearer  abc.def ")])) == "abc.def"
    assert _BEARER_POLICY._bearer_token(_context([(b"authorization", b"Bearer abc")], b"room=1")) is None


@pytest.mark.parametrize(
    "token",
    [[{"header": "Authorization", "scheme": "Token"}], [{"header": "X-Token"}], [{"query": "access_token"}],
     [{"header": "Authorization"}, {"cookie": "jwt"}], [{"header": "Authorization"}, {"header": "Authorization"}]],
)  # fmt: skip
def test_other_token_places_are_read_by_find_token(token: list[dict[str, str]]) -> None:
    policy: Any = build(
        {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [_BEARER.public_pem], "token": token}}
    )
    assert not policy.bearer_only


async def test_a_cache_hit_read_in_place_answers_as_the_general_reading() -> None:
    """The same verdicts and claims through the in-place reading and the general one, verified then cached."""
    fast: Any = build({"validate-jwt": {"algorithms": ["ES256"], "public_keys": [_BEARER.public_pem]}})
    general: Any = build({"validate-jwt": {"algorithms": ["ES256"], "public_keys": [_BEARER.public_pem]}})
    general.bearer_only = False
    raw = token(_BEARER)
    for value in [f"Bearer {raw}", f"bearer  {raw} ", f"Bearer\t{raw}", "Bearer", "Basic abc", f"Bearer {raw}x"]:
        for _ in range(2):
            contexts = [_context([(b"authorization", value.encode())]) for _ in range(2)]
            verdicts = [await _verdict(fast, contexts[0]), await _verdict(general, contexts[1])]
            assert verdicts[0] == verdicts[1], value
            assert contexts[0].claims == contexts[1].claims
    assert fast.verifications == general.verifications == 3  # the valid token once, the edited one each time


# -- a header read as sent, from a kept decision on its name -------------------------------------------


@pytest.mark.parametrize("trusted", [False, True])
def test_a_header_is_read_as_the_full_parse_reads_it(trusted: bool) -> None:
    sent = [(b"Authorization", b"Bearer a"), (b"X-Real-IP", b"6.6.6.6"), (b"x-forwarded-for", b"6.6.6.6"),
            (b"Remote-User", b"admin"), (b"AUTHORIZATION", b"Bearer b"), (b"x-tenant", b"\xe9t\xe9"),
            (b"\xc9t\xe9", b"latin"), (b"x-Tenant", b"")]  # fmt: skip
    names = ["authorization", "x-real-ip", "x-forwarded-for", "remote-user", "x-tenant", "étéx", "ét\xe9", "missing"]
    for _ in range(2):  # the decisions on the names made, then kept
        for name in names:
            scope = {
                "type": "websocket",
                "path": "/ws",
                "headers": sent,
                "query_string": b"",
                "client": ("10.0.0.1", 1),
            }
            networks = ["10.0.0.0/8"] if trusted else None
            quick = RequestView(scope, {}, trusted_proxies=_networks(networks))
            full = RequestView(scope, {}, trusted_proxies=_networks(networks))
            parsed = full.headers  # the full parse first: header_values then reads it
            assert quick.header_values(name) == full.header_values(name) == parsed.get(name, []), name


def _networks(cidrs: list[str] | None) -> Networks | None:
    return Networks(cidrs) if cidrs is not None else None


# -- through the store, against Redis ----------------------------------------------------------------


@pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")
async def test_keyed_checks_are_sent_again_whole_when_redis_lost_its_scripts() -> None:
    """A hit and an acquire packed from kept constants: NOSCRIPT sends each again as EVAL, counted once."""
    with RedisServer() as server:
        store = RedisState(server.url, prefix="p", timeout=5)
        admin = Redis.from_url(server.url)
        assert store._pipe is not None
        try:
            key = store_key("p", "rate", "c", "alice")
            assert (await store.hit(key, 3, 60, "m1")).remaining == 2
            await admin.script_flush()
            decisions = await asyncio.gather(*(store.hit(key, 3, 60, f"m{i}") for i in range(2, 5)))
            assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1]
            assert [d.allowed for d in decisions].count(False) == 1
            lease_key = store_key("p", "conc", "c", "alice")
            await admin.script_flush()
            taken = await asyncio.gather(*(store.acquire(lease_key, os.urandom(4).hex(), 2, 30) for _ in range(3)))
            assert [d.allowed for d in taken].count(True) == 2
        finally:
            await admin.aclose()
            await store.aclose()
