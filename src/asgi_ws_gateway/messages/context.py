"""What a message policy works with: the message, the connection's context, error replies, JSON templates."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from .._types import Data
from ..errors import DropMessage, MessageRejected
from ..handshake.request_view import AmbiguousValue
from ..json_depth import nests_deeper
from ..json_names import LONE_SURROGATE, strict_json
from ..templates import NAMESPACES, Template, TemplateTooLarge
from .action_keys import action_key

if TYPE_CHECKING:
    from ..handshake.context import HandshakeContext, Subscription
    from ..relay.stats import RelayStats

logger = logging.getLogger(__name__)
WRITABLE_DEPTH = 254
"""Levels a JSON message may nest for a policy to change it: orjson writes no deeper."""


Direction = Literal["inbound", "outbound"]
"""``inbound``: client to upstream; ``outbound``: upstream to client."""

_UNSET: Any = object()
_NO_LIMIT = 2**62
"""A size without a limit (``max_message_size`` where no API gave one)."""


class WsMessage:
    """One message in a pipeline. Replace it with :meth:`replace` or :meth:`set_json`.

    Attributes:
        direction: ``inbound`` (from the client) or ``outbound`` (from the upstream).
        connection: the connection it travels on.
    """

    __slots__ = ("_data", "_json", "_size", "_text", "connection", "direction")

    def __init__(self, data: Data, size: int, direction: Direction, connection: ConnectionContext) -> None:
        self._data: Data | None = data
        self._size = size
        self._text = isinstance(data, str)
        self._json: Any = _UNSET
        self.direction = direction
        self.connection = connection

    @property
    def data(self) -> Data:
        """The message as it will be sent: ``str`` for a text frame, ``bytes`` for a binary one."""
        if self._data is None:  # set_json() was called: serialize once, keeping the frame type
            try:
                encoded = orjson.dumps(self._json)
            except orjson.JSONEncodeError:
                if nests_deeper(self._json, WRITABLE_DEPTH):  # the sender's, not a policy's, fault
                    raise DropMessage("too_deep", f"the message nests deeper than {WRITABLE_DEPTH} levels") from None
                raise
            self._data = encoded.decode() if self._text else encoded
            self._size = len(encoded)
        return self._data

    @property
    def is_text(self) -> bool:
        return self._text

    @property
    def size(self) -> int:
        """Payload bytes (UTF-8 length of a text message)."""
        if self._data is None:
            self.data  # noqa: B018 - serializes and sets the size
        return self._size

    def json(self) -> Any:
        """The message parsed as JSON (parsed once per message, shared by every policy).

        Raises:
            ValueError: the message is not JSON, or JSON that readers disagree on (``AmbiguousJson``:
                a name twice in one object).
        """
        if self._json is _UNSET:
            assert self._data is not None
            self._json = strict_json(self._data)
        return self._json

    def set_json(self, value: Any) -> None:
        """Replace the message with ``value`` serialized as JSON (same frame type)."""
        self._json = value
        self._data = None

    def replace(self, data: Data) -> None:
        """Replace the message; ``str`` is sent as a text frame, ``bytes`` as a binary one."""
        self._data = data
        self._text = isinstance(data, str)
        self._json = _UNSET
        self._size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())


MessageHandler = Callable[[WsMessage], "Awaitable[None] | None"]
"""What a policy does to each message of one connection in one direction."""


class MessageCheck:
    """A handler that only checks messages, with a shortcut for the messages it lets through.

    ``passes(data, size)`` returns True for a message ``handle`` would let through unchanged and at
    once, having done what ``handle`` does for it (a rate limit's budget spent); it returns False --
    or raises -- when ``handle`` must run and decide (drop, close, wait, or pass after all), and
    then it must have had no effect. A pipeline whose handlers are all checks runs only their
    shortcuts for a message that passes them all: no :class:`WsMessage`, no coroutine.
    ``max_size`` marks a size limit (``passes`` is exactly ``size <= max_size``): the pipeline
    compares the size once for all its size limits, without calling ``passes``.
    """

    __slots__ = ("handle", "max_size", "passes")

    def __init__(
        self, handle: MessageHandler, passes: Callable[[Data, int], bool], *, max_size: int | None = None
    ) -> None:
        self.handle = handle
        self.passes = passes
        self.max_size = max_size

    def __call__(self, message: WsMessage) -> Awaitable[None] | None:
        return self.handle(message)


class MessagePolicy(Protocol):
    """A message policy type's instance, built once from the configuration."""

    name: str

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler | None:
        """Called once per connection and direction; None when there is nothing to do for it."""
        ...


class RelayControls(Protocol):
    """What the relay lets message policies do to their connection."""

    async def close(
        self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str
    ) -> bool | None: ...  # (the connectors' say whether it began the close: unused here)

    async def send_to_client(self, data: Data) -> bool: ...

    async def send_to_upstream(self, data: Data) -> bool: ...

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None: ...


class _Ended:
    """The controls of a connection that has ended: as a closed connection's, and nothing to hold on to."""

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> None:
        return None

    async def send_to_client(self, data: Data) -> bool:
        return False

    async def send_to_upstream(self, data: Data) -> bool:
        return False

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        return None  # the connection is over: nothing left for the task to do


_ENDED = _Ended()


class ConnectionContext:
    """One open connection as its message policies see it.

    Attributes:
        handshake: the connection's handshake context (request view, claims, subscription, ...).
        state: free per-connection storage for your own policies.
        stats: the relay's counters (read-only for policies; use :meth:`count`).
        max_message_size: the API's, in bytes: a message a policy writes larger is dropped
            (``message_too_big``), and a template renders no more than it.
    """

    def __init__(self, handshake: HandshakeContext, stats: RelayStats, controls: RelayControls) -> None:
        self.handshake = handshake
        self.stats = stats
        self.state: dict[str, Any] = {}
        self.max_message_size = _NO_LIMIT  # the API's, set by the policy set that attaches to it
        self._controls = controls

    @property
    def api(self) -> str:
        return self.handshake.api

    @property
    def claims(self) -> dict[str, Any] | None:
        """The validated JWT's claims (updated by an in-band credential refresh)."""
        return self.handshake.claims

    @property
    def subscription(self) -> Subscription | None:
        return self.handshake.subscription

    @property
    def path_params(self) -> Mapping[str, str]:
        return self.handshake.request.path_params

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        """Template values, as in the handshake (``{jwt.sub}``, ``{path.room}``, ...); a value the client
        sent twice differently, which no handshake policy read, is missing here (the connection is open:
        a message policy keyed by it counts every such client under the default, never a fresh key)."""
        try:
            return self.handshake.lookup(namespace, path)
        except AmbiguousValue:
            return None

    def count(self, policy: str, action: str, direction: Direction, reason: str) -> None:
        """Count one action of a policy in ``stats.policy_actions`` (read by telemetry), its parts bounded
        (:func:`~.action_keys.action_key`: a reason that is not a code, or past a policy's 64th, is ``_OTHER``)."""
        actions = self.stats.policy_actions
        key = action_key(policy, action, direction, reason)
        actions[key] = actions.get(key, 0) + 1

    async def close(self, code: int, reason: str, *, upstream_code: int = 1001, upstream_reason: str = "") -> None:
        """Close both sides from outside the pumps (a timer): the client with ``code``, the upstream with 1001."""
        await self._controls.close(code, reason, upstream_code, upstream_reason or f"client closed: {reason}")

    async def send_to_client(self, data: Data) -> bool:
        """Send a message of the gateway's own to the client; False once it is closing."""
        return await self._controls.send_to_client(data)

    async def send_to_upstream(self, data: Data) -> bool:
        return await self._controls.send_to_upstream(data)

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task()`` while the connection is relayed; it is cancelled when the connection ends."""
        self._controls.start(task)

    def end(self) -> None:
        """The relay is done (its policies' tasks too): drop it. What a policy still holding this
        context asks then is answered as by a closed connection, and the relay, which holds this
        context, is no longer held by it: refcounting frees both, no reference cycle is left."""
        self._controls = _ENDED


class ErrorReply:
    """How a dropped message's sender is told: a JSON object or a text template.

    Templates see the connection's values (``{jwt.sub}``) and ``{error.reason}``, ``{error.detail}``,
    ``{error.policy}``, ``{error.direction}``.
    """

    DEFAULT: Mapping[str, Any] = {
        "type": "error",
        "error": "{error.reason}",
        "detail": "{error.detail}",
        "policy": "{error.policy}",
    }

    NAMESPACES: Mapping[str, frozenset[str] | None] = {
        **NAMESPACES,
        "error": frozenset({"reason", "detail", "policy", "direction"}),
    }

    def __init__(self, template: str | Mapping[str, Any] = DEFAULT) -> None:
        self.text = Template(template, self.NAMESPACES) if isinstance(template, str) else None
        self.json = compile_json_template(template, self.NAMESPACES) if not isinstance(template, str) else None

    def render(self, connection: ConnectionContext, error: MessageRejected, policy: str, direction: Direction) -> str:
        """The reply; one whose templates would render past the API's ``max_message_size`` (a client's
        value written many times) is not built: the default reply is sent instead."""
        values = {"reason": error.reason, "detail": error.detail, "policy": policy, "direction": direction}
        lookup = _ErrorLookup(connection, values)
        limit = connection.max_message_size
        try:
            if self.text is not None:
                reply = writable_text(self.text.render(lookup, limit=limit))
                size = len(reply) if reply.isascii() else len(reply.encode())
            else:
                encoded = orjson.dumps(render_json_template(self.json, lookup, limit=limit))
                reply, size = encoded.decode(), len(encoded)
            # The templates count characters as they render; the reply goes out as UTF-8, JSON-escaped:
            # a value of 600 '"' or 900 'é' within a 1,024 limit made a reply of 1,208 or 1,800 bytes,
            # past what the receiver relies on (an upstream with the same limit closes with 1009).
            if size > limit:
                raise TemplateTooLarge(limit)
        except TemplateTooLarge:
            return orjson.dumps(render_json_template(_DEFAULT_REPLY, lookup)).decode()
        return reply


class _ErrorLookup:
    def __init__(self, connection: ConnectionContext, values: dict[str, str]) -> None:
        self.connection = connection
        self.values = values

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        if namespace == "error":
            return self.values.get(path[0])
        return self.connection.lookup(namespace, path)


def compile_json_template(value: Any, namespaces: Mapping[str, frozenset[str] | None] = NAMESPACES) -> Any:
    """A JSON value whose strings are compiled as templates (raises TemplateError)."""
    if isinstance(value, str):
        return Template(value, namespaces)
    if isinstance(value, Mapping):
        return {str(k): compile_json_template(v, namespaces) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compile_json_template(v, namespaces) for v in value]
    return value


_INT64_MIN, _UINT64_END = -(2**63), 2**64


def writable_text(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD: UTF-8 (a frame, orjson) cannot carry one.

    Python's ``json`` reads ``"\\ud800"`` into a str, so a JWT claim may hold one: written into a
    message or an error reply, it failed the connection with 1011 on every message."""
    return LONE_SURROGATE.sub("\ufffd", text) if not text.isascii() else text


def writable(value: Any) -> Any:
    """A template's value as orjson can write it: lone surrogates as U+FFFD (:func:`writable_text`),
    an integer beyond 64 bits (a claim's ``2**70``; orjson writes none) as its digits in a string."""
    if isinstance(value, str):
        return writable_text(value)
    if isinstance(value, bool | float) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value < _UINT64_END else str(value)
    if isinstance(value, list):
        return [writable(v) for v in value]
    if isinstance(value, dict):
        return {writable_text(str(k)): writable(v) for k, v in value.items()}
    return value


def render_json_template(value: Any, lookup: Any, *, limit: int | None = None) -> Any:
    """Render a compiled JSON template. A string that is one reference keeps the value's JSON type.

    Raises:
        TemplateTooLarge: its strings would take more than ``limit`` characters together (None: no
            limit); known from their parts' lengths, before the text past it is built.
    """
    return _render_json(value, lookup, None if limit is None else _Budget(limit))


class _Budget:
    """The characters the strings of one JSON template may still render."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, length: int) -> None:
        self.left -= length
        if self.left < 0:
            raise TemplateTooLarge(self.limit)


def _render_json(value: Any, lookup: Any, budget: _Budget | None) -> Any:
    if isinstance(value, Template):
        refs = value.references
        if len(refs) == 1 and value.source.strip() == "{" + str(refs[0]) + "}":
            found = refs[0].resolve(lookup)
            if budget is not None and isinstance(found, str):  # the client's values are strings
                budget.spend(len(found))
            return (
                writable(found)
                if found is None or isinstance(found, str | int | float | bool | list | dict)
                else str(found)
            )
        if budget is None:
            return writable_text(value.render(lookup))
        try:
            text = value.render(lookup, limit=budget.left)
        except TemplateTooLarge:
            raise TemplateTooLarge(budget.limit) from None
        budget.spend(len(text))
        return writable_text(text)
    if isinstance(value, dict):
        return {k: _render_json(v, lookup, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, lookup, budget) for v in value]
    return value


_DEFAULT_REPLY = compile_json_template(ErrorReply.DEFAULT, ErrorReply.NAMESPACES)
"""The reply sent where a configured one would render too large: the gateway's values only, which are short."""


__all__ = [
    "ConnectionContext",
    "Direction",
    "ErrorReply",
    "MessageCheck",
    "MessageHandler",
    "MessagePolicy",
    "RelayControls",
    "WsMessage",
    "compile_json_template",
    "render_json_template",
    "writable",
    "writable_text",
]
