"""The access log: one line per connection attempt on the ``asgi_ws_gateway.access`` logger, at INFO.

Written when an accepted connection closes, or when a handshake is refused or abandoned. Text lines
follow uvicorn's access log (``client - "WebSocket /path" status ...``); JSON lines are one object
per line. Both carry the trace and span ids of the connection span (or of the handshake span, for a
refusal), so logs join traces; with ``export_logs`` each record is also emitted through the
OpenTelemetry logs SDK, in the span's context. The fields never include a header, a query string,
a token or a key.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.trace import Span

from ..log_redaction import JSON_LINE, REDACTED_MARK
from ..redact import printable, printable_json, redact_text
from .hex_ids import hex_ids
from .lean_spans import LeanSpan
from .names import CLIENT_ADDRESS, CLIENT_PORT, HTTP_ROUTE, HTTP_STATUS, LOG_EVENT_ACCESS, URL_PATH

access_logger = logging.getLogger("asgi_ws_gateway.access")

Fields = dict[str, Any]

_CONNECTION = (
    '%s - "WebSocket %s" 101 %s closed by %s with %s in %.3fs, in %d msg/%d B, out %d msg/%d B, '
    "backend %s, subject %s, trace_id=%s span_id=%s"
)
_REFUSAL = '%s - "WebSocket %s" %s %s %s (%s) in %.3fs, trace_id=%s span_id=%s'


class AccessLog:
    """Formats and writes access-log records; ``otel_logger`` also exports them when given."""

    def __init__(self, fmt: Literal["text", "json"], otel_logger: Logger | None = None) -> None:
        self.json = fmt == "json"
        self.otel_logger = otel_logger

    @property
    def enabled(self) -> bool:
        return self.otel_logger is not None or access_logger.isEnabledFor(logging.INFO)

    @property
    def writes_lines(self) -> bool:
        """Lines go to the ``asgi_ws_gateway.access`` logger and a handler takes them (not only to the
        OpenTelemetry export)."""
        return access_logger.isEnabledFor(logging.INFO) and access_logger.hasHandlers()

    def write(self, fields: Fields, span: Span | None) -> None:
        """Write one record; ``fields`` is the record (see docs/telemetry.md), ``span`` its span."""
        # A lean span's SpanContext read without the method call (the usual span, at every line).
        context = span._context if type(span) is LeanSpan else span.get_span_context() if span is not None else None
        if context is not None and context[5]:  # a SpanContext is (trace id, span id, remote, flags, state, valid)
            # trace.format_trace_id and format_span_id (a valid context's ids fit their 16 and 8 bytes)
            fields["trace_id"], fields["span_id"] = hex_ids(context)
        else:
            fields["trace_id"] = fields["span_id"] = None
        if access_logger.isEnabledFor(logging.INFO):
            extra = {"trace_id": fields["trace_id"], "span_id": fields["span_id"]}
            if self.json:  # each field redacted on its own: a filter would read the line as one text
                _info("%s", (_json_line(fields),), {**extra, REDACTED_MARK: True, JSON_LINE: True})
            else:
                _info(*_text_line(fields), extra)
        if self.otel_logger is not None:
            self._export(fields, span)

    def _export(self, fields: Fields, span: Span | None) -> None:
        assert self.otel_logger is not None
        # Exported records skip the logging handlers' RedactingFilter: redacted here (a token in the path).
        attributes = {
            _SEMCONV.get(k) or f"ws_gateway.access.{k}": redact_text(v) if isinstance(v, str) else v
            for k, v in fields.items()
            if v is not None and k not in _IDS
        }  # the ids are the record's own
        client = attributes.pop(CLIENT_ADDRESS, None)
        if isinstance(client, str) and client != "-":
            if "peer" in fields:  # a trusted proxy reported the client: an address, no port
                attributes[CLIENT_ADDRESS] = client
            else:  # "host:port", as in the text line
                address, _, port = client.rpartition(":")
                attributes[CLIENT_ADDRESS] = address
                if port.isdigit():
                    attributes[CLIENT_PORT] = int(port)
        message, args = _text_line(fields)
        self.otel_logger.emit(
            timestamp=time.time_ns(),
            context=trace.set_span_in_context(span) if span is not None else None,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=redact_text(message % args),
            attributes=attributes,
            event_name=LOG_EVENT_ACCESS,
        )


def _info(msg: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
    """``access_logger.info(msg, *args, extra=extra)`` from :meth:`AccessLog.write`, which checked the level.

    The record is the one ``info`` makes and goes through the logger's filters and handlers alike;
    its caller (file, line, function) is read from the calling frame directly, where ``findCaller``
    walked up the stack past logging's own frames to the same one.
    """
    if logging._srcfile:  # None: the application turned caller lookup off
        caller = sys._getframe(1)
        path, line, function = caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name
    else:
        path, line, function = "(unknown file)", 0, "(unknown function)"
    access_logger.handle(
        access_logger.makeRecord(access_logger.name, logging.INFO, path, line, msg, args, None, function, extra)
    )


_IDS = frozenset({"trace_id", "span_id"})
_SEMCONV = {"client": CLIENT_ADDRESS, "path": URL_PATH, "status": HTTP_STATUS, "route": HTTP_ROUTE}
"""Exported records' fields that have a semantic-conventions name (the rest are ``ws_gateway.access.*``)."""


def _json_line(fields: Fields) -> str:
    record = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **{k: redact_text(v) if isinstance(v, str) else v for k, v in fields.items()},
    }
    # Non-ASCII text stays readable; what would break the line or reorder it is escaped.
    return printable_json(json.dumps(record, separators=(",", ":"), ensure_ascii=False))


def _text_line(fields: Fields) -> tuple[str, tuple[Any, ...]]:
    """The text line's format and its values, escaped (:func:`~asgi_ws_gateway.redact.printable`)."""
    ids = (fields["trace_id"] or "-", fields["span_id"] or "-")
    if fields.get("status") == 101:
        line = _CONNECTION
        values: tuple[Any, ...] = (
            fields["client"], fields["path"], fields["api"], fields["closed_by"], fields["close_code"],
            fields["duration"], fields["messages_in"], fields["bytes_in"], fields["messages_out"],
            fields["bytes_out"], fields["backend"], fields.get("subject") or "-", *ids,
        )  # fmt: skip
    else:
        cause = fields.get("reason") or "-"
        if fields.get("policy"):
            cause = f"{cause}, policy {fields['policy']}"
        line = _REFUSAL
        values = (
            fields["client"], fields["path"], fields.get("status") or "-", fields["api"], fields["outcome"], cause,
            fields["duration"], *ids,
        )  # fmt: skip
    # Only the values the line shows are escaped (not its format, whose quotes delimit the path). Escapes
    # are character by character: when their text put together needs none, none of them does.
    # The ids (the last two) are hex or "-", never escaped: not scanned (48 characters a traced line).
    texts = "".join([value for value in values[:-2] if type(value) is str])
    if printable(texts) == texts:
        return line, values
    return line, tuple(printable(value) if type(value) is str else value for value in values)


__all__ = ["JSON_LINE", "AccessLog", "access_logger"]
