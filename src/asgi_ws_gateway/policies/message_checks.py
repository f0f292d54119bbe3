"""Built-in message policies: ``limit-message-size``, ``validate-message`` and ``transform-message``.

Each is declared in a direction's list (``message_policies.inbound`` / ``.outbound``) and applies to
the messages of that direction. Checks are plain functions (no coroutine per message); JSON is
parsed once per message (orjson) and shared by every policy that reads it; schemas are compiled
once, when the configuration is applied (jsonschema-rs, any draft up to 2020-12).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import ConfigDict, Field, field_validator

from .._types import Data
from ..errors import CloseConnection, DropMessage
from ..json_names import (
    SHOWN,
    AmbiguousJson,
    DuplicateName,
    check_names,
    json_to_some_reader,
    load_unique,
    names_apart,
)
from ..loading import LoadRefused, alias_problem, import_object, read_file, retrieve_reference
from ..messages.context import (
    ConnectionContext,
    Direction,
    MessageCheck,
    MessageHandler,
    WsMessage,
    compile_json_template,
    render_json_template,
)
from ..templates import Template, TemplateTooLarge
from ..yaml_keys import safe_load
from .base import PolicyEnv, PolicyProblem, PolicySettings
from .message_base import MessageFunction, apply_function, check_async, register_message_policy
from .schema_budget import SchemaTooCostly, schema_cost
from .schema_costs import FRACTIONAL_MULTIPLE, unbounded_fractional_multiples
from .schema_names import CaseVariants, declared_names
from .transform import warn_repeats

if TYPE_CHECKING:
    import jsonschema_rs

    from .unique_items import SchemaValidators
    from .unique_items import checking as checking_unique_items


def _import_jsonschema() -> None:
    """Bind this module's ``jsonschema_rs`` and the schema validators (what a message's check reads) to their
    modules, as the first ``validate-message`` is built: jsonschema-rs (a 15 MB extension) was ~50 ms of every
    start, with or without a message policy (docs/performance.md, "Start-up")."""
    global jsonschema_rs, SchemaValidators, checking_unique_items
    import jsonschema_rs

    from .unique_items import SchemaValidators
    from .unique_items import checking as checking_unique_items


_SIDE = {"inbound": "client", "outbound": "upstream"}
_SOME_READERS = (
    "the message is JSON to some readers only (NaN, Infinity, 1e400, a lone surrogate, a BOM, not UTF-8, data after it)"
)


class LimitMessageSizeSettings(PolicySettings):
    """``limit-message-size``: messages larger than ``max`` bytes are refused."""

    max: int = Field(
        gt=0,
        le=2**30,
        description="Largest message in bytes (a text message: its UTF-8 length; 1 to 2**30, as max_message_size).",
    )
    action: Literal["close", "drop"] = Field(
        default="close",
        description="close: 1009 to the sender and 1001 to the other side; drop: drop it and answer the sender.",
    )


@register_message_policy("limit-message-size")
class LimitMessageSize:
    Settings = LimitMessageSizeSettings

    def __init__(self, settings: LimitMessageSizeSettings, env: PolicyEnv) -> None:
        self.name = "limit-message-size"
        self.max = settings.max
        self.close = settings.action == "close"

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        limit, close = self.max, self.close
        detail = f"message larger than {limit} bytes"
        peer_reason = f"{_SIDE[direction]} message too big"

        def check(message: WsMessage) -> None:
            if message.size > limit:
                if close:
                    raise CloseConnection(1009, "message_too_big", "message too big", peer_reason=peer_reason)
                raise DropMessage("message_too_big", detail)

        return MessageCheck(check, lambda data, size: size <= limit, max_size=limit)


class ValidateMessageSettings(PolicySettings):
    """``validate-message``: text messages must be JSON and, with a schema, valid against it."""

    model_config = ConfigDict(populate_by_name=True)

    json_schema: dict[str, Any] | bool | None = Field(
        default=None, alias="schema", description="A JSON Schema (any draft; 2020-12 when $schema is absent)."
    )
    schema_file: str | None = Field(default=None, description="A file holding the JSON Schema (JSON or YAML).")
    binary: Literal["reject", "pass"] = Field(default="reject", description="What to do with binary messages.")
    action: Literal["drop", "close"] = Field(
        default="drop", description="drop: drop and answer the sender; close: close with close_code."
    )
    close_code: Literal[1007, 1008] = Field(default=1007, description="1007 invalid payload or 1008 policy violation.")


_NOT_A_REGEX = ' is not a "regex"'  # jsonschema-rs's word for a pattern its engine refused
_LINEAR_ONLY = (
    " is not a regular expression with linear-time matching (no lookaround or backreference) that compiles to at"
    " most 50,000 bytes (a counted repetition of a wildcard, such as .{40}, is larger)"
)
MAX_SCHEMA_PATTERN_BYTES = 50_000
"""A schema pattern's compiled size, at most. Matching is linear in the message, times a factor that
grows with the pattern: ``a.{1000}x`` took 11.6 s per MiB of message (and was matched twice for an
invalid one), ``(?s)a.{30}x``, within the bound, 0.6 s; an anchored ``^[A-Za-z0-9_-]{1,64}$`` ~1 ms."""


@register_message_policy("validate-message")
class ValidateMessage:
    Settings = ValidateMessageSettings

    def __init__(self, settings: ValidateMessageSettings, env: PolicyEnv) -> None:
        _import_jsonschema()
        self.name = "validate-message"
        self.settings = settings
        schema = settings.json_schema
        if settings.schema_file is not None:
            if schema is not None:
                raise PolicyProblem("schema_file", "set schema or schema_file, not both")
            schema = _read_schema(settings.schema_file)
        self.validator: SchemaValidators | None = None
        if schema is not None:
            try:
                # Patterns (pattern, patternProperties) meet what clients send: the linear-time engine,
                # as safe_regex for policies; the default engine backtracks ("(?<=(a|aa)+)b": minutes).
                self.validator = SchemaValidators(
                    schema,
                    retriever=retrieve_reference,
                    pattern_options=jsonschema_rs.RegexOptions(size_limit=MAX_SCHEMA_PATTERN_BYTES),
                )
            except (ValueError, TypeError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if message.endswith(_NOT_A_REGEX):
                    message = message.removesuffix(_NOT_A_REGEX) + _LINEAR_ONLY
                raise PolicyProblem("schema_file" if settings.schema_file else "schema", f"not a valid JSON Schema: "
                                    f"{message}") from None  # fmt: skip
            try:  # a few $refs shared at each level multiply what one message is checked against
                schema_cost(schema, retrieve_reference)
            except SchemaTooCostly as exc:
                raise PolicyProblem("schema_file" if settings.schema_file else "schema", str(exc)) from None
            for path in unbounded_fractional_multiples(schema):  # in a file: where in it
                if settings.schema_file is None:
                    env.warn(("schema", *path), FRACTIONAL_MULTIPLE)
                else:
                    env.warn(("schema_file",), f"at /{'/'.join(map(str, path))}: {FRACTIONAL_MULTIPLE}")
        self.case_variants = CaseVariants.for_schema(schema, retrieve_reference)  # None: nothing to do per message
        # An object whose names the schema declares (folding apart) is not folded again per message.
        self.apart = names_apart(declared_names(schema, retrieve_reference)) if schema is not None else frozenset()
        # A schema of one level whose names are all among those: a message whose names are all among
        # them is spelled as declared (CaseVariants) and folds apart (strict_json), one look for both.
        flat = self.case_variants.flat if self.case_variants is not None else None
        self.flat_apart = flat if flat and flat <= self.apart else None

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        s = self.settings
        validator, case_variants, apart, flat_apart = self.validator, self.case_variants, self.apart, self.flat_apart
        # Without the gateway's uniqueItems, every message is checked with jsonschema-rs's validator.
        plain = validator.plain if validator is not None and validator.linear is None else None
        pass_binary = s.binary == "pass"
        close_code = s.close_code if s.action == "close" else None
        peer_reason = f"{_SIDE[direction]} sent an invalid message"

        def reject(reason: str, detail: str) -> None:
            if close_code is not None:
                raise CloseConnection(close_code, reason, "invalid message", peer_reason=peer_reason)
            raise DropMessage(reason, detail)

        # The message passes() last found invalid, and why: the handler answers it from there (it was
        # parsed and matched again: twice the cost of a message that passes).
        found: list[Any] = [None, None]

        def check(message: WsMessage) -> None:
            if found[0] is not None and found[0] is message.data:
                mismatch, found[0], found[1] = found[1], None, None
                reject("schema_mismatch", mismatch)
            if not message.is_text:
                if not pass_binary:
                    reject("binary_message", "binary messages are not accepted")
                # JSON in a binary message is JSON to an upstream that parses what it receives
                # (Node's JSON.parse(data), Python's json.loads(data)): held to the rules of text
                if not json_to_some_reader(message.data):
                    return
            try:
                value = message.json()
                if case_variants is not None:
                    case_variants.check(value)
            except AmbiguousJson as exc:  # checked as one value, it could reach the upstream as another
                reject("ambiguous_json", str(exc))
                return
            except ValueError:
                reject("invalid_json", "the message is not JSON")
                return
            if validator is not None and (mismatch := _mismatch(validator, value, message.size)) is not None:
                reject("schema_mismatch", mismatch)

        def passes(data: Data, size: int) -> bool:
            if not isinstance(data, str):
                return pass_binary and not json_to_some_reader(data)
            value = orjson.loads(data)  # not JSON or ambiguous (below): a ValueError, and check() answers
            declared = flat_apart is not None and type(value) is dict and flat_apart.issuperset(value)
            check_names(data, value, apart, root_apart=declared)  # as strict_json
            if case_variants is not None and not declared:
                case_variants.check(value)
            if validator is None:
                return True
            mismatch = _first_mismatch(plain, value, size) if plain is not None else _mismatch(validator, value, size)
            if mismatch is None:
                return True
            found[0], found[1] = data, mismatch
            return False

        return MessageCheck(check, passes)


DESCRIBED_UP_TO = 64 * 1024
"""Bytes of a message whose mismatch is described (where, which keyword). jsonschema-rs's error holds
a copy of the failing value and its text: for a 1 MiB message failing at its root (``required``,
``additionalProperties``), 110-270 ms and 90 MB, where ``is_valid`` took 1-2 ms."""
_UNDESCRIBED = "the message does not match the schema"


def _mismatch(validators: SchemaValidators, value: Any, size: int) -> str | None:
    """None if ``value`` matches, else where and which keyword failed (for a message of at most
    :data:`DESCRIBED_UP_TO` bytes); never the message's content (errors' texts quote it). One pass:
    checking with ``is_valid`` and then describing with ``validate`` matched its patterns twice.

    ``validate`` stops at the first error; ``iter_errors`` builds every error before it yields one:
    an 800 KB array of 400,000 numbers against ``items: {type: string}`` held the event loop 6 s."""
    validator = validators.for_value(value)  # uniqueItems: jsonschema-rs's own is quadratic in long integers
    if validator is validators.plain:
        return _first_mismatch(validator, value, size)
    with checking_unique_items():  # the gateway's uniqueItems: each array's and object's token made once
        return _first_mismatch(validator, value, size)


def _first_mismatch(validator: Any, value: Any, size: int) -> str | None:
    if size > DESCRIBED_UP_TO:
        return None if validator.is_valid(value) else _UNDESCRIBED
    try:
        validator.validate(value)
    except jsonschema_rs.ValidationError as error:
        where = "/" + "/".join(_path_part(p) for p in error.instance_path)
        keyword = str(error.schema_path[-1]) if len(error.schema_path) else "schema"
        return f"the message does not match the schema at {where} ({keyword})"
    except ValueError:  # jsonschema-rs describes no value nested over ~255 levels ("Recursion limit reached")
        return None if validator.is_valid(value) else _UNDESCRIBED
    return None


def _path_part(part: object) -> str:
    """A part of the failing value's path: an index, or a name the sender chose, which may be as long as
    its message: the answer quotes no more of it than :func:`json_names.shown` quotes a name."""
    text = str(part)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _read_schema(path: str) -> Any:
    try:
        text = read_file(path).decode("utf-8")
    except LoadRefused as exc:
        raise PolicyProblem("schema_file", str(exc)) from None
    except OSError as exc:
        raise PolicyProblem("schema_file", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyProblem("schema_file", "not UTF-8 text") from None
    import yaml

    try:
        schema = safe_load(text) if path.endswith((".yaml", ".yml")) else load_unique(text)
    except DuplicateName as exc:
        raise PolicyProblem("schema_file", f"line {exc.lineno}, column {exc.colno}: {exc}") from None
    except ValueError as exc:
        raise PolicyProblem("schema_file", f"not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise PolicyProblem("schema_file", f"not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:  # the parsers recurse per level of nesting
        raise PolicyProblem("schema_file", "nested too deeply to read") from None
    problem = alias_problem(schema)
    if problem:
        raise PolicyProblem("schema_file", problem)
    return schema


class TransformMessageSettings(PolicySettings):
    """``transform-message``: set and remove JSON fields, and/or call your own async function."""

    set: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields to set (dotted paths reach into objects). Strings are templates; one that is a "
        "single reference ('{jwt.sub}') keeps the value's JSON type.",
    )
    remove: list[str] = Field(default_factory=list, description="Fields to remove (dotted paths).")
    call: str | None = Field(
        default=None, description="module:function, an async function taking the message (see the docs)."
    )
    non_object: Literal["drop", "pass"] = Field(
        default="drop",
        description="With set/remove: what to do with a message that is not a JSON object (drop: answer the sender).",
    )

    @field_validator("set", "remove")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        for path in value:
            if not path or any(not part for part in str(path).split(".")):
                raise ValueError(f"'{path}' is not a field path like 'user' or 'meta.user'")
        return value


@register_message_policy("transform-message")
class TransformMessage:
    Settings = TransformMessageSettings

    def __init__(self, settings: TransformMessageSettings, env: PolicyEnv) -> None:
        self.name = "transform-message"
        try:
            self.set = [(tuple(path.split(".")), compile_json_template(v)) for path, v in settings.set.items()]
        except ValueError as exc:
            raise PolicyProblem("set", str(exc)) from None
        self.remove = [tuple(path.split(".")) for path in settings.remove]
        self.pass_other = settings.non_object == "pass"
        self.function: MessageFunction | None = _import(settings.call) if settings.call is not None else None
        if not (self.set or self.remove or self.function):
            raise PolicyProblem("set", "set at least one of set, remove, call")
        warn_repeats(_templates(self.set), env, ("set",), "the API's max_message_size (dropped)")

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler:
        fields, remove, function, pass_other = self.set, self.remove, self.function, self.pass_other
        max_size = connection.max_message_size
        paths, templates = [path for path, _ in fields], [template for _, template in fields]

        def edit(message: WsMessage) -> bool:
            try:
                value = message.json()
            except AmbiguousJson:  # never passed on untransformed, whatever non_object says: the
                raise  # pipeline drops it as ambiguous_json
            except ValueError:
                if pass_other and json_to_some_reader(message.data):  # NaN, "\ud800", a BOM: an object
                    raise DropMessage("invalid_json", _SOME_READERS) from None  # to the upstream, unstamped
                value = None
            if not isinstance(value, dict):
                if pass_other:
                    return False
                raise DropMessage("not_json_object", "the message must be a JSON object")
            for path in remove:
                _remove(value, path)
            for path, new in zip(paths, _rendered(templates, connection, max_size), strict=True):
                _set(value, path, new)
            message.set_json(value)
            return True

        if function is None:

            def transform(message: WsMessage) -> None:
                edit(message)

            return transform

        def transform_and_call(message: WsMessage) -> Awaitable[None]:
            if fields or remove:
                edit(message)
            assert function is not None
            return apply_function(function, message)

        return transform_and_call


def _rendered(templates: list[Any], connection: ConnectionContext, max_size: int) -> list[Any]:
    """The ``set`` values for one message. Their text shares the message's ``max_size``: past it the
    message is too big whatever else it holds, and is dropped as the pipeline drops one
    (``message_too_big``), before the text past it is built (a client's header written 680 times in
    16 fields rendered 87 MB for each 7-byte message)."""
    try:
        values: list[Any] = render_json_template(templates, connection, limit=max_size)
    except TemplateTooLarge:
        raise DropMessage("message_too_big", f"the message as rewritten is larger than {max_size} bytes") from None
    return values


def _templates(compiled: list[tuple[tuple[str, ...], Any]]) -> list[Template]:
    """Every template among the ``set`` values (nested in objects and lists too)."""
    found: list[Template] = []
    pending: list[Any] = [value for _, value in compiled]
    while pending:
        value = pending.pop()
        if isinstance(value, Template):
            found.append(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def _import(target: str) -> MessageFunction:
    try:
        function: MessageFunction = import_object(target)  # refused before importing when restricted
    except ValueError as exc:
        raise PolicyProblem("call", str(exc).replace("an object as", "a function as")) from None
    try:
        check_async(function)
    except TypeError as exc:
        raise PolicyProblem("call", str(exc)) from None
    return function


# A path part names every key equal to it ignoring case: Go's encoding/json and ASP.NET Core read
# ``ROLE`` as ``role`` (json_names.check_unique_names). Removed, each goes; set, they become the one
# configured name, or the message would reach the upstream with the client's ``USER`` beside ``user``.


def _matching(value: dict[str, Any], part: str) -> list[str]:
    folded = part.casefold()
    return [key for key in value if key.casefold() == folded]


def _drop_dotted(value: dict[str, Any], rest: tuple[str, ...]) -> None:
    """Remove the keys that spell ``rest`` whole, dots and all (``"meta.by"`` beside ``meta: {by}``):
    lodash's ``_.get(message, "meta.by")``, the path the operator wrote, reads such a key first, so
    a client's own ``"meta.by"`` outranked the value set (and outlived a removal)."""
    if len(rest) > 1:
        for key in _matching(value, ".".join(rest)):
            del value[key]


def _set(value: dict[str, Any], path: tuple[str, ...], new: Any) -> None:
    for depth, key in enumerate(path[:-1]):
        _drop_dotted(value, path[depth:])
        matching = _matching(value, key)
        children = [value[k] for k in matching if isinstance(value[k], dict)]
        child = children[-1] if children else {}
        for k in matching:
            if k != key:  # the exact key keeps its place in the object
                del value[k]
        value[key] = child
        value = child
    for k in _matching(value, path[-1]):
        if k != path[-1]:
            del value[k]
    value[path[-1]] = new


def _remove(value: dict[str, Any], path: tuple[str, ...]) -> None:
    _drop_dotted(value, path)
    matching = _matching(value, path[0])
    if len(path) == 1:
        for key in matching:
            del value[key]
        return
    for key in matching:
        child = value[key]
        if isinstance(child, dict):
            _remove(child, path[1:])


__all__ = ["LimitMessageSize", "TransformMessage", "ValidateMessage"]
