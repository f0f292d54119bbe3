"""``run``'s logging configuration: its line formatter writes exactly what uvicorn's writes."""

from __future__ import annotations

import logging
import sys

import pytest
from uvicorn.logging import DefaultFormatter

from asgi_ws_gateway.log_redaction import RedactingFilter, formatted_message
from asgi_ws_gateway.server.logconfig import AccessLineFormatter, LineFormatter, run_log_config
from asgi_ws_gateway.telemetry.access import JSON_LINE

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
FMT = "%(levelprefix)s %(message)s"
LINE_FORMATTER = f"{LineFormatter.__module__}.{LineFormatter.__qualname__}"
ACCESS_FORMATTER = f"{AccessLineFormatter.__module__}.{AccessLineFormatter.__qualname__}"


def _raised() -> tuple[type[BaseException], BaseException, object]:
    try:
        raise OSError("cannot reach ws://up/x")
    except OSError:
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None
    return info[0], info[1], info[2]


def _record(
    level: int, msg: str, args: tuple[object, ...], *, exc: bool = False, stack: bool = False
) -> logging.LogRecord:
    record = logging.LogRecord("uvicorn.error", level, __file__, 7, msg, args, _raised() if exc else None)  # type: ignore[arg-type]
    if stack:
        record.stack_info = "Stack (most recent call last):\n  File x, line 1"
    return record


RECORDS = {
    "plain": (logging.INFO, "started", ()),
    "arguments": (logging.INFO, '%s - "WebSocket %s" [accepted]', ("127.0.0.1:5", "/ws/echo")),
    "a token redacted": (logging.WARNING, "client %s sent %s", ("127.0.0.1:5", f"/x?t={JWT}")),
    "percent, no arguments": (logging.ERROR, "100% of %s", ()),
    "debug": (logging.DEBUG, "%d frames", (3,)),
}


@pytest.mark.parametrize("filtered", [True, False], ids=["through the filter", "no filter"])
@pytest.mark.parametrize("colours", [False, True], ids=["plain", "colours"])
@pytest.mark.parametrize("extra", ["", "exception", "stack"])
@pytest.mark.parametrize("name", list(RECORDS))
def test_lines_are_uvicorns(name: str, extra: str, colours: bool, filtered: bool) -> None:
    level, msg, args = RECORDS[name]
    ours, theirs = (_record(level, msg, args, exc=extra == "exception", stack=extra == "stack") for _ in range(2))
    if filtered:
        RedactingFilter().filter(ours)
        RedactingFilter().filter(theirs)
    expected = DefaultFormatter(FMT, use_colors=colours).format(theirs)
    msg_before, args_before = ours.msg, ours.args
    assert LineFormatter(FMT, use_colors=colours).format(ours) == expected
    assert (ours.msg, ours.args) == (msg_before, args_before)  # other handlers still see the arguments
    assert ours.message == theirs.message  # what logging's format leaves on the record for later handlers
    if filtered:
        assert JWT not in expected


def test_the_filters_text_is_not_used_once_the_record_changed() -> None:
    record = _record(logging.INFO, "user %s", ("alice",))
    RedactingFilter().filter(record)
    assert formatted_message(record) == "user alice"
    record.args = ("bob",)  # a later filter rewrote it
    assert formatted_message(record) == "user bob"
    assert LineFormatter(FMT, use_colors=False).format(record) == "INFO:     user bob"


def test_run_formats_uvicorns_lines_and_text_access_lines_with_the_line_formatter() -> None:
    text, json = run_log_config(access_log="text"), run_log_config(access_log="json")
    assert text["formatters"]["default"]["()"] == json["formatters"]["default"]["()"] == LINE_FORMATTER
    # One formatter for both: each line as its record says (a SIGHUP's new workers may write the other).
    assert text["formatters"]["gateway_access"] == json["formatters"]["gateway_access"]
    assert text["formatters"]["gateway_access"]["()"] == ACCESS_FORMATTER


def test_the_access_formatter_writes_a_json_line_bare_and_a_text_line_as_uvicorn() -> None:
    formatter = AccessLineFormatter(FMT, use_colors=False)
    text = _record(logging.INFO, "%s - closed", ("127.0.0.1:1",))
    assert formatter.format(text) == DefaultFormatter(FMT, use_colors=False).format(text)
    line = _record(logging.INFO, "%s", ('{"status":101}',))
    setattr(line, JSON_LINE, True)
    assert formatter.format(line) == '{"status":101}'  # the bare JSON object: each line parses
