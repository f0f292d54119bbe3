"""JSON every reader reads the same: a name twice in one object is found wherever it hides."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway.json_names import AmbiguousJson, check_unique_names, json_to_some_reader, strict_json


def _objects(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose names differ ignoring case (names equal ignoring case are duplicates)."""
    pairs = st.lists(st.tuples(st.text(max_size=6), values), max_size=4, unique_by=lambda pair: pair[0].casefold())
    return pairs.map(dict)


_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | _objects(inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=_VALUES)
def test_json_without_duplicate_names_passes(value: Any) -> None:
    """Whatever json or orjson writes (objects with names distinct ignoring case, any nesting, escapes) passes."""
    check_unique_names(json.dumps(value))
    check_unique_names(orjson.dumps(value))


def _with_duplicate(value: Any, path: list[int], name: str) -> str:
    """``value`` written as JSON with an object holding ``name`` twice, at a place ``path`` picks."""
    inner = f'{{"{name}": 1, "x": [2], "{name}": 3}}'
    if not path:
        return inner
    step, rest = path[0], path[1:]
    return f"[{json.dumps(value)}, " * (step % 3) + _with_duplicate(value, rest, name) + "]" * (step % 3)


@settings(max_examples=200, deadline=None)
@given(value=_VALUES, path=st.lists(st.integers(0, 5), max_size=5), name=st.sampled_from(["a", "role", "é", "\\u0061"]))
def test_a_duplicate_is_found_at_any_depth(value: Any, path: list[int], name: str) -> None:
    text = _with_duplicate(value, path, name)
    orjson.loads(text)  # valid JSON: orjson keeps the last value without a word
    with pytest.raises(AmbiguousJson, match="appears twice in one object"):
        check_unique_names(text)


def test_names_equal_after_unescaping_are_duplicates() -> None:
    """``"a"`` and ``"\\u0061"`` are one name to every reader."""
    with pytest.raises(AmbiguousJson):
        check_unique_names('{"a": 1, "\\u0061": 2}')


@pytest.mark.parametrize(
    "text",
    [
        '{"role": "user", "ROLE": "admin"}',
        '[{"a": {"Type": 1, "tYPE": 2}}]',
        '{"u\u017fer": 1, "user": 2}',
        '{"\u212a": 1, "k": 2}',
        '{"stra\u00dfe": 1, "STRASSE": 2}',
        '{"a": 1, "\u0041": 2}',
    ],
)
def test_names_equal_ignoring_case_are_duplicates(text: str) -> None:
    """Go's encoding/json and ASP.NET Core read both into one field (the last wins): the long s (U+017F)
    folds to ``s`` and the Kelvin sign to ``k`` in Go, ``ß`` to ``ss`` in ``casefold`` (more than Go: refused too)."""
    with pytest.raises(AmbiguousJson, match="appears twice in one object, ignoring case"):
        check_unique_names(text)


def test_names_that_differ_beyond_case_are_not_duplicates() -> None:
    check_unique_names('{"user_id": 1, "userId": 2, "user-id": 3, "e": 4, "\u00e9": 5, "i": 6, "\u0131": 7}')


def test_a_deep_array_without_objects_is_not_refused_but_deep_objects_are() -> None:
    check_unique_names("[" * 1000 + "]" * 1000)  # no object, no names: nothing to check
    with pytest.raises(AmbiguousJson, match="nested too deeply"):
        check_unique_names('{"a":' * 1000 + "1" + "}" * 1000)


def test_a_message_is_never_quoted() -> None:
    """A drop's detail never quotes the message: not even the name that appears twice."""
    with pytest.raises(AmbiguousJson) as info:
        check_unique_names('{"secret-key-name": 1, "secret-key-name": 2}')
    assert str(info.value) == "a name appears twice in one object"


SOME_READERS_READ = [
    b'{"a": 1}',
    b"  [1]",
    b'"text"',
    b"\xef\xbb\xbf{}",  # Python's json.loads(bytes) skips a UTF-8 BOM
    '{"a": 1}'.encode("utf-16"),  # ... and reads UTF-16 and UTF-32
    '{"a": 1}'.encode("utf-32"),
    b'{"a": "\xff"}',  # Node's Buffer.toString() and Go read invalid UTF-8 as U+FFFD
    b'{"a": 1e400}',
    b"1" + b"0" * 5000,  # Python refuses int() of over 4,300 digits; JavaScript reads Infinity
    b" " * 100 + b"{}",
    '{"a": "\\ud800"}',
    '{"a": NaN}',
    "[-Infinity]",
    '\ufeff{"a": 1}',
    '{"a": "tab\tin a string"}',  # control characters: lenient readers take them
    "[" * 5000 + "]" * 5000,  # deeper than Python's parser goes
]
NO_READER_READS = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x00\x01",
    b"hello",
    b"{not json",
    b"123 abc",
    b" " * 100,
    "plain",
    "{'a': 1}",
]


@pytest.mark.parametrize("data", SOME_READERS_READ)
def test_json_to_some_reader(data: str | bytes) -> None:
    """What Python's, JavaScript's or Go's parser reads as JSON, whether orjson does or not."""
    assert json_to_some_reader(data)


@pytest.mark.parametrize("data", NO_READER_READS)
def test_not_json_to_any_reader(data: str | bytes) -> None:
    assert not json_to_some_reader(data)


# -- strict_json's shortcut: compact JSON whose names fold apart is not read a second time --

_NAMES = st.sampled_from(["a", "A", "b", "\u00df", "SS", "ss", "\u017f", "s", "K", "\u212a", "k", "\\u0061", "\u00e9"])
_LEAVES = st.sampled_from(["1", '"x"', "null", "true", '"{"', "2.5", '"\\"}"'])


def _compact(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Objects (names possibly twice, or twice ignoring case) and arrays, written without blanks, as
    JSON.stringify and orjson write them (a ``\\u0061`` name is not how either writes it)."""
    objects = st.lists(st.tuples(_NAMES, children), max_size=4).map(
        lambda pairs: "{" + ",".join(f'"{name}":{value}' for name, value in pairs) + "}"
    )
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    return objects | arrays


_TEXTS = st.recursive(_LEAVES, _compact, max_leaves=12)


def _outcome(read: Any, data: str | bytes) -> tuple[str, Any]:
    try:
        return "value", read(data)
    except AmbiguousJson as exc:
        return "ambiguous", str(exc)


def _orjson_then_every_name(data: str | bytes) -> Any:
    """strict_json without its shortcut: orjson, then the scanner over the whole text."""
    value = orjson.loads(data)
    check_unique_names(data)
    return value


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS | _VALUES.map(orjson.dumps).map(bytes.decode) | _VALUES.map(json.dumps), as_bytes=st.booleans())
def test_strict_json_decides_as_orjson_and_the_scanner_do(text: str, as_bytes: bool) -> None:
    """The same value or the same refusal, with or without the shortcut, whatever the names and nesting."""
    data = text.encode() if as_bytes else text
    assert _outcome(strict_json, data) == _outcome(_orjson_then_every_name, data)


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2}', '{"a":1,"A":2}', '{"x":[{"\u017f":1,"s":2}]}', '{"\u212a":1,"k":2}', '{"a":{"b":1,"B":2}}'],
)
def test_compact_json_with_a_name_twice_is_refused_as_before(text: str) -> None:
    with pytest.raises(AmbiguousJson, match="appears twice in one object"):
        strict_json(text)


def test_compact_json_nested_deeper_than_python_reads_is_refused_as_before() -> None:
    with pytest.raises(AmbiguousJson, match="nested too deeply"):
        strict_json('{"a":' * 1000 + "1" + "}" * 1000)
