"""Whether the optional C modules may be used: ``ASGI_WS_GATEWAY_PURE_PYTHON``, read where each is loaded.

``_span_wire`` (spans started, ended and encoded: :mod:`.otlp_wire` loads it) and ``_metric_add`` (duration
histograms and totals recorded: :mod:`.metric_totals`) are built at install when a compiler is there
(``hatch_build.py``); each accelerates Python code that stays the reference, and a yes here leaves both unused.
A value that is neither a yes nor a no is a start-up problem (:func:`.environment.pure_python_problems`).
"""

from __future__ import annotations

import os

from .environment import PURE_PYTHON_VARIABLE, PURE_PYTHON_YES


def pure_python() -> bool:
    """The operator turned the optional C modules off (:data:`.environment.PURE_PYTHON_VARIABLE` a yes)."""
    return os.environ.get(PURE_PYTHON_VARIABLE, "").strip().lower() in PURE_PYTHON_YES


__all__ = ["pure_python"]
