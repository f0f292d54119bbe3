"""The logging configuration ``asgi-ws-gateway run`` gives uvicorn.

uvicorn's own configuration (``uvicorn.error`` to stderr, ``uvicorn.access`` to stdout) plus:

* ``asgi_ws_gateway`` (the gateway's warnings and errors) to stderr, at the ``--log-level``;
* ``asgi_ws_gateway.access``, the gateway's one line per connection, to stdout: a uvicorn-style
  text line, or, for ``json``, the bare JSON object so that each line parses. Each line as it was
  written, not as the format at start said: a worker a SIGHUP started may write the other format;
* every other library's warnings and errors (the root logger) to stderr, formatted as uvicorn's;
* a :class:`~asgi_ws_gateway.log_redaction.RedactingFilter` on every handler, so no query value, credential
  header or JWT reaches the output, whichever logger wrote it;
* every handler a :class:`~.log_writer.UnblockingStreamHandler`: a destination that takes nothing (a full
  pipe) drops lines, counted, rather than stopping the process at its next line.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

from ..log_redaction import JSON_LINE, formatted_message

ACCESS_LOGGER = "asgi_ws_gateway.access"
_REDACT = {"()": "asgi_ws_gateway.log_redaction.RedactingFilter"}
_LINES = "asgi_ws_gateway.server.logconfig.LineFormatter"
_ACCESS_LINES = "asgi_ws_gateway.server.logconfig.AccessLineFormatter"
_HANDLER = "asgi_ws_gateway.server.log_writer.UnblockingStreamHandler"
_PLAIN_FORMAT = "%(levelprefix)s %(message)s"  # uvicorn's default format, and the text access lines'


class LineFormatter(DefaultFormatter):
    """uvicorn's ``DefaultFormatter`` (``INFO:     message``), writing the same lines for less.

    uvicorn's copies every record to add its ``levelprefix``; without colours this one sets it on the
    record itself, and it reuses the message the :class:`~asgi_ws_gateway.log_redaction.RedactingFilter`
    formatted instead of formatting it again: with the access line, two lines a connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own format without colours: the line is the prefix and the message, put together
        # here rather than through logging's format steps (a third of an access line's formatting).
        style = self._style
        self._plain = (
            not self.use_colors
            and type(style) is logging.PercentStyle
            and style._fmt == _PLAIN_FORMAT
            and not style._defaults  # type: ignore[attr-defined]
        )

    def format(self, record: logging.LogRecord) -> str:
        if self._plain and not (record.exc_info or record.exc_text or record.stack_info):
            # What logging.Formatter.format writes and leaves on the record for this format.
            record.message = message = formatted_message(record)
            record.levelprefix = prefix = f"{record.levelname}:{' ' * (8 - len(record.levelname))}"
            return f"{prefix} {message}"
        msg, args = record.msg, record.args
        record.msg, record.args = formatted_message(record), ()  # getMessage() is then the text as it is
        try:
            return super().format(record)
        finally:
            record.msg, record.args = msg, args

    def formatMessage(self, record: logging.LogRecord) -> str:
        if self.use_colors:
            return super().formatMessage(record)
        record.levelprefix = f"{record.levelname}:{' ' * (8 - len(record.levelname))}"
        return self._style.format(record)


class AccessLineFormatter(LineFormatter):
    """The access lines' formatter: a JSON line bare (one object a line, to parse), a text line as
    :class:`LineFormatter` writes it (``INFO:     ...``), whichever format the configuration names now.

    The handler is configured once per process, but ``--workers`` N's workers are replaced on SIGHUP and
    read the file again: one formatter per format, chosen at start, put ``INFO:     `` before each JSON
    object after a reload to ``json``, and took it from each text line after one to ``text``.
    """

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, JSON_LINE, False):
            record.message = message = formatted_message(record)
            return message
        return super().format(record)


def run_log_config(*, level: str = "info", access_log: str = "text") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` mapping for ``run``.

    Args:
        level: the level of the ``asgi_ws_gateway`` logger (uvicorn sets its own loggers').
        access_log: ``off`` silences the access log; ``text`` or ``json`` (the format at start) give the
            same handler, which writes each line in the format its record was made in.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": _REDACT}
    config["formatters"]["default"]["()"] = _LINES
    # One formatter for both formats: each line is written as its record says (a reload may change it).
    config["formatters"]["gateway_access"] = {"()": _ACCESS_LINES, "fmt": _PLAIN_FORMAT, "use_colors": None}
    config["handlers"]["gateway_access"] = {
        "formatter": "gateway_access", "class": _HANDLER, "stream": "ext://sys.stdout",
    }  # fmt: skip
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
        handler["class"] = _HANDLER
    config["loggers"]["asgi_ws_gateway"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    config["loggers"][ACCESS_LOGGER] = (
        {"handlers": [], "level": "WARNING", "propagate": False}
        if access_log == "off"
        # As uvicorn's own access log: shown at info and below, silenced by --log-level warning and above.
        else {"handlers": ["gateway_access"], "level": max(level.upper(), "INFO", key=_rank), "propagate": False}
    )
    # Every other library's lines (the OpenTelemetry SDK and exporters, urllib3, grpc, redis): without a
    # root handler they went to Python's last-resort handler, unformatted and past every filter, with
    # the collector's ?api_key= from its endpoint in each "Transient error" line.
    config["root"] = {"handlers": ["default"], "level": max(level.upper(), "WARNING", key=_rank)}
    return config


def _rank(level: str) -> int:
    return logging.getLevelName(level) if level != "TRACE" else 5


__all__ = ["ACCESS_LOGGER", "AccessLineFormatter", "LineFormatter", "run_log_config"]
