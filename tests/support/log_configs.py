"""Logging configurations tests hand to ``run --log-config``."""

from __future__ import annotations

from typing import Any

DEBUG_TO_STDERR: dict[str, Any] = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}},
    "root": {"level": "DEBUG", "handlers": ["err"]},
}  # fmt: skip
"""A user's ``--log-config``: every library's lines at DEBUG, to stderr, as ``logger LEVEL message``."""
