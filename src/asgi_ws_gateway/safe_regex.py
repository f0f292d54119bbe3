"""Regular expressions from a configuration, matched against what clients send, in linear time.

A pattern in a policy (``matches`` in conditions, ``check-header``'s ``pattern``) meets values a
client chooses: headers, claims, the path. Python's ``re`` backtracks, so a pattern such as
``(a+)+$`` takes exponential time on ``aaaa…!``, and one handshake would hold a worker's event loop
for ever (every connection on it stalls). Patterns are compiled by RE2 instead, as Envoy's
``safe_regex`` does: matching time is linear in the input, whatever the pattern. RE2 has no
backreferences or lookaround; such a pattern is refused at start-up (or by the management API)
with what RE2 could not parse. Other differences from ``re``: ``\\d``, ``\\w`` and ``\\s`` are ASCII,
``$`` matches only at the end (``\\z``; ``\\Z`` is refused), a repetition is at most ``{1000}``, and
a pattern compiles to at most :data:`MAX_PROGRAM_SIZE` instructions.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2: no type information

MAX_PROGRAM_SIZE = 1000
"""RE2 instructions a pattern may compile to. Matching is linear in the text, times a factor that grows
with the program where RE2's DFA cannot cache its states: on an 8 KiB header ``(a|b|c){1,1000}z``
(4,004 instructions) took 400 ms and ``(?s)a.{1000}x`` (7,006) 103 ms — a hundred such conditions
held a handshake for 7.6 s; within the bound the worst found, ``(?s)a.{140}x`` (986), takes 43 ms,
and the patterns policies use (``^[A-Za-z0-9_-]{1,64}$``: 321; ``[a-z]{1,255}``: 513) well under 1 ms."""


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
    size = compiled.programsize  # type: ignore[attr-defined]  # RE2's own measure, as Envoy's max_program_size
    if size > MAX_PROGRAM_SIZE:
        raise ValueError(f"too large a regular expression: RE2 compiles it to {size:,} instructions, more than "
                         f"{MAX_PROGRAM_SIZE:,} (a counted repetition such as .{{200}} or (a|b){{1,300}})")  # fmt: skip
    return compiled


__all__ = ["MAX_PROGRAM_SIZE", "Pattern", "compile_regex"]
