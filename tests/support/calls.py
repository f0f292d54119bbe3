"""Which Python functions run: how a test sees that a shortcut is taken (``sys.setprofile``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["python_calls"]


@contextmanager
def python_calls() -> Iterator[list[str]]:
    """The names of the Python functions called inside the block."""
    names: list[str] = []

    def profile(frame: Any, event: str, arg: object) -> None:
        if event == "call":
            names.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        yield names
    finally:
        sys.setprofile(None)
