"""Attacks on the message policies that read JSON: a message the gateway checks as one thing and
the upstream reads as another. Real uvicorn (the relay and the frame relay) in front of a real
``websockets`` upstream whose echo is what it received."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway.policies.message_checks import _set
from support.clients import connect
from support.message_replies import STAMP
from support.message_replies import auth as _auth
from support.message_replies import error as _error
from support.message_replies import reply as _reply
from support.message_replies import serve as _serve
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

SCHEMA = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "say"}, "text": {"type": "string", "maxLength": 20}},
}


def go_reads(text: str | bytes, field: str) -> object:
    """The value Go's encoding/json puts in a struct field tagged ``field``: it matches object names
    ignoring case (Unicode simple folding: the long s U+017F is 's', the Kelvin sign 'k'), and the last match wins.
    ASP.NET Core's JSON options (``JsonSerializerDefaults.Web``) match names ignoring case too."""
    found: object = None
    for name, value in json.loads(text, object_pairs_hook=list):
        if name.casefold() == field.casefold():
            found = value
    return found


CASE_VARIANTS = [
    '{"type": "say", "text": "hi", "TYPE": "admin"}',
    '{"type": "say", "text": "hi", "Type": "admin"}',
    '{"type": "say", "text": "hi", "Text": "far longer than the schema allows"}',
    '{"type": "say", "text": "hi", "meta": {"role": "user", "ROLE": "admin"}}',
]


@pytest.mark.parametrize("message", CASE_VARIANTS)
async def test_a_name_twice_ignoring_case_never_passes_validation(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    """The schema checks ``type``; Go and ASP.NET upstreams read ``TYPE`` into the same field."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA}}])
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, message)) == "ambiguous_json"
        assert await _reply(ws, '{"type": "say", "text": "hi"}') == '{"type": "say", "text": "hi"}'


@pytest.mark.parametrize("spoof", ["USER", "User", "u\u017fer"])  # the long s folds to 's' in Go
async def test_a_stamped_field_is_not_overridden_by_a_case_variant(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, spoof: str
) -> None:
    """``set: {user: '{jwt.sub}'}`` overwrites ``user`` in place; a ``USER`` after it reached the
    upstream, for Go to read as the user."""
    url = _serve(uvicorn_server, upstream_server, [STAMP])
    async with await connect(url, **_auth("alice")) as ws:
        answer = await _reply(ws, json.dumps({"user": "mallory", spoof: "admin", "text": "hi"}))
        assert _error(answer) == "ambiguous_json", f"the upstream read user={go_reads(answer, 'user')!r}"
        assert json.loads(await _reply(ws, '{"text": "hi"}')) == {"text": "hi", "user": "alice"}


REMOVE_AND_STAMP = {"transform-message": {"remove": ["role", "meta.internal"],
                                           "set": {"user": "{jwt.sub}", "meta.by": "{jwt.sub}"}}}  # fmt: skip
STAMPED = {"user": "alice", "meta": {"by": "alice"}}


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ({"ROLE": "admin", "text": "hi"}, {"text": "hi", **STAMPED}),  # remove: [role] passed ROLE on
        ({"Role": "admin"}, STAMPED),
        ({"USER": "mallory", "text": "hi"}, {"text": "hi", **STAMPED}),  # set added user beside USER
        ({"u\u017fer": "mallory"}, STAMPED),  # Go folds the long s to 's'
        ({"META": {"Internal": 1, "x": 2}}, {"user": "alice", "meta": {"x": 2, "by": "alice"}}),
        ({"Meta": {"BY": "mallory"}, "x": 1}, {"x": 1, **STAMPED}),
        ({"meta": "not an object", "x": 1}, {"x": 1, **STAMPED}),
        # A literal dotted name is what lodash's _.get(message, "meta.by") reads first: it outranked
        # the stamp, and outlived remove: [meta.internal] (an attack pass)
        ({"meta.by": "mallory", "META.INTERNAL": True, "x": 1}, {"x": 1, **STAMPED}),
        ({"meta": {"internal": 1}, "Meta.Internal": 1, "user.x": 1}, {"user.x": 1, **STAMPED}),
    ],
)
async def test_remove_and_set_act_on_every_case_variant_of_the_name(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, sent: dict[str, Any], received: dict[str, Any]
) -> None:
    """``remove: [role]`` passed ``ROLE`` on, for Go to read as ``role``; ``set: {user: ...}`` sent
    ``{"USER": "mallory", "user": "alice"}``, which the gateway itself calls ambiguous."""
    url = _serve(uvicorn_server, upstream_server, [REMOVE_AND_STAMP])
    async with await connect(url, **_auth("alice")) as ws:
        answer = await _reply(ws, json.dumps(sent))
        assert _error(answer) is None, answer
        assert json.loads(answer) == received
        assert go_reads(answer, "user") == "alice"
        assert go_reads(answer, "role") is None


async def test_names_that_differ_beyond_case_still_pass(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {}}])
    message = '{"user_id": 1, "userId": 2, "user-id": 3, "\u00e9": 4, "e": 5}'
    async with await connect(url, **_auth()) as ws:
        assert await _reply(ws, message) == message


BINARY_JSON = [
    b'{"type": "shout", "text": "hi"}',  # plain UTF-8 JSON in a binary frame
    b'\xef\xbb\xbf{"type": "shout", "text": "hi"}',  # a BOM: Python's json.loads(bytes) skips it
    '{"type": "shout", "text": "hi"}'.encode("utf-16"),  # Python's json.loads(bytes) detects UTF-16
    b'{"type": "shout", "text": "\xff"}',  # invalid UTF-8: Node and Go read U+FFFD
    b'{"type": "shout", "text": "hi", "n": 1e400}',  # Python: inf, JavaScript: Infinity
    b'  [{"type": "shout"}]',
]


@pytest.mark.parametrize("message", BINARY_JSON)
async def test_json_in_a_binary_frame_is_validated_when_binary_passes(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: bytes
) -> None:
    """``binary: pass`` is for binary payloads; Node's ``JSON.parse(data)`` and Python's
    ``json.loads(data)`` read a binary frame's JSON as if it were text."""
    policy = {"validate-message": {"schema": SCHEMA, "binary": "pass"}}
    url = _serve(uvicorn_server, upstream_server, [policy])
    async with await connect(url, **_auth()) as ws:
        answer = await _reply(ws, message)
        assert isinstance(answer, str), f"the upstream received {answer!r}"
        assert _error(answer) in ("schema_mismatch", "invalid_json")


@pytest.mark.parametrize(
    "message",
    [b"\x89PNG\r\n\x1a\n\x00\x00", b"\x00\x01\x02", b"", b"hello", b"{not json", b"\xff\xfe\x00"],
)
async def test_binary_that_no_reader_takes_for_json_still_passes(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: bytes
) -> None:
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA, "binary": "pass"}}])
    async with await connect(url, **_auth()) as ws:
        assert await _reply(ws, message) == message


LENIENT_OBJECTS = [
    '{"user": "admin", "text": "\\ud800"}',  # a lone surrogate: Python and JavaScript read it, Go as U+FFFD
    '{"user": "admin", "n": 1e400}',  # Python: inf, JavaScript: Infinity
    '{"user": "admin", "n": NaN}',  # Python's json.loads
    '{"user": "admin", "n": -Infinity}',
]


@pytest.mark.parametrize("message", LENIENT_OBJECTS)
async def test_an_object_only_other_readers_read_is_not_passed_on_unstamped(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    """``non_object: pass`` lets through what is not a JSON object; these are objects to Python's and
    JavaScript's parsers, which the gateway's strict parser refused: passed on, unstamped, the
    upstream read the client's own ``user``."""
    url = _serve(uvicorn_server, upstream_server, [{"transform-message": {**STAMP["transform-message"],
                                                                          "non_object": "pass"}}])  # fmt: skip
    async with await connect(url, **_auth("alice")) as ws:
        answer = await _reply(ws, message)
        assert _error(answer) == "invalid_json", f"the upstream received {answer!r}"
        assert await _reply(ws, "plain text") == "plain text"  # not JSON to anyone: passes as configured


@pytest.mark.parametrize(
    "message",
    [
        *LENIENT_OBJECTS,
        '\ufeff{"type": "say", "text": "hi"}',
        '{"text": "hi"}\x00',
    ],
)
async def test_text_that_strict_and_lenient_readers_disagree_on_is_invalid_json(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    """Already held: ``validate-message`` reads with orjson, which refuses what other readers disagree on."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {}}])
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, message)) == "invalid_json"


async def test_a_client_value_in_an_error_reply_cannot_add_fields(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Already held: a JSON ``error_reply`` escapes what it renders, whatever the client sent."""
    hostile = '", "error": "none", "admin": true, "x": "'
    reply = {"format": "json", "template": {"type": "error", "error": "{error.reason}", "who": "by {header.x-name}"}}
    url = _serve(uvicorn_server, upstream_server, [],
                 message_policies={"inbound": [{"limit-message-size": {"max": 1, "action": "drop"}}],
                                   "error_reply": reply})  # fmt: skip
    async with await connect(url, additional_headers={"X-Name": hostile, **_auth()["additional_headers"]}) as ws:
        answer = json.loads(await _reply(ws, "too long"))
        assert answer == {"type": "error", "error": "message_too_big", "who": f"by {hostile}"}


@pytest.fixture(scope="module")
def strict_upstream() -> Iterator[UpstreamServer]:
    """An upstream that takes the gateway at its word: no message over the API's 1,000 bytes."""
    with UpstreamServer(max_size=1000) as server:
        yield server


def _grows(limit: int) -> str:
    """An object of at most ``limit`` bytes that orjson writes ~3.7 times longer: 1e15 is 1000000000000000.0."""
    count = (limit - len('{"n": []}')) // len("1e15,")
    return '{"n": [' + ",".join(["1e15"] * count) + "]}"


async def test_a_rewritten_message_is_never_larger_than_max_message_size(
    uvicorn_server: UvicornFactory, strict_upstream: UpstreamServer
) -> None:
    """``transform-message`` writes the message again: what the transport limit admitted grew past it
    on the way to an upstream that relies on ``max_message_size``."""
    url = _serve(uvicorn_server, strict_upstream, [STAMP], max_message_size=1000)
    before = len(strict_upstream.closes)
    message = _grows(1000)
    assert len(message) <= 1000
    async with await connect(url, **_auth("alice")) as ws:
        answer = await _reply(ws, message)
        assert _error(answer) == "message_too_big"
        assert json.loads(await _reply(ws, '{"n": [1]}')) == {"n": [1], "user": "alice"}  # the connection goes on
    closes = await strict_upstream.wait_for_closes_async(before + 1)
    assert closes[-1][0] != 1009


def test_set_keeps_an_exactly_named_key_in_its_place() -> None:
    """Folding names took the exact key out and put it back last: {"meta": null, "id": 1} with
    set meta.x came out {"id": 1, "meta": {...}}; only the other spellings go."""
    value: dict[str, Any] = {"meta": None, "id": 1}
    _set(value, ("meta", "x"), 9)
    assert list(value.items()) == [("meta", {"x": 9}), ("id", 1)]
