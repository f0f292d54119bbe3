"""The logging configuration ``asgi-ws-gateway run`` gives uvicorn.

uvicorn's own configuration (``uvicorn.error`` to stderr, ``uvicorn.access`` to stdout) plus:

* ``asgi_ws_gateway`` (the gateway's warnings and errors) to stderr, at the ``--log-level``;
* ``asgi_ws_gateway.access``, the gateway's one line per connection, to stdout: a uvicorn-style
  text line, or, for ``json``, the bare JSON object so that each line parses;
* a :class:`~asgi_ws_gateway.redact.RedactingFilter` on every handler, so no query value, credential
  header or JWT reaches the output, whichever logger wrote it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

ACCESS_LOGGER = "asgi_ws_gateway.access"
_REDACT = {"()": "asgi_ws_gateway.redact.RedactingFilter"}


def run_log_config(*, level: str = "info", access_log: str = "text") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` mapping for ``run``.

    Args:
        level: the level of the ``asgi_ws_gateway`` logger (uvicorn sets its own loggers').
        access_log: ``text`` or ``json`` (the access-log lines' format), or ``off``.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": _REDACT}
    config["formatters"]["gateway_access"] = (
        {"format": "%(message)s"}
        if access_log == "json"
        else {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s", "use_colors": None}
    )
    config["handlers"]["gateway_access"] = {
        "formatter": "gateway_access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout",
    }  # fmt: skip
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["loggers"]["asgi_ws_gateway"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    config["loggers"][ACCESS_LOGGER] = (
        {"handlers": [], "level": "WARNING", "propagate": False}
        if access_log == "off"
        # As uvicorn's own access log: shown at info and below, silenced by --log-level warning and above.
        else {"handlers": ["gateway_access"], "level": max(level.upper(), "INFO", key=_rank), "propagate": False}
    )
    return config


def _rank(level: str) -> int:
    return logging.getLevelName(level) if level != "TRACE" else 5


__all__ = ["ACCESS_LOGGER", "run_log_config"]
