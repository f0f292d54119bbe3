"""uvicorn's log lines as the gateway's WebSocket protocol writes them.

The path without the query string (credentials travel there), redacted as a client's free text;
websockets' own INFO lines demoted to DEBUG (the protocol writes one line per handshake itself);
uvicorn's one line per connection at DEBUG when the gateway writes an access line for it.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote

from .._context import HANDSHAKE
from ..redact import redact_path


class _Quiet(logging.LoggerAdapter[logging.Logger]):
    """websockets' own INFO lines ("connection open", "connection rejected") demoted to DEBUG.

    The protocol logs one line per handshake itself; websockets would add a second one.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG) if level <= logging.INFO else level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


def logged_path(path: str) -> str:
    """A decoded path for a log line: redacted as a client's free text (the filter's redact_text misses
    "/token=..."), then percent-encoded again, as uvicorn writes it (no control character gets in)."""
    return quote(redact_path(path))


class PathOnly(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's ``"WebSocket <path?query>"`` lines without the query string (credentials travel there)."""

    @property
    def level(self) -> int:  # uvicorn reads ``logger.level`` to decide on its TRACE lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith('%s - "WebSocket %s"') and len(args) >= 2:
            args = (args[0], str(args[1]).partition("?")[0], *args[2:])
            if level == logging.INFO and msg in _CONNECTION_LINES and self.logger.isEnabledFor(level):
                level = connection_line_level()
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class _NoParserWarning(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's h11 protocol without its WARNING per request its parser refused: that line names no
    client, and any client can send a flood of bad requests. An INFO line names it instead, with what it
    was told (``HeadDeadline.send_400_response``, for the httptools protocol too)."""

    @property
    def level(self) -> int:  # uvicorn reads ``logger.level`` to decide on its TRACE lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg != PARSER_WARNING or level != logging.WARNING:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


UVICORN_ERROR = logging.getLogger("uvicorn.error")
PARSER_WARNING = "Invalid HTTP request received."
"""uvicorn's line, and its 400's body, for a request its parser refused."""
NO_PARSER_WARNING = _NoParserWarning(UVICORN_ERROR)
ACCEPTED = '%s - "WebSocket %s" [accepted]'
"""uvicorn's line at accept (``websockets_sansio_impl``), which ``_pass_through`` writes for a splice too."""
_CONNECTION_LINES = frozenset({ACCEPTED, '%s - "WebSocket %s" %d', '%s - "WebSocket %s" 403'})
"""uvicorn's one line per connection: accepted, refused with an HTTP response, closed before accept."""


def connection_line_level() -> int:
    """INFO, or DEBUG when the gateway writes an access line for the connection being answered.

    The answer (accept or refusal) is sent from the application's task, in which the gateway's
    handshake is current.
    """
    handshake = HANDSHAKE.get()
    return logging.DEBUG if handshake is not None and handshake.writes_access_line else logging.INFO


QUIET = _Quiet(UVICORN_ERROR)
PATH_ONLY = PathOnly(UVICORN_ERROR)


__all__ = ["ACCEPTED", "PATH_ONLY", "QUIET", "UVICORN_ERROR", "PathOnly", "connection_line_level", "logged_path"]
