"""Log records without credentials: the filter every handler and the gateway's and servers' loggers get,
and the record factory that redacts the libraries' records as they are made (:func:`install`).

What is redacted is :mod:`.redact`'s: this module applies it to ``logging``'s records — the message
with its arguments, an ASGI scope dumped whole, the formatted exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .redact import (
    REDACTED,
    is_credential_header,
    is_credential_name,
    redact_encoded_path,
    redact_free_text,
    redact_path,
    redact_query,
    redact_targets,
    redact_text,
)

#: uvicorn's loggers: they write request paths with their query (and, at debug, every header; at
#: trace, ``uvicorn.asgi``, every scope and message).
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn.asgi")
#: websockets' loggers: at debug they write every header of the upstream handshakes the gateway makes.
WEBSOCKETS_LOGGERS = ("websockets.client", "websockets.server")
#: The top-level loggers of the libraries the gateway drives, each with every child: their records are
#: redacted as they are made (:func:`install`). httpx's and httpcore's (``httpx2``'s) lines name the JWKS
#: URL, urllib3's and the OpenTelemetry exporters' the collector's endpoint, redis' its URL.
LIBRARY_LOGGERS = (
    "asgi_ws_gateway", "uvicorn", "websockets", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "requests",
    "opentelemetry", "grpc", "redis",
)  # fmt: skip


REDACTED_MARK = "asgi_ws_gateway_redacted"
"""A LogRecord attribute: the record is redacted already (through a :class:`RedactingFilter`, or built
of redacted parts, as a JSON access line whose fields are each redacted: a filter would read its
fields as one text)."""
_MESSAGE = "asgi_ws_gateway_message"
"""A LogRecord attribute: ``(msg, args, message)``, the message the filter formatted and found clean."""


def formatted_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, without formatting it again when a :class:`RedactingFilter` already did.

    The filter's text is used only while the record's ``msg`` and ``args`` are still the ones it read.
    """
    seen = record.__dict__.get(_MESSAGE)
    if seen is not None and seen[0] is record.msg and seen[1] is record.args:
        return str(seen[2])
    return record.getMessage()


class RedactingFilter(logging.Filter):
    """Redacts every record it sees: the message with its arguments, the formatted exception.

    The formatted message is redacted in one pass; when something was redacted it replaces the
    message and its arguments. uvicorn's access lines (and a record whose arguments do not fit its
    message) have each argument redacted in place instead, so that formatters that read
    ``record.args`` themselves, such as uvicorn's access formatter, keep working.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, REDACTED_MARK, False):
            return True  # a logger's filter did it; a handler's (run's log configuration) need not again
        setattr(record, REDACTED_MARK, True)
        args = record.args
        # Plain dicts, looked for in C: every record passes here (an isinstance of the Mapping ABC is a
        # Python call per argument); what logging hands over as a mapping, and uvicorn.asgi's scopes, are dicts.
        if type(args) is not tuple and isinstance(args, Mapping):  # logging's one mapping (``%(name)s``)
            record.args = _redacted_mapping(args)
        elif args and dict in map(type, args):  # uvicorn.asgi's scopes and messages
            record.args = tuple(_redacted_mapping(arg) if type(arg) is dict else arg for arg in args)
        if record.name == "uvicorn.access" or not isinstance(record.msg, str):
            self._each(record)  # its formatter needs the arguments as they are
        else:
            # The whole line in one pass (a header's name and value may be separate arguments,
            # "< %s: %s"); the arguments are kept as they are unless something was redacted.
            try:
                message = record.getMessage()
                # A request target argument is redacted on its own first (the path of one a server or
                # client library logs read decoded, the query to the target's end): then the line's
                # pass keeps the quote that closes a field after it ("WebSocket %s").
                paths = record.name in _ENCODED_TARGETS and "/" in message
                queries = _queries_redacted(record.args, paths) if paths or "?" in message or "#" in message else None
                text = message if queries is None else str(record.msg) % queries
            except (TypeError, ValueError):
                self._each(record)
            else:
                redacted = redact_text(text)
                if redacted != message:
                    record.msg, record.args = redacted, ()
                else:  # formatters that know (run's) need not format it again
                    setattr(record, _MESSAGE, (record.msg, record.args, message))
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatted here so that the exception's message (a URL with a query) is redacted too.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True

    @staticmethod
    def _each(record: logging.LogRecord) -> None:
        """The message and each argument on its own."""
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}


_ENCODED_TARGETS = frozenset(UVICORN_LOGGERS + WEBSOCKETS_LOGGERS)
"""Loggers whose lines carry request targets as sent, percent-encoded (the gateway's own carry decoded
paths it redacted itself)."""


def _queries_redacted(args: object, paths: bool) -> tuple[object, ...] | None:
    """``args`` with the query and fragment of each string argument redacted, and, if ``paths``, each
    request target's path read decoded; None when that changes nothing (most lines)."""
    if not isinstance(args, tuple):
        return None
    redacted, changed = [], False
    for arg in args:
        if isinstance(arg, str) and ((paths and arg.startswith("/")) or "?" in arg or "#" in arg):
            new = redact_targets(_target_path_redacted(arg) if paths else arg)
            changed = changed or new != arg
            arg = new
        redacted.append(arg)
    return tuple(redacted) if changed else None


def _target_path_redacted(text: str) -> str:
    """``text`` with its path redacted when it is a request target (``/path?query``)."""
    if not text.startswith("/"):
        return text
    path, mark, rest = text.partition("?")
    return redact_encoded_path(path) + mark + rest


def _redacted_mapping(mapping: Mapping[Any, Any], depth: int = 0) -> dict[Any, Any]:
    """A mapping argument (an ASGI scope or message, as ``uvicorn.asgi`` dumps them) redacted by key: the
    query's values, a credential in the path, credential headers' values, every offered or chosen
    subprotocol (``Sec-WebSocket-Protocol`` is a credential header), a close reason as a client's free
    text, and the value under any name that says it is a credential (``token``, ``password``)."""
    redacted: dict[Any, Any] = {}
    for key, value in mapping.items():
        if isinstance(key, str):
            value = _redacted_value(key, value, depth)
        redacted[key] = value
    return redacted


def _redacted_value(key: str, value: Any, depth: int) -> Any:
    if isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if key == "query_string":
            text = redact_query(text)
        elif key == "raw_path":
            text = redact_encoded_path(text)
        elif key in ("path", "reason"):
            text = redact_path(text) if key == "path" else redact_free_text(text)
        elif key == "subprotocol" or is_credential_name(key):
            text = REDACTED if text else text
        else:
            return value
        return text.encode("latin-1", "replace") if isinstance(value, bytes) else text
    if key == "subprotocols" and isinstance(value, (list, tuple)):
        return [REDACTED for _ in value]
    if key == "headers" and isinstance(value, (list, tuple)):
        return [_redacted_pair(pair) for pair in value]
    if is_credential_name(key) and value is not None and not isinstance(value, (bool, int, float)):
        return REDACTED
    if isinstance(value, Mapping) and depth < 4:  # a scope's "state" or "extensions"
        return _redacted_mapping(value, depth + 1)
    return value


def _redacted_pair(pair: Any) -> Any:
    """A ``(name, value)`` header pair, of bytes or text, its value redacted if the name says so."""
    if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], (str, bytes)):
        name = pair[0].decode("latin-1") if isinstance(pair[0], bytes) else pair[0]
        if is_credential_header(name):
            return (pair[0], REDACTED.encode() if isinstance(pair[1], bytes) else REDACTED)
    return pair


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact_text(_target_path_redacted(arg))
    if isinstance(arg, bytes):
        return redact_text(arg.decode("latin-1"))
    if isinstance(arg, (int, float)) or arg is None:
        return arg
    return redact_text(str(arg))  # an exception or an object whose str() may embed a URL


def install(loggers: Sequence[str] = UVICORN_LOGGERS + WEBSOCKETS_LOGGERS) -> None:
    """Put a :class:`RedactingFilter` on each of ``loggers`` and on the gateway's own (once each), and
    redact every record of :data:`LIBRARY_LOGGERS` (and their children) as it is made.

    A logger's filters apply to the records created on it (not to those its children propagate),
    hence one filter per logger: uvicorn's, and every ``asgi_ws_gateway.*`` logger created so far.
    The libraries' loggers are many, and made when a module is first imported (an OTLP exporter's,
    after start-up): their records are redacted by the log record factory instead (:func:`logging.
    setLogRecordFactory`, wrapping whichever factory was set), the one step every record of every
    logger takes, before any filter or handler (Python's last-resort handler included) sees it.
    """
    own = [name for name in list(logging.Logger.manager.loggerDict) if name.startswith("asgi_ws_gateway")]
    for name in [*loggers, *own]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))


class _RedactingFactory:
    """A log record factory: ``make``'s records, those of :data:`LIBRARY_LOGGERS` redacted."""

    def __init__(self, make: Callable[..., logging.LogRecord]) -> None:
        self.make = make
        self.roots = frozenset(LIBRARY_LOGGERS)
        self.redacting = RedactingFilter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        name = record.name
        # Not the access log's: its JSON line is marked redacted (by ``extra``, set after this factory
        # ran) and must not be read as one text; its text line meets its logger's filter.
        if name.partition(".")[0] in self.roots and name != _ACCESS_LOGGER:
            self.redacting.filter(record)
        return record


_ACCESS_LOGGER = "asgi_ws_gateway.access"


__all__ = [
    "LIBRARY_LOGGERS",
    "REDACTED_MARK",
    "UVICORN_LOGGERS",
    "WEBSOCKETS_LOGGERS",
    "RedactingFilter",
    "formatted_message",
    "install",
]
