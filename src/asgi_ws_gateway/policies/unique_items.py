"""``uniqueItems`` for ``validate-message``'s schemas, checked in time linear in the message.

jsonschema-rs hashes numbers coarsely: integers of large magnitude (``2**63 + i``, ``-(2**62) - i``, a
list of 64-bit ids) fall into a few of its hash buckets, and its check of an array of them, or of
objects holding them, turns quadratic. An 84 KB message of 4,000 such integers against ``{type: array,
uniqueItems: true}`` held the worker's event loop 6.5 s, and every connection on it; 390 KB, 38 s (an
attack pass, round five). The gateway gives jsonschema-rs its own ``uniqueItems`` (a custom keyword
replaces the built-in one, and is handed the message's own Python objects) for a message holding more
than :data:`LONG_INTEGERS` such integers (:class:`SchemaValidators`): each item is reduced to a token,
equal for items JSON Schema calls equal, and the tokens go into a set.

The tokens hash with the per-process seed of Python's strings (or are plain integers, of which a
client can make only a dozen share a hash): a client cannot make them collide, as it could tuples of
integers. An array's or object's token is a number for its text written from its items' tokens, made
once per message (:func:`checking`): a subtree nested under many ``uniqueItems`` arrays is read once.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import jsonschema_rs
import orjson


class _Tokens:
    """The tokens of one message's arrays and objects, by ``id()`` (the object is kept beside its token,
    so its ``id`` is not reused while the tokens live), and the numbers their texts were given."""

    def __init__(self) -> None:
        self.containers: dict[int, tuple[object, str]] = {}
        self.numbers: dict[str, int] = {}

    def token(self, value: Any) -> str | int:
        """``value``'s token: equal for values JSON Schema calls equal (numbers by their mathematical
        value, objects whatever their names' order, ``true`` never ``1``), different otherwise."""
        kind = type(value)
        if kind is int:
            number: int = value
            return number
        if kind is not list and kind is not dict:
            return _scalar(value)
        known = self.containers.get(id(value))
        if known is not None:
            return known[1]
        # Iterative, children first: a message may nest a thousand levels.
        stack: list[tuple[Any, bool]] = [(value, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in self.containers:
                continue
            items = node if type(node) is list else node.values()
            if not children_done:
                stack.append((node, True))
                stack.extend((item, False) for item in items if type(item) in (list, dict))
                continue
            if type(node) is list:
                text = "[" + ",".join(map(self._written, node)) + "]"
            else:
                text = "{" + ",".join(sorted(f"{name!r}:{self._written(item)}" for name, item in node.items())) + "}"
            number = self.numbers.setdefault(text, len(self.numbers))
            self.containers[id(node)] = (node, f"#{number}")
        return self.containers[id(value)][1]

    def _written(self, value: Any) -> str:
        token = self.token(value)
        return f"i{token}" if isinstance(token, int) else token


def _scalar(value: Any) -> str | int:
    if type(value) is str:
        return repr(value)  # quoted and escaped: ends where it ends, never a number's token
    if type(value) is float:
        return int(value) if value.is_integer() else f"f{value.hex()}"  # 1.0 is 1; exact either way
    if value is True or value is False or value is None:
        return f"{value}"
    return f"?{id(value)}"  # not a JSON value: equal to nothing else


_current: ContextVar[_Tokens | None] = ContextVar("unique_items_tokens", default=None)


@contextmanager
def checking() -> Iterator[None]:
    """Around one message's validation: the tokens of its arrays and objects are made once, and
    forgotten after it."""
    reset = _current.set(_Tokens())
    try:
        yield
    finally:
        _current.reset(reset)


def all_unique(items: list[Any]) -> bool:
    """Whether no two of ``items`` are equal as JSON Schema compares them."""
    if len(items) < 2:
        return True
    kinds = {type(item) for item in items}
    if kinds == {str} or kinds == {int}:  # Python's equality is JSON Schema's here, and its set linear
        return len(set(items)) == len(items)
    tokens = _current.get() or _Tokens()
    seen: set[str | int] = set()
    for item in items:
        token = tokens.token(item)
        if token in seen:
            return False
        seen.add(token)
    return True


class UniqueItems:
    """The ``uniqueItems`` keyword as jsonschema-rs calls a custom one: built with the keyword's value,
    ``validate`` raises ``ValueError`` for an array holding two equal items."""

    def __init__(self, parent_schema: Any, value: Any, schema_path: Any) -> None:
        self.enabled = value is True

    def validate(self, instance: Any) -> None:
        if self.enabled and isinstance(instance, list) and not all_unique(instance):
            raise ValueError("has non-unique elements")


KEYWORDS: dict[str, type[jsonschema_rs.KeywordValidator]] = {"uniqueItems": UniqueItems}
"""The keywords ``validate-message`` gives jsonschema-rs in place of its own."""

LONG_INTEGERS = 64
"""Integers past 2**53 a message may hold and still be checked by jsonschema-rs's own ``uniqueItems``:
at most this many share its hash buckets, a few thousand comparisons. Past it, the gateway's."""
_LONG_DIGITS = re.compile(rb"[0-9]{16}")  # how an integer past 2**53 (9007199254740992) is written


class SchemaValidators:
    """A schema's validators: jsonschema-rs's own, and, when the schema or a file it refers to names
    ``uniqueItems``, one with the gateway's (:data:`KEYWORDS`), for a message with more than
    :data:`LONG_INTEGERS` long integers. jsonschema-rs's check is faster for everything else: the
    gateway's reads each array and object in Python (up to ~0.6 s per MiB of small objects on a loaded
    2-core machine, where its own takes 20-90 ms).

    Raises:
        ValueError, TypeError: not a schema jsonschema-rs takes (as ``validator_for`` raises them).
    """

    def __init__(self, schema: Any, *, retriever: Callable[[str], Any], **options: Any) -> None:
        documents = [schema]

        def kept(uri: str) -> Any:  # jsonschema-rs reads every reference as it builds the validator
            documents.append(retriever(uri))
            return documents[-1]

        self.plain: Any = jsonschema_rs.validator_for(schema, retriever=kept, **options)
        self.linear: Any = None
        if any(_names_unique_items(document) for document in documents):
            self.linear = jsonschema_rs.validator_for(schema, retriever=retriever, keywords=KEYWORDS, **options)

    def for_value(self, value: Any) -> Any:
        """The validator to check ``value`` with (a message as parsed)."""
        if self.linear is None:
            return self.plain
        try:
            written = orjson.dumps(value)
        except orjson.JSONEncodeError:  # nested past what orjson writes: not looked into
            return self.linear
        past_bound = itertools.islice(_LONG_DIGITS.finditer(written), LONG_INTEGERS, None)
        return self.linear if next(past_bound, None) is not None else self.plain


def _names_unique_items(document: Any) -> bool:
    try:
        return b"uniqueItems" in orjson.dumps(document)
    except orjson.JSONEncodeError:
        return True


__all__ = ["KEYWORDS", "LONG_INTEGERS", "SchemaValidators", "UniqueItems", "all_unique", "checking"]
