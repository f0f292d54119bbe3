"""Regular expressions from a configuration, matched against what clients send, in linear time.

A pattern in a policy (``matches`` in conditions, ``check-header``'s ``pattern``) meets values a
client chooses: headers, claims, the path. Python's ``re`` backtracks, so a pattern such as
``(a+)+$`` takes exponential time on ``aaaa…!``, and one handshake would hold a worker's event loop
for ever (every connection on it stalls). Patterns are compiled by RE2 instead, as Envoy's
``safe_regex`` does: matching time is linear in the input, whatever the pattern. RE2 has no
backreferences or lookaround; such a pattern is refused at start-up (or by the management API)
with what RE2 could not parse. Other differences from ``re``: ``\\d``, ``\\w`` and ``\\s`` are ASCII,
``$`` matches only at the end (``\\z``; ``\\Z`` is refused), and a repetition is at most ``{1000}``.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2: no type information


class Pattern(Protocol):
    """What the gateway calls on a compiled pattern."""

    def search(self, text: str) -> object | None: ...

    def fullmatch(self, text: str) -> object | None: ...


def compile_regex(pattern: str, *, ignore_case: bool = False) -> Pattern:
    """``pattern`` compiled by RE2.

    Raises:
        ValueError: RE2 cannot compile it (its message says why: a lookaround, a backreference, ...).
    """
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # the problem is raised, not written to standard error
    try:
        compiled: Pattern = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"not a regular expression RE2 accepts (linear-time matching: no lookaround or "
                         f"backreference): {reason}") from None  # fmt: skip
    return compiled


__all__ = ["Pattern", "compile_regex"]
