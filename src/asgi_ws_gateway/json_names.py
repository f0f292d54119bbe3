"""JSON that every reader reads the same: no name twice in one object, no NaN or Infinity.

RFC 8259 §4 leaves duplicate names to the implementation: Python's parsers and orjson keep the last
value, others (jsonparser in Go, several C++ and Java readers) the first. A message that a policy
checked as ``{"role": "user"}`` could then reach an upstream as ``{"role": "admin"}``. What the
gateway validates, logs or stores is refused when its readers could disagree on it. Messages are
held to more: Go's encoding/json and ASP.NET Core match names ignoring case, so ``{"role": "user",
"ROLE": "admin"}`` is a name twice to them (:func:`check_unique_names`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from json.scanner import make_scanner
from typing import Any, cast

import orjson


class AmbiguousJson(ValueError):
    """Valid JSON syntax that readers disagree on (RFC 8259 §4, §6), or nested too deeply to check."""


class DuplicateName(AmbiguousJson):
    """A name twice in one object of a document, and where: ``lineno`` and ``colno`` (from 1) of its
    second appearance, ``path`` the field path of its value (``apis[0].policies``), ``first_line``
    the line of its first."""

    def __init__(self, text: str, pos: int, path: str, name: str, first: int) -> None:
        self.lineno, self.colno = _line_column(text, pos)
        self.first_line = _line_column(text, first)[0]
        self.path = path
        self.name = name
        super().__init__(
            f"{path}: the name {shown(name)} appears twice in one object (first on line {self.first_line})"
        )


SHOWN = 40
"""Characters of a sender's name an error quotes, at most: never a long one echoed back whole."""


def shown(name: str) -> str:
    """A name as an error quotes it: never a long one echoed back whole."""
    return repr(name[:SHOWN]) + ("..." if len(name) > SHOWN else "")


def strict_json(data: str | bytes) -> Any:
    """``data`` as the gateway reads a message: orjson, and no name twice in one object (ignoring case).

    Raises:
        ValueError: not JSON to orjson (``orjson.JSONDecodeError``), or JSON readers disagree on
            (:class:`AmbiguousJson`).
    """
    value = orjson.loads(data)
    if not _written_plainly(data, value):
        check_unique_names(data)
    return value


def check_names(data: str | bytes, value: Any, apart: frozenset[str], *, root_apart: bool) -> None:
    """:func:`strict_json`'s check, for a caller that read ``data`` with orjson itself (``value``).

    Args:
        apart: names no two of which are equal ignoring case (:func:`names_apart`; a schema's declared
            names): a compact object whose names are all among them is not folded again, per message.
        root_apart: the caller found the names of ``value``, an object, all in ``apart`` (it looked for
            its own reasons: the look is not made twice).

    Raises:
        AmbiguousJson: as :func:`strict_json`.
    """
    if not _written_plainly(data, value, apart, root_apart):
        check_unique_names(data)


def names_apart(names: Iterable[str]) -> frozenset[str]:
    """Those of ``names`` that no other of them equals ignoring case (``casefold``): any of them in one
    object fold apart, as :func:`check_names`'s ``apart`` needs."""
    distinct = set(names)
    folds = Counter(name.casefold() for name in distinct)
    return frozenset(name for name in distinct if folds[name.casefold()] == 1)


_PLAIN_UP_TO = 1024
"""Bytes of a message :func:`_written_plainly` looks at, at most: orjson's writer reserves about 10
bytes per character and 200-400 per item it writes (4 MB for a 40 KB array), freed at once."""
_PLAIN_OBJECTS = 8  # more: the scanner reads them (in C; a walk here costs more per object)
_BRACE, _BRACKET = ord("{"), ord("[")  # as ints: a bytes argument is first tried as one, at the cost of an exception


def _written_plainly(
    data: str | bytes, value: Any, apart: frozenset[str] = frozenset(), root_apart: bool = False
) -> bool:
    """True when ``data`` is exactly what orjson writes for ``value`` (compact, as ``JSON.stringify``
    writes too), holds a few objects and no array, and no object holds two names equal ignoring case:
    then ``data`` holds no name twice, known without reading it again (:func:`check_unique_names` is
    most of a small message's reading). A name written twice is read once: orjson would write the
    value shorter. Anything else is left to :func:`check_unique_names`."""
    if len(data) > _PLAIN_UP_TO:
        return False
    if isinstance(data, str):
        if "{" not in data:
            return True  # no object, no names
        if "[" in data or '": ' in data:  # (a name then a blank: Python's json.dumps, indented writers)
            return False
        encoded = data.encode()
    elif _BRACE not in data:
        return True
    elif _BRACKET in data:
        return False
    else:
        encoded = data
    if type(value) is not dict:
        return False
    try:
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
        return False
    if written != encoded:
        return False
    objects = written.count(_BRACE)  # (a brace in a string counts too: more, never fewer)
    if objects == 1:  # one object, nothing nested: what most messages are
        # (names all in ``apart``: distinct, each folding to its own; a set lookup per name, where
        # folding joined them, lowered the lot and compared)
        return root_apart or apart.issuperset(value) or _names_fold_apart(value)
    if objects > _PLAIN_OBJECTS:
        return False
    pending = [value]
    while pending:
        node = pending.pop()
        if not (root_apart and node is value) and not apart.issuperset(node) and not _names_fold_apart(node):
            return False
        for child in node.values():
            if type(child) is dict:
                pending.append(child)
    return True


def _names_fold_apart(node: dict[str, Any]) -> bool:
    """No two of ``node``'s names are equal ignoring case (``casefold``; for ASCII, ``lower``, which
    is that without ``casefold``'s per-character path)."""
    if len(node) < 2:
        return True
    names = "".join(node)
    fold = str.lower if names.isascii() else str.casefold
    return fold(names) == names or len(set(map(fold, node))) == len(node)


def unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` ``object_pairs_hook``: the object as a dict, refusing a name that appears twice."""
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise AmbiguousJson(f"the name {shown(name)} appears twice in one object")
        document[name] = value
    return document


def load_unique(text: str) -> Any:
    """``json.loads`` for a document an operator writes (a configuration, a JSON Schema, a state file):
    NaN and Infinity read as Python reads them, a name twice in one object refused.

    Raises:
        json.JSONDecodeError: not JSON.
        DuplicateName: a name twice in one object (the first, in the order of the text).
        RecursionError: nested deeper than the parser goes.
    """
    try:
        return json.loads(text, object_pairs_hook=unique_names)
    except AmbiguousJson:
        _walk(text, _skip(text, 0), "")  # raises DuplicateName: it finds what unique_names found, and where
        raise


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALAR = make_scanner(cast(Any, json.JSONDecoder()))
"""Reads one value at an index, and where it ends: the walk below reads names and scalars with it."""


def _walk(text: str, at: int, path: str) -> int:
    """Where the value at ``at`` (valid JSON) ends; :class:`DuplicateName` at a name seen twice.

    Only run once :func:`unique_names` found a duplicate: the walk is in Python and knows positions."""
    opening = text[at]
    if opening not in "{[":
        end: int = _SCALAR(text, at)[1]
        return end
    closing, at, index = ("}" if opening == "{" else "]"), _skip(text, at + 1), 0
    seen: dict[str, int] = {}
    while text[at] != closing:
        if opening == "{":
            name, after = _SCALAR(text, at)
            if name in seen:
                raise DuplicateName(text, at, _joined(path, name), name, seen[name])
            seen[name] = at
            at = _skip(text, _skip(text, after) + 1)  # past the colon
            at = _walk(text, at, _joined(path, name))
        else:
            at = _walk(text, at, f"{path}[{index}]")
            index += 1
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return at + 1


def _skip(text: str, at: int) -> int:
    space = _WHITESPACE.match(text, at)
    return space.end() if space else at


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _line_column(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def no_constant(name: str) -> Any:
    """``json`` ``parse_constant``: Python accepts NaN and Infinity; JSON does not."""
    raise AmbiguousJson(f"{name} is not a JSON number")


def _names_once(pairs: list[tuple[str, Any]]) -> None:
    # Checks only: the value a caller uses is its own parser's (nothing is built here). The name is
    # not said: it is part of a message, and a drop's detail never quotes a message.
    if len(pairs) > 1 and len({name.casefold() for name, _ in pairs}) != len(pairs):
        exact = len({name for name, _ in pairs}) != len(pairs)
        raise AmbiguousJson("a name appears twice in one object" + ("" if exact else ", ignoring case"))


_SCAN = make_scanner(cast(Any, json.JSONDecoder(object_pairs_hook=_names_once, parse_constant=no_constant)))
"""The C scanner of a decoder with the hooks (what its ``decode`` calls): the value at an index,
without ``decode``'s own checks, which cost a third more."""


def check_unique_names(text: str | bytes) -> None:
    """Raise :class:`AmbiguousJson` when ``text`` (JSON another parser accepted) has a name twice in one
    object, also when the two differ only in case: Go's encoding/json and ASP.NET Core read ``TYPE``
    into the field ``type`` is read into (the last one wins; Go folds the long s, U+017F, to ``s`` and the Kelvin
    sign to ``k``, which ``str.casefold`` does too). About 1.5-2 µs for a small message.

    Raises:
        AmbiguousJson: a name appears twice in one object (ignoring case), or a document with objects
            nests deeper than Python's parser goes (some hundreds of levels: it cannot be checked).
    """
    if isinstance(text, bytes):
        text = text.decode()
    if "{" not in text:
        return  # no object, no names (an array may nest deeper than Python's parser goes)
    try:
        _SCAN(text, len(text) - len(text.lstrip(" \t\n\r")))  # the JSON another parser accepted, whole
    except RecursionError:
        raise AmbiguousJson("nested too deeply to be checked") from None


_JSON_WHITESPACE = " \t\n\r"
_VALUE_START = frozenset('{["-0123456789tfnNI')  # NaN and Infinity: Python reads them


def _any(_: str) -> int:
    return 0


def binary_json_text(data: bytes, starts: frozenset[str] = _VALUE_START) -> str | None:
    """The text readers make of a binary message (Python's ``json.loads``: its encoding detected; Node's
    ``Buffer.toString()`` and Go: invalid bytes as U+FFFD), or None when it cannot be a JSON document
    starting with one of ``starts``: most binary payloads, told by their first 64 bytes (past a BOM
    and whitespace) without decoding the rest; when those are all blank, the whole is read."""
    if not data:
        return None
    encoding = json.detect_encoding(data)
    head = data[:64].decode(encoding, "replace").lstrip("\ufeff" + _JSON_WHITESPACE)
    if head and head[0] not in starts:
        return None
    text = data.decode(encoding, "replace")
    if not head and text.lstrip("\ufeff" + _JSON_WHITESPACE)[:1] not in starts:
        return None
    return text


_LENIENT = json.JSONDecoder(parse_int=_any, parse_float=_any, parse_constant=_any, strict=False)
"""Reads what lenient readers read: control characters in strings, NaN, numbers of any length (read
as 0: the shape is what matters)."""


def first_json_value(text: str, decoder: json.JSONDecoder = _LENIENT) -> tuple[Any, bool]:
    """The first JSON value in ``text`` (past a BOM and whitespace) as the most lenient common readers
    read it (``decoder``: numbers read as 0), and whether it is the whole text. Go's ``json.Decoder``
    (gorilla's ``Conn.ReadJSON``) and Jackson's ``ObjectMapper.readValue`` read a message's first value
    and ignore what follows it (``{"type": "admin"} x``, ``{...}{...}``, ``{...}]``).

    Raises:
        ValueError: no JSON value starts the text.
        RecursionError: nested deeper than Python's parser goes.
    """
    text = text.lstrip("\ufeff")
    value, end = decoder.raw_decode(text, _skip(text, 0))
    return value, _skip(text, end) == len(text)


def json_to_some_reader(data: str | bytes) -> bool:
    """Whether a common upstream reader would take ``data`` for a JSON document, where the gateway's
    own strict parser (orjson) may not: Python's ``json.loads`` (bytes in UTF-8, UTF-16 or UTF-32,
    with or without a BOM; ``NaN``, ``Infinity``, ``1e400``, lone surrogates, integers of any
    length), JavaScript's ``JSON.parse`` of a binary message (``Buffer`` read as UTF-8), Go's
    ``encoding/json`` (invalid UTF-8 read as U+FFFD), and an object or array followed by anything
    (Go's ``json.Decoder`` and Jackson read the first value: :func:`first_json_value`). A scalar
    followed by more (``123 abc``; protobuf whose first field is 6 or 7 starts with a digit) is not:
    no field of it reaches a reader. Laxer readers (comments, single quotes: Json.NET, lenient
    Gson) are not covered.
    """
    if isinstance(data, bytes):
        decoded = binary_json_text(data)
        if decoded is None:
            return False
        text = decoded
    else:
        text = data
    start = text.lstrip("\ufeff").lstrip(_JSON_WHITESPACE)[:1]
    if not start or start not in _VALUE_START:
        return False
    try:
        value, whole = first_json_value(text)
    except RecursionError:
        return True  # nested deeper than Python goes: other readers go deeper
    except ValueError:
        return False
    return whole or isinstance(value, dict | list)


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: Python's JSON parser keeps ``"\\ud800"`` in a str, which UTF-8 cannot encode and
other readers take as U+FFFD or refuse."""


__all__ = [
    "LONE_SURROGATE",
    "SHOWN",
    "AmbiguousJson",
    "DuplicateName",
    "binary_json_text",
    "check_names",
    "check_unique_names",
    "first_json_value",
    "json_to_some_reader",
    "load_unique",
    "names_apart",
    "no_constant",
    "shown",
    "strict_json",
    "unique_names",
]
