"""Log records without credentials: the filter every handler and the gateway's and servers' loggers get,
and the record factory that redacts the libraries' records as they are made (:func:`install`).

What is redacted is :mod:`.redact`'s: this module applies it to ``logging``'s records — the message
with its arguments, an ASGI scope dumped whole, the formatted exception. It also keeps a library's
line on one line: what a peer sent (a header dump's value, an error quoting it, a close reason)
with its control, line-breaking and bidi characters escaped, as the gateway escapes its own values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .redact import (
    CONTROL_CHARACTERS,
    REDACTED,
    frame_text,
    is_credential_header,
    is_credential_name,
    is_frame,
    printable,
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
JSON_LINE = "asgi_ws_gateway_json_line"
"""Set (true) on a record whose message is a JSON access line: ``run``'s handler writes it bare, whatever
format the handler was configured for (a reload may have changed ``telemetry.access_log``). Here, not in
:mod:`.telemetry.access`, which imports the span machinery: ``run``'s log configuration reads it in every process."""
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

    A library's record (any logger but the gateway's, whose lines escape their values themselves) is
    also made printable (``redact.printable``; a line feed before an indented line or at the end kept):
    at debug uvicorn and websockets dump every header as sent, and websockets quotes a malformed one
    in its error, C1 controls (U+0085, U+009B) included.
    A line that quotes a peer's free text is redacted as free text (``token=abc``, ``Bearer abc``):
    websockets' frame lines (``< CLOSE 1011 (internal error) <reason>``, their payloads redacted whole
    before websockets cuts them short, ``redact.frame_text``), a line with an exception among its
    arguments (``ConnectionClosed`` quotes both close reasons), and each exception's message in a
    formatted traceback.
    The formatted exception of every record has its control characters escaped but for the line
    ends of the traceback itself (an exception's own message is one line).
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
        library = not record.name.startswith(_OWN_LOGGERS)
        free_text = record.name.startswith(_PEER_TEXT_LOGGERS)  # the line quotes a peer's text
        if type(args) is tuple and args:
            if library and any(map(is_frame, args)):  # websockets' "< %s": the frame's text, redacted whole
                record.args = args = tuple(frame_text(arg) if is_frame(arg) else arg for arg in args)
            # Arguments of the plain types are looked for in C first (the access line has a dozen).
            free_text = free_text or (  # an exception's message
                not _PLAIN_ARGS.issuperset(map(type, args)) and any(isinstance(arg, BaseException) for arg in args)
            )
        if record.name == "uvicorn.access" or not isinstance(record.msg, str):
            self._each(record, library)  # its formatter needs the arguments as they are
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
                self._each(record, library)
            else:
                # Escaped after: a header dump's lines are read by their ends.
                redacted = redact_free_text(text) if free_text else redact_text(text)
                if library:
                    redacted = _printable(redacted)
                if redacted != message:
                    record.msg, record.args = redacted, ()
                else:  # formatters that know (run's) need not format it again
                    setattr(record, _MESSAGE, (record.msg, record.args, message))
        error = record.exc_info[1] if record.exc_info else None
        if record.exc_info and error is not None and not record.exc_text:
            # Formatted here so that the exception's message (a URL with a query) is redacted too.
            record.exc_text = _exception_text(logging.Formatter().formatException(record.exc_info), error)
        elif record.exc_text:
            record.exc_text = _exception_text(record.exc_text, error)
        return True

    @staticmethod
    def _each(record: logging.LogRecord, library: bool) -> None:
        """The message and each argument on its own (and, for a ``library``'s record, made printable)."""
        escape = _printable if library else _unchanged
        if isinstance(record.msg, str) or library:  # an object as the message: str(), as getMessage() does
            record.msg = escape(redact_text(str(record.msg)))
        if isinstance(record.args, tuple):
            record.args = tuple(escape(_redact_arg(arg)) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: escape(_redact_arg(arg)) for key, arg in record.args.items()}


_PLAIN_ARGS = frozenset((str, int, float, bool, bytes, type(None)))
"""Types of log arguments that are no exception (compared exactly: a subclass of one may be anything)."""

_OWN_LOGGERS = "asgi_ws_gateway"
"""The gateway's loggers' names start so: their lines escape each value a client chose themselves
(escaping the line again would double its backslashes)."""


def _printable(value: Any) -> Any:
    """A text ``value`` as ``printable(value, quote=False)`` writes it, but for the line feeds it ends
    with and those before an indented line: uvicorn's "Exception in ASGI application\\n" before its
    traceback, the gateway's list of a configuration's problems that uvicorn writes when start-up
    fails. An indented line continues the record above it, to a reader (a traceback's lines are) and
    to log shippers' multi-line rules (``^[[:space:]]``): it starts no record of its own."""
    if not isinstance(value, str) or (value.isprintable() and "\\" not in value):
        return value
    text = value.rstrip("\n")
    first, *rest = text.split("\n")
    lines = [printable(first, quote=False)]
    lines += [("\n" if line.startswith(" ") else "\\n") + printable(line, quote=False) for line in rest]
    return "".join(lines) + value[len(text) :]


def _unchanged(value: Any) -> Any:
    return value


_CONTROL_IN_TRACEBACK = re.compile(f"(?!\n)[{CONTROL_CHARACTERS}]")
"""What ``printable`` escapes but a traceback's line ends and its backslashes (its source lines' own)."""
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _escaped(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")  # as redact.printable writes it


def _exception_text(text: str, error: BaseException | None) -> str:
    """A formatted exception redacted, then its control characters escaped but the traceback's line ends.

    Redacted first: an HTTP header block in it is read by its line ends. The message of ``error`` and
    of each exception in its chain may quote a peer (``ConnectionClosed``: both close reasons): it is
    redacted as free text, and its line ends escaped, so that no line of it reads as a line of the log.
    (Not the whole traceback: its source lines, ``token = ...``, are the gateway's code.)
    """
    text = redact_text(text)
    for line in _exception_lines(error):
        redacted = redact_text(line)
        text = text.replace(redacted, _CONTROL.sub(_escaped, redact_free_text(line)))
    return _CONTROL_IN_TRACEBACK.sub(_escaped, text)


def _exception_lines(error: BaseException | None) -> Iterator[str]:
    """The ``Type: message`` lines a traceback writes for ``error`` and the exceptions it was raised from
    or during."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending and len(seen) < 64:  # a chain a traceback prints in full; a cycle is cut by ``seen``
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            message = str(current)
        except Exception:  # traceback writes "<exception str() failed>" instead
            message = ""
        if message:
            kind = type(current)
            module = "" if kind.__module__ in ("__main__", "builtins") else f"{kind.__module__}."
            yield f"{module}{kind.__qualname__}: {message}"  # as traceback.format_exception_only writes it
        pending += [current.__cause__, current.__context__]


_PEER_TEXT_LOGGERS = "opentelemetry.exporter.otlp"
"""Loggers whose lines quote a peer's text as plain strings: the OTLP exporters' failures quote the collector's
HTTP reason phrase and gRPC status details, which a collector may fill with what it was sent (an API key's
``api_key=...``): redacted as free text, as an exception's message is."""

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
    if isinstance(arg, BaseException):
        return redact_free_text(str(arg))  # it may quote a peer (a close reason)
    return redact_text(str(arg))  # an object whose str() may embed a URL


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
    "JSON_LINE",
    "LIBRARY_LOGGERS",
    "REDACTED_MARK",
    "UVICORN_LOGGERS",
    "WEBSOCKETS_LOGGERS",
    "RedactingFilter",
    "formatted_message",
    "install",
]
