"""The JSON access log: one record is one line under any line-splitting reader, nothing raw that
breaks or reorders a line, every value the same through ``json.loads``."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import log_redaction
from asgi_ws_gateway.redact import redact_text
from asgi_ws_gateway.telemetry.access import AccessLog

# What a reader may split a line at (str.splitlines: U+0085, U+2028/9, FS/GS/RS...) or what hides or
# reorders text in a terminal (C1 controls, bidi overrides and isolates).
_HOSTILE = "\n\r\x0b\x0c\x1c\x1d\x1e\x7f\x85\x9b\u2028\u2029\u202a\u202e\u2066\u2069"


def _fields(path: str, reason: str) -> dict[str, object]:
    return {"client": "10.0.0.1:5", "path": path, "api": "chat", "route": "/ws/{room}", "status": 101,
            "closed_by": "client", "close_code": 4000, "close_reason": reason, "duration": 0.1,
            "messages_in": 1, "bytes_in": 2, "messages_out": 1, "bytes_out": 2, "backend": "ws://up/x",
            "subject": None}  # fmt: skip


def _line(caplog: pytest.LogCaptureFixture, path: str, reason: str) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="asgi_ws_gateway.access"):
        AccessLog("json").write(_fields(path, reason), None)
    (record,) = caplog.records
    return record.getMessage()


@pytest.mark.parametrize("char", list(_HOSTILE))
def test_a_json_record_is_one_line_whatever_the_client_put_in_it(caplog: pytest.LogCaptureFixture, char: str) -> None:
    """The attack's six paths and close reasons: each record one line, the character escaped."""
    path, reason = f'/ws/room/a{char}{{"forged":1}}', f'r{char}{{"forged":true}}'
    line = _line(caplog, path, reason)
    assert line.splitlines() == [line] and char not in line
    record = json.loads(line)
    assert (record["path"], record["close_reason"]) == (path, reason)


@given(path=st.text(), reason=st.text())
def test_any_text_round_trips_on_one_line(path: str, reason: str) -> None:
    """Any path and reason, through the logger's RedactingFilter: one line, valid JSON, no raw character
    from the hostile set, the values back as redacted (a ``?``, ``#`` or quote ends nothing early)."""
    log_redaction.install()
    handler = _Collect()
    logger = logging.getLogger("asgi_ws_gateway.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        AccessLog("json").write(_fields(path, reason), None)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    (line,) = handler.lines
    assert line.splitlines() == [line] and not set(line) & set(_HOSTILE)
    record = json.loads(line)
    assert (record["path"], record["close_reason"]) == (redact_text(path), redact_text(reason))


def test_readable_text_stays_readable(caplog: pytest.LogCaptureFixture) -> None:
    """Non-ASCII that breaks nothing is written as itself, not escaped."""
    assert '"path":"/ws/café/東京"' in _line(caplog, "/ws/café/東京", "")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
