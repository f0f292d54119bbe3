"""Attributes as OTLP ``KeyValue`` fields, and the caches that keep those that repeat (the route,
the API's name) encoded between batches, bounded: pair by pair (:class:`Pairs`), and a gateway span's
attributes as one block (:class:`Blocks`). An attribute it cannot encode (an ``int`` beyond
int64, a string that is not valid Unicode, another type) is logged and left out, as the SDK does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import compress, count
from operator import itemgetter, not_
from typing import Any

from .otlp_protobuf import INT64_MAX, INT64_MIN, SMALL_VARINTS, delimited, key_value, varint

logger = logging.getLogger(__name__)


CACHE_LIMIT = 4096
"""Encoded key/value pairs kept per tag (and span names); a cache is emptied when full."""


class Pairs:
    """Encoded ``KeyValue`` fields of one tag (tag and length included) by key, value and the value's
    type, kept between batches; and the keys whose values seldom repeat, which are not kept (a
    connection's byte counts, its handshake's ids: kept, they would push the others out)."""

    __slots__ = ("encoded", "heads", "keys", "misses", "plain", "volatile")

    def __init__(self) -> None:
        self.encoded: dict[tuple[str, object, type], bytes] = {}
        self.plain: dict[tuple[str, object], bytes] = {}
        """The same fields of ``str`` and ``int`` values (not ``bool``) by ``(key, value)``: a dict's items,
        looked up as they are when every value is a ``str`` or an ``int`` (then ``1`` cannot meet ``True``)."""
        self.keys: dict[str, bytes] = {}  # ``KeyValue.key`` fields (tag, length, name) by name
        self.heads: dict[tuple[str, int], bytes] = {}
        """A string value's ``KeyValue`` field up to its UTF-8 bytes, which end it, by key and their length:
        a value that is new each time (a handshake's ids, a client's address) is that head and its bytes."""
        self.misses: dict[str, int] = {}  # by key, since the cache was last emptied
        self.volatile: set[str] = set()

    def pair(self, tag: bytes, key: str, value: object) -> bytes:
        """The ``KeyValue`` field ``tag`` of ``key`` and ``value``, tag and length included.

        Raises:
            ValueError, TypeError: as :func:`key_value`.
        """
        # The common cases written out (a string or an int under a named key, the key's field kept);
        # the rest as key_value encodes it.
        any_value: bytes | None = None
        if type(value) is str:
            text = value.encode()  # UnicodeEncodeError (a ValueError) for lone surrogates
            size = len(text)
            head = self.heads.get((key, size))
            if head is not None:
                return head + text
            any_value = b"\x0a" + (SMALL_VARINTS[size] if size < 128 else varint(size)) + text
        elif type(value) is int and INT64_MIN <= value <= INT64_MAX:
            any_value = b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
        if any_value is None or type(key) is not str or not key:
            body = key_value(key, value)
            return tag + varint(len(body)) + body
        name = self.keys.get(key)
        if name is None:
            if len(self.keys) >= CACHE_LIMIT:
                self.keys.clear()
            name = self.keys[key] = delimited(b"\x0a", key.encode())
        size = len(any_value)
        body = name + b"\x12" + (SMALL_VARINTS[size] if size < 128 else varint(size)) + any_value
        size = len(body)
        encoded = tag + (SMALL_VARINTS[size] if size < 128 else varint(size)) + body
        if type(value) is str:
            heads = self.heads
            if len(heads) >= CACHE_LIMIT:
                heads.clear()
            heads[key, len(text)] = encoded[: len(encoded) - len(text)]
        return encoded

    def keep(self, key: str, value: object, cls: type, encoded: bytes) -> None:
        """Remember ``encoded`` for ``(key, value)``, unless ``key``'s values seldom repeat."""
        if key in self.volatile:
            return
        misses = self.misses[key] = self.misses.get(key, 0) + 1
        if misses > _VOLATILE_AFTER:
            self.volatile.add(key)
            return
        if len(self.encoded) >= CACHE_LIMIT:
            self.encoded.clear()
            self.plain.clear()
            self.misses.clear()
        self.encoded[(key, value, cls)] = encoded
        if cls is str or cls is int:
            self.plain[key, value] = encoded


_VOLATILE_AFTER = 256
"""Values of one key encoded afresh, between two emptyings of the cache, past which its values are no
longer kept."""


def append_attributes(tag: bytes, attributes: Mapping[str, object] | None, pairs: Pairs, fields: list[bytes]) -> None:
    """Append each attribute to ``fields`` as a ``KeyValue`` field ``tag``; one that cannot be encoded is
    logged and left out."""
    if not attributes:
        return
    values = attributes.values()
    try:  # every attribute looked up in C (the (key, value, type) tuples built by zip: equal lengths)
        found: list[Any] = list(map(pairs.encoded.get, zip(attributes.keys(), values, map(type, values), strict=False)))
    except TypeError:  # an unhashable value (a list or a mapping: resources, direct ReadableSpans)
        found = [None] * len(attributes)
    if not all(found):  # encoded here, those only (found in C: a field is never empty)
        encode_missing(tag, attributes, pairs, found)
    fields += found


def encode_missing(tag: bytes, attributes: Mapping[str, object], pairs: Pairs, found: list[Any]) -> None:
    """Fill ``found``'s ``None`` entries (the attributes the cache did not have) with their ``KeyValue``
    fields; one that cannot be encoded is logged and left out (``b""``)."""
    keys, values = list(attributes), list(attributes.values())  # no (key, value) tuple per attribute
    volatile, heads = pairs.volatile, pairs.heads
    for index in list(compress(count(), map(not_, found))):  # the Nones, found in C (no comparisons)
        key, value = keys[index], values[index]
        if type(value) is str and key in volatile:  # new every time (a handshake's ids): never kept
            try:
                text = value.encode()
            except UnicodeEncodeError:
                pass  # pair() below raises it again, and it is logged
            else:
                head = heads.get((key, len(text)))  # as pair(): its key's field up to the value's bytes
                if head is not None:
                    found[index] = head + text
                    continue
        try:
            encoded = found[index] = pairs.pair(tag, key, value)
        except (ValueError, TypeError) as error:  # as the SDK: drop the attribute, keep the span
            logger.error("failed to encode attribute %s: %s", key, error)
            found[index] = b""  # nothing, once joined
        else:
            # Exact str, int and bool only: the type is in the key because True, 1 and 1.0 are equal;
            # floats stay out because -0.0 == 0.0.
            cls = type(value)
            if (cls is str or cls is int or cls is bool) and key not in pairs.volatile:
                pairs.keep(key, value, cls, encoded)


class _Shape:
    """One key order's blocks: the positions whose values are encoded each time (their keys' values
    seldom repeat) and, by the values at the others, the encoded fields between them."""

    __slots__ = ("blocks", "grouped", "keys", "misses", "stable", "version", "volatile", "volatile_keys")

    def __init__(self, keys: tuple[str, ...], volatile_keys: set[str]) -> None:
        self.keys = keys
        self.version = len(volatile_keys)  # the volatile set only grows: its size says it changed
        self.volatile = tuple(index for index, key in enumerate(keys) if key in volatile_keys)
        self.volatile_keys = tuple(keys[index] for index in self.volatile)
        stable = [key for index, key in enumerate(keys) if index not in self.volatile]
        # The values that key a block: all of them (None: the values tuple itself), or some, read from the
        # attributes by their keys (a tuple; no tuple of all the values made first).
        self.stable: Any = None if not self.volatile else _some(stable)
        self.blocks: dict[Any, Any] = {}  # bytes, or a tuple of the pieces around the volatile values
        self.misses = 0
        self.grouped = True


def _some(keys: list[str]) -> Any:
    """A callable giving a mapping's values of ``keys`` as a tuple, whatever their number."""
    if not keys:
        return lambda attributes: ()
    if len(keys) == 1:
        (key,) = keys
        return lambda attributes: (attributes[key],)
    return itemgetter(*keys)


_SHAPES_LIMIT = 256
"""Key orders kept (a gateway span has one each); the shapes are forgotten together when full."""
_SHAPE_MISSES = 2 * _VOLATILE_AFTER
"""Blocks of one key order encoded afresh, with no key turning volatile, past which its attributes are
looked up one by one (the combinations of its values seldom repeat)."""


class Blocks:
    """The ``KeyValue`` fields of a whole span's attributes, kept as one block by the order of their keys
    and the values that repeat, so a gateway span's attributes are one lookup instead of one per attribute.

    Values must be ``str`` or ``int`` (not ``bool``): equal values then encode the same. Values of a
    volatile key (:class:`Pairs`: new every time, a handshake's ids or byte counts) are encoded each
    time between the block's pieces. A block is kept only when every attribute was encoded (one that
    was left out is logged each time). Bounded: :data:`CACHE_LIMIT` blocks in all, then forgotten together.
    """

    __slots__ = ("kept", "pairs", "shapes", "tag")

    def __init__(self, tag: bytes, pairs: Pairs) -> None:
        self.tag = tag
        self.pairs = pairs
        self.shapes: dict[tuple[str, ...], _Shape] = {}
        self.kept = 0

    def append(self, attributes: dict[str, Any], fields: list[bytes]) -> None:
        """Append each attribute as a ``KeyValue`` field; one that cannot be encoded is logged and left out."""
        keys = tuple(attributes)
        shape = self.shapes.get(keys)
        if shape is None or shape.version != len(self.pairs.volatile):
            shape = self._shape(keys)
        if not shape.grouped:
            self._each(attributes, fields)
            return
        stable = tuple(attributes.values()) if shape.stable is None else shape.stable(attributes)
        block = shape.blocks.get(stable)
        if block is None:
            self._miss(shape, attributes, stable, fields)
        elif not shape.volatile:
            fields.append(block)
        else:
            heads = self.pairs.heads
            for key, piece in zip(shape.volatile_keys, block, strict=False):  # one piece more: after the last value
                value = attributes[key]
                # _volatile's usual case inline: a str value whose key's head is kept (a handshake's ids).
                if type(value) is str and value.isascii():  # ASCII: its length is its UTF-8 bytes'
                    head = heads.get((key, len(value)))
                    if head is not None:
                        fields += (piece, head, value.encode())
                        continue
                fields.append(piece)
                self._volatile(key, value, fields)
            fields.append(block[-1])

    def _shape(self, keys: tuple[str, ...]) -> _Shape:
        if len(self.shapes) >= _SHAPES_LIMIT:
            self.shapes.clear()
            self.kept = 0
        shape = self.shapes[keys] = _Shape(keys, self.pairs.volatile)
        return shape

    def _each(self, attributes: dict[str, Any], fields: list[bytes]) -> list[bytes]:
        """The attributes one by one (as :func:`append_attributes`), their fields appended and returned."""
        pairs = self.pairs
        found: list[Any] = list(map(pairs.plain.get, attributes.items()))
        if not all(found):
            encode_missing(self.tag, attributes, pairs, found)
        fields += found
        return found

    def _miss(self, shape: _Shape, attributes: dict[str, Any], stable: Any, fields: list[bytes]) -> None:
        version = len(self.pairs.volatile)
        found = self._each(attributes, fields)
        shape.misses += 1
        if version == len(self.pairs.volatile) == shape.version and shape.misses > _SHAPE_MISSES:
            shape.grouped = False  # its values' combinations seldom repeat: looked up one by one
            return
        if not all(found) or version != len(self.pairs.volatile):
            return  # an attribute left out (logged each time), or the volatile keys changed: not kept
        if self.kept >= CACHE_LIMIT:
            for known in self.shapes.values():
                known.blocks.clear()
            self.kept = 0
        start, pieces = 0, []
        for position in shape.volatile:
            pieces.append(b"".join(found[start:position]))
            start = position + 1
        pieces.append(b"".join(found[start:]))
        shape.blocks[stable] = tuple(pieces) if shape.volatile else pieces[0]
        self.kept += 1

    def _volatile(self, key: str, value: object, fields: list[bytes]) -> None:
        """A volatile key's field: its key's head and the value's UTF-8 bytes, or encoded whole."""
        if type(value) is str:
            try:
                text = value.encode()
            except UnicodeEncodeError:
                pass  # pair() below raises it again, and it is logged
            else:
                head = self.pairs.heads.get((key, len(text)))
                if head is not None:
                    fields += (head, text)
                    return
        try:
            fields.append(self.pairs.pair(self.tag, key, value))
        except (ValueError, TypeError) as error:  # as the SDK: drop the attribute, keep the span
            logger.error("failed to encode attribute %s: %s", key, error)


__all__ = ["CACHE_LIMIT", "Blocks", "Pairs", "append_attributes", "encode_missing"]
