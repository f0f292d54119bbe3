"""Attacks on the message policies through what other JSON readers read: a schema's name in another
case (Go's encoding/json and ASP.NET Core bind it to the declared field) and a JSON value followed
by more (Go's json.Decoder, gorilla's ReadJSON and Jackson read the first value). Real uvicorn (the
relay and the frame relay) in front of a real ``websockets`` upstream, or an ``asgi:`` one, whose
echo is what it received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.json_names import AmbiguousJson, json_to_some_reader
from asgi_ws_gateway.loading import retrieve_reference
from asgi_ws_gateway.policies import schema_names
from asgi_ws_gateway.policies.schema_names import CaseVariants, declared_names
from asgi_ws_gateway.standalone import not_found
from support.apps import echo_app
from support.clients import connect
from support.jwts import token
from support.message_replies import JWT, STAMP
from support.message_replies import answer_kind as _answer
from support.message_replies import auth as _auth
from support.message_replies import error as _error
from support.message_replies import reply as _reply
from support.message_replies import serve as _serve
from support.relays import both_relays, module_upstream  # noqa: F401 - the fixtures uvicorn_server, upstream_server
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

SCHEMA = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["say"]},
        "role": {"enum": ["user"]},
        "status": {"enum": ["open"]},
        "kind": {"enum": ["chat"]},
        "meta": {"type": "object", "properties": {"by": {"type": "string", "maxLength": 8}}},
    },
    "allOf": [{"properties": {"items": {"type": "array", "items": {"properties": {"level": {"maximum": 1}}}}}}],
    "$defs": {"scoped": {"required": ["scope"]}},
    "dependentRequired": {"ticket": ["seat"]},
    "dependentSchemas": {"ticket": {"$ref": "#/$defs/scoped"}},
}

CASE_VARIANTS = [
    '{"type": "say", "ROLE": "admin"}',  # an optional property, on its own
    '{"type": "say", "Role": "admin"}',
    '{"type": "say", "\u017ftatus": "closed"}',  # the long s: Go folds it to 's'
    '{"type": "say", "\u212aind": "admin"}',  # the Kelvin sign: Go folds it to 'k'
    '{"type": "say", "meta": {"BY": "a name far too long for the schema"}}',  # a nested property
    '{"type": "say", "items": [{"LEVEL": 99}]}',  # under allOf and items
    '{"type": "say", "SCOPE": "admin"}',  # only required, in $defs, where dependentSchemas' $ref leads
    '{"type": "say", "Seat": 1}',  # named in dependentRequired
    '{"TYPE": "say", "type": "say"}',  # two spellings side by side: refused before, still
]


@pytest.mark.parametrize("message", CASE_VARIANTS)
async def test_a_schema_name_in_another_case_is_ambiguous(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    """``ROLE`` passed as an unknown name; a Go or ASP.NET upstream read it as ``role``."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA}}])
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, message)) == "ambiguous_json"
        allowed = '{"type": "say", "role": "user", "meta": {"by": "alice"}, "items": [{"level": 1}], "Other": 1}'
        assert await _reply(ws, allowed) == allowed


async def test_a_case_variant_in_a_binary_message_is_ambiguous_when_binary_passes(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA, "binary": "pass"}}])
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, b'{"type": "say", "ROLE": "admin"}')) == "ambiguous_json"


async def test_a_case_variant_closes_with_the_close_code_when_the_action_is_close(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    policy = {"validate-message": {"schema": SCHEMA, "action": "close", "close_code": 1008}}
    url = _serve(uvicorn_server, upstream_server, [policy])
    async with await connect(url, **_auth()) as ws:
        await ws.send('{"type": "say", "ROLE": "admin"}')
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_names_a_schema_does_not_declare_pass_in_any_case(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Nothing is checked per name for a schema that declares none; undeclared names pass in any case."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": {"type": "object"}}}])
    async with await connect(url, **_auth()) as ws:
        message = '{"ROLE": "admin", "Type": 1}'
        assert await _reply(ws, message) == message


# A name is checked against the names declared for its object's place only: free-form objects hold data.
FREE_FORM_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["chat"]},
        "text": {"type": "string"},
        "meta": {"type": "object"},
        "data": {"type": "object", "additionalProperties": {"type": "integer"}},
        "tags": {"type": "array", "items": {"type": "object"}},
        "user": {"$ref": "#/$defs/user"},
    },
    "$defs": {"user": {"properties": {"id": {"type": "integer"}, "role": {"enum": ["member"]}}}},
}
FREE_FORM = [
    '{"type": "chat", "text": "hi", "meta": {"Type": "note"}}',  # a top-level name, as data in meta
    '{"type": "chat", "text": "hi", "meta": {"TEXT": "x"}}',
    '{"type": "chat", "data": {"Id": 5}}',  # id: declared for user, not for data
    '{"type": "chat", "meta": {"nested": [{"ROLE": "x", "User": {"Role": 1}}]}}',  # deeper under free-form
    '{"type": "chat", "tags": [{"Type": "x", "ID": 1}]}',  # items that are free-form objects
    '{"type": "chat", "other": {"deep": [{"Role": "admin"}]}}',  # under a name the schema does not declare
    '{"type": "chat", "user": {"id": 1, "extra": {"ROLE": "admin", "Type": 1}}}',  # free-form inside user
]


@pytest.mark.parametrize("message", FREE_FORM)
async def test_a_declared_name_in_another_case_passes_in_a_free_form_object(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    """``meta: {type: object}`` holds data: its ``Type`` is no case variant of the top level's ``type``."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": FREE_FORM_SCHEMA}}])
    async with await connect(url, **_auth()) as ws:
        assert await _reply(ws, message) == message


NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"enum": ["chat"]},
        "user": {"type": "object", "properties": {"role": {"enum": ["member"]}}},
        "members": {"type": "array", "items": {"$ref": "#/$defs/member"}},
        "owner": {"$ref": "#/$defs/member"},
        "tree": {"$ref": "#/$defs/node"},
        "rows": {"type": "array", "prefixItems": [{"properties": {"level": {"maximum": 1}}}]},
        "labels": {"type": "object", "additionalProperties": {"properties": {"color": {"enum": ["red"]}}}},
        "shape": {"oneOf": [{"properties": {"radius": {}}, "required": ["radius"]}, {"required": ["side"]}]},
        "order": {"if": {"properties": {"kind": {"const": "a"}}}, "then": {"properties": {"amount": {"maximum": 1}}}},
    },
    "$defs": {
        "member": {"properties": {"role": {"enum": ["member"]}}},
        "node": {"properties": {"name": {"type": "string"}, "children": {"items": {"$ref": "#/$defs/node"}}}},
    },
}
NESTED_CASE_VARIANTS = [
    '{"type": "chat", "user": {"Role": "admin"}}',  # a described object's property
    '{"Type": "chat"}',
    '{"type": "chat", "members": [{"role": "member"}, {"ROLE": "admin"}]}',  # an array of $ref'd objects
    '{"type": "chat", "owner": {"Role": "admin"}}',  # a $ref'd definition
    '{"type": "chat", "tree": {"name": "a", "children": [{"name": "b", "children": [{"NAME": "c"}]}]}}',
    '{"type": "chat", "rows": [{"LEVEL": 9}]}',  # prefixItems
    '{"type": "chat", "labels": {"anyName": {"Color": "blue"}}}',  # additionalProperties' objects
    '{"type": "chat", "shape": {"Side": 1}}',  # one branch of a oneOf
    '{"type": "chat", "order": {"kind": "a", "Amount": 9}}',  # then
]


@pytest.mark.parametrize("message", NESTED_CASE_VARIANTS)
async def test_a_declared_name_in_another_case_is_ambiguous_in_a_described_object_at_any_depth(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": NESTED_SCHEMA}}])
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, message)) == "ambiguous_json"
        allowed = (
            '{"type": "chat", "user": {"role": "member", "extra": {"Role": 1}}, "labels": {"Color": {"color": "red"}}, '
            '"tree": {"name": "a", "children": [{"name": "b", "meta": {"NAME": 1}}]}, "members": [{"Owner": {}}]}'
        )
        assert await _reply(ws, allowed) == allowed


def _refused(schema: Any, message: Any) -> bool:
    check = CaseVariants.for_schema(schema, retrieve_reference)
    assert check is not None
    try:
        check.check(message)
    except AmbiguousJson:
        return True
    return False


def test_a_referenced_file_describes_the_place_that_refers_to_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps({"$defs": {"user": {"properties": {"userName": {}}, "required": ["tenant"]}}}))
    schema = {"properties": {"by": {"$ref": f"{shared.as_uri()}#/$defs/user"}, "meta": {}}}
    assert _refused(schema, {"by": {"USERNAME": "x"}})
    assert _refused(schema, {"by": {"Tenant": "x"}})
    assert not _refused(schema, {"USERNAME": "x", "meta": {"Tenant": "x"}})


def test_a_recursive_schema_is_followed_as_deep_as_the_message_goes() -> None:
    """``$ref: "#"``, a ``$dynamicRef`` and a YAML alias inside itself: each place is built once."""
    tree = {"properties": {"v": {}, "kids": {"items": {"$ref": "#"}}}}
    dynamic = {"$dynamicAnchor": "node", "properties": {"v": {}, "kids": {"items": {"$dynamicRef": "#node"}}}}
    aliased: dict[str, Any] = {"properties": {"v": {}}}
    aliased["properties"]["kids"] = {"items": aliased}
    deep: dict[str, Any] = {"V": 1}
    for _ in range(10_000):
        deep = {"kids": [deep], "x": {"V": 1}}
    for schema in (tree, dynamic, aliased):
        assert _refused(schema, deep)
        deep_kid = deep
        while "kids" in deep_kid:
            deep_kid = deep_kid["kids"][0]
        deep_kid["v"] = deep_kid.pop("V")
        assert not _refused(schema, deep)
        deep_kid["V"] = deep_kid.pop("v")


def test_nothing_is_checked_per_message_when_no_place_declares_a_name() -> None:
    schemas: tuple[Any, ...] = (True, {"type": "object"}, {"additionalProperties": {"type": "object"}}, {"items": {}})
    for schema in schemas:
        assert CaseVariants.for_schema(schema, retrieve_reference) is None


def test_a_schema_of_too_many_places_checks_every_declared_name_at_every_depth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the bound, the check refuses more (a free-form object's names too), never less."""
    monkeypatch.setattr(schema_names, "MAX_PLACES", 1)
    schema = {"properties": {"type": {}, "meta": {"type": "object"}, "user": {"properties": {"role": {}}}}}
    assert _refused(schema, {"user": {"Role": "admin"}})
    assert _refused(schema, {"meta": {"Type": 1}})


def test_declared_names_are_read_from_every_subschema_and_referenced_file(tmp_path: Path) -> None:
    """The walk reads names, not values: a ``properties`` inside ``const`` or ``enum`` declares nothing."""
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps({"$defs": {"user": {"properties": {"userName": {}}, "required": ["tenant"]}}}))
    schema = {
        "properties": {"a": {"properties": {"b": {}}}},
        "anyOf": [{"required": ["c"]}],
        "oneOf": [{"dependentSchemas": {"d": {"properties": {"e": {}}}}}],
        "not": {"properties": {"f": {}}},
        "if": {"properties": {"g": {}}},
        "then": {"properties": {"h": {}}},
        "additionalProperties": {"properties": {"i": {}}},
        "prefixItems": [{"properties": {"j": {}}}],
        "definitions": {"x": {"dependencies": {"k": ["l"], "m": {"properties": {"n": {}}}}}},
        "patternProperties": {"^x-": {"properties": {"o": {}}}},
        "const": {"properties": {"notAName": 1}},
        "enum": [{"required": ["norThis"]}],
        "$ref": f"{shared.as_uri()}#/$defs/user",
    }
    assert declared_names(schema, retrieve_reference) == set("abcdefghijklmno") | {"userName", "tenant"}
    assert declared_names(True, retrieve_reference) == set()


# What Go's json.Decoder (gorilla's Conn.ReadJSON) and Jackson read as the object: the first value.
TRAILERS = [" x", "\x00", '{"type": "say", "text": "hi"}', "]", "}", "\n\n{", "\ufeff", " // a comment"]


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
async def test_json_then_more_in_a_binary_message_is_refused_when_binary_passes(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, trailer: str, encoding: str
) -> None:
    """``binary: pass`` passed ``{"type": "admin"} x`` unchecked: not JSON to the gateway, an object
    to a Go or Java upstream that reads the first value."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA, "binary": "pass"}}])
    async with await connect(url, **_auth()) as ws:
        for first in ('{"type": "admin"}', '  [{"type": "admin"}]'):
            assert _error(await _reply(ws, (first + trailer).encode(encoding))) == "invalid_json"
        assert await _reply(ws, b"\x89PNG\r\n\x1a\n") == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("message", [b"123 abc", b"0\x12\x05hello", b'"text" x', b"true that", b"{not json"])
async def test_binary_that_starts_with_a_scalar_or_no_json_still_passes(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: bytes
) -> None:
    """A scalar and then more (protobuf whose first field is 6 or 7 starts with a digit) carries no
    field to any reader: it passes as binary, as before."""
    url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA, "binary": "pass"}}])
    async with await connect(url, **_auth()) as ws:
        assert await _reply(ws, message) == message


STAMP_OR_PASS = {"transform-message": {**STAMP["transform-message"], "non_object": "pass"}}
OBJECTS_THEN_MORE = [
    '{"user": "admin", "text": "hi"} x',
    '{"user": "admin"}{"user": "alice"}',
    '{"user": "admin"}]',
    '{"user": "admin"}\x00',
    '[1]{"user": "admin"}',
    ' \n{"user": "admin"}\n,',
    '{"user": "admin", "t": "a\ttab"} x',
]


@pytest.mark.parametrize("message", OBJECTS_THEN_MORE + [m.encode() for m in OBJECTS_THEN_MORE])
async def test_an_object_followed_by_more_is_not_passed_on_unstamped(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str | bytes
) -> None:
    """``non_object: pass`` passed ``{"user": "admin"} x`` unstamped: Go's json.Decoder read ``user: admin``."""
    url = _serve(uvicorn_server, upstream_server, [STAMP_OR_PASS])
    async with await connect(url, **_auth("alice")) as ws:
        answer = await _reply(ws, message)
        assert _error(answer) == "invalid_json", f"the upstream received {answer!r}"


@pytest.mark.parametrize("message", ["3 pm works for me", "[1, 2]", "plain text", "-", "true that"])
async def test_text_that_no_reader_reads_as_an_object_passes_unstamped_as_configured(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    url = _serve(uvicorn_server, upstream_server, [STAMP_OR_PASS])
    async with await connect(url, **_auth("alice")) as ws:
        assert await _reply(ws, message) == message


REFRESH = '{"type": "auth.refresh", "token": "{token}"'
HIDDEN_REFRESHES = {
    "a word after it": (REFRESH + "} x", "invalid_json"),
    "a NUL after it": (REFRESH + "}\x00", "invalid_json"),
    "another object after it": (REFRESH + '}{"type": "noop"}', "invalid_json"),
    "a bracket after it": (REFRESH + "}]", "invalid_json"),
    "names in other cases": ('{"TYPE": "auth.refresh", "Token": "{token}"} x', "invalid_json"),
    "the type twice": ('{"type": "auth.refresh", "type": "noop", "token": "{token}"} x', "invalid_json"),
    # JSON to lenient readers: Python's json.loads(strict=False) takes a control character in a string
    "a tab in a string": (REFRESH + ', "note": "a\ttab"}', "invalid_json"),
    # Python refuses int() of over 4,300 digits; Node's JSON.parse reads Infinity
    "a long number": (REFRESH + ', "n": 1' + "0" * 5000 + "}", "invalid_json"),
    "blanks after it": (REFRESH + "}\n ", "auth.refresh.ok"),  # JSON to every reader: a refresh
}


@pytest.mark.parametrize(("template", "expected"), HIDDEN_REFRESHES.values(), ids=HIDDEN_REFRESHES.keys())
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_a_refresh_followed_by_more_is_never_forwarded(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, template: str, expected: str, binary: bool
) -> None:
    """The client's new token must not reach the upstream in a refresh the gateway did not check."""
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    text = template.replace("{token}", token(ttl=600))
    async with await connect(url, **_auth()) as ws:
        await ws.send(text.encode() if binary else text)
        assert _answer(await ws.recv()) == expected
        await ws.send("next")
        assert await ws.recv() == "next"


@pytest.mark.parametrize("message", ['{"type": "noop"} x', '{"type": "auth.refreshed"} x', "auth.refresh x"])
async def test_messages_that_are_no_refresh_to_any_reader_go_upstream(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, message: str
) -> None:
    url = _serve(uvicorn_server, upstream_server, [{"credential-expiry": {}}])
    async with await connect(url, **_auth()) as ws:
        assert await _reply(ws, message) == message


ASGI_CASES = [
    ({"validate-message": {"schema": SCHEMA}}, '{"type": "say", "ROLE": "admin"}', "ambiguous_json"),
    ({"validate-message": {"schema": SCHEMA, "binary": "pass"}}, b'{"type": "admin"} x', "invalid_json"),
    (STAMP_OR_PASS, '{"user": "admin"} x', "invalid_json"),
    ({"credential-expiry": {}}, REFRESH + "} x", "invalid_json"),
]


@pytest.mark.parametrize(("policy", "message", "reason"), ASGI_CASES)
async def test_an_in_process_upstream_gets_none_of_them(
    uvicorn_server: UvicornFactory, policy: dict[str, Any], message: str | bytes, reason: str
) -> None:
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [{"url": "asgi:", "app": echo_app}], "policies": [JWT],
           "message_policies": {"inbound": [policy]}}  # fmt: skip
    url = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]})).url("/ws/echo")
    if isinstance(message, str):
        message = message.replace("{token}", token(ttl=600))
    async with await connect(url, **_auth()) as ws:
        assert _error(await _reply(ws, message)) == reason


@pytest.mark.parametrize(
    ("data", "read"),
    [
        ('{"a": 1} x', True),
        (b'{"a": 1}{"b": 2}', True),
        ("[1]]", True),
        (' \n{"a": 1}\x00', True),
        ("NaN", True),  # a whole value: as before
        ("123 abc", False),  # a scalar and then more: no field reaches a reader
        (b"0\x12\x05", False),
        ('"text" x', False),
        ("1 2", False),
        ("{not json", False),
        ("plain", False),
    ],
)
def test_json_to_some_reader_reads_an_object_or_array_followed_by_anything(data: str | bytes, read: bool) -> None:
    assert json_to_some_reader(data) is read
