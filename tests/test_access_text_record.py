"""The text access line's record: the one ``Logger.info`` made, through the logger's filters and the
operator's handlers, with its caller named, and the same line as before."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from asgi_ws_gateway.log_redaction import RedactingFilter
from asgi_ws_gateway.redact import printable
from asgi_ws_gateway.server.logconfig import LineFormatter
from asgi_ws_gateway.telemetry import access
from asgi_ws_gateway.telemetry.access import AccessLog, access_logger

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def _fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "client": "10.0.0.1:5", "path": "/ws/a", "api": "chat", "route": "/ws/{room}", "status": 101,
        "closed_by": "client", "close_code": 1000, "close_reason": "", "duration": 0.1234,
        "messages_in": 1, "bytes_in": 2, "messages_out": 3, "bytes_out": 4, "backend": "ws://up/x", "subject": None,
    }  # fmt: skip
    fields.update(changes)
    return fields


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def kept() -> Iterator[_Keep]:
    """An operator's handler (uvicorn's line format) on the access logger, its filter as ``run`` puts it."""
    handler = _Keep()
    handler.setFormatter(LineFormatter("%(levelprefix)s %(message)s", use_colors=False))
    handler.addFilter(RedactingFilter())
    level, propagate = access_logger.level, access_logger.propagate
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
    try:
        yield handler
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
        access_logger.propagate = propagate


def test_the_record_names_its_caller_as_findcaller_would(kept: _Keep) -> None:
    AccessLog("text").write(_fields(), None)
    (record,) = kept.records
    assert (record.pathname, record.funcName, record.module) == (access.__file__, "write", "access")
    assert record.levelno == logging.INFO and record.name == "asgi_ws_gateway.access"
    assert record.lineno > AccessLog.write.__code__.co_firstlineno  # a line of write's own
    assert record.trace_id is None and record.span_id is None  # type: ignore[attr-defined]  # the extra fields


def test_the_caller_is_unknown_when_the_application_turned_the_lookup_off(
    kept: _Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "_srcfile", None)
    AccessLog("text").write(_fields(), None)
    (record,) = kept.records
    assert (record.pathname, record.lineno, record.funcName) == ("(unknown file)", 0, "(unknown function)")


def test_the_line_is_the_one_info_writes(kept: _Keep) -> None:
    """The same message, arguments and text as ``access_logger.info(*line)``."""
    AccessLog("text").write(_fields(), None)
    message, args = access._text_line({**_fields(), "trace_id": None, "span_id": None})
    access_logger.info(message, *args, extra={"trace_id": None, "span_id": None})
    ours, infos = kept.records
    assert (ours.msg, ours.args) == (infos.msg, infos.args)
    assert (
        kept.lines[0]
        == kept.lines[1]
        == (
            'INFO:     10.0.0.1:5 - "WebSocket /ws/a" 101 chat closed by client with 1000 in 0.123s, in 1 msg/2 B, '
            "out 3 msg/4 B, backend ws://up/x, subject -, trace_id=- span_id=-"
        )
    )


def test_the_loggers_filters_and_a_disabled_logger_are_obeyed(kept: _Keep) -> None:
    dropping = logging.Filter("someone.else")
    access_logger.addFilter(dropping)
    try:
        AccessLog("text").write(_fields(), None)
    finally:
        access_logger.removeFilter(dropping)
    access_logger.disabled = True
    try:
        AccessLog("text").write(_fields(), None)
    finally:
        access_logger.disabled = False
    assert kept.records == []


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"path": '/ws/a"b'}, "/ws/a\\x22b"),  # one value with something to escape: each is escaped on its own
        ({"subject": "line\nbreak", "path": "/ws/\\"}, '"WebSocket /ws/\\\\" 101'),
        ({"path": f"/ws/{JWT}"}, "REDACTED"),  # and the line still goes through the redaction
    ],
)
def test_values_are_escaped_and_redacted_as_before(kept: _Keep, changes: dict[str, object], shown: str) -> None:
    AccessLog("text").write(_fields(**changes), None)
    (line,) = kept.lines
    assert shown in line and "\n" not in line and JWT not in line
    escaped = {k: printable(v) if isinstance(v, str) else v for k, v in _fields(**changes).items()}
    names = ("client", "path", "api", "closed_by", "close_code", "duration", "messages_in", "bytes_in",
             "messages_out", "bytes_out", "backend")  # fmt: skip
    args = (*(escaped[name] for name in names), escaped["subject"] or "-", "-", "-")
    before = logging.LogRecord(access_logger.name, logging.INFO, __file__, 1, access._CONNECTION, args, None)
    RedactingFilter().filter(before)
    assert line == kept.format(before)  # each value escaped on its own, as the line was written before
