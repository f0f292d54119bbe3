"""Regular expressions from a configuration, matched against what clients send, in linear time.

A pattern in a policy (``matches`` in conditions, ``check-header``'s ``pattern``) meets values a
client chooses: headers, claims, the path. Python's ``re`` backtracks, so a pattern such as
``(a+)+$`` takes exponential time on ``aaaa…!``, and one handshake would hold a worker's event loop
for ever (every connection on it stalls). Patterns are compiled by RE2 instead, as Envoy's
``safe_regex`` does: matching time is linear in the input, whatever the pattern. RE2 has no
backreferences or lookaround; such a pattern is refused at start-up (or by the management API)
with what RE2 could not parse. Other differences from ``re``: ``\\d``, ``\\w`` and ``\\s`` are ASCII,
``$`` matches only at the end (``\\z``; ``\\Z`` is refused), a repetition is at most ``{1000}``, and
a pattern compiles to at most :data:`MAX_PROGRAM_SIZE` instructions (and the patterns one API's
handshake may run, to :data:`MAX_HANDSHAKE_PROGRAM_SIZE` together: :func:`regex_weight`).
"""

from __future__ import annotations

import functools
from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2: no type information

MAX_PROGRAM_SIZE = 1000
"""RE2 instructions a pattern may compile to. Matching is linear in the text, times a factor that grows
with the program where RE2's DFA cannot cache its states: on an 8 KiB header ``(a|b|c){1,1000}z``
(4,004 instructions) took 400 ms and ``(?s)a.{1000}x`` (7,006) 103 ms — a hundred such conditions
held a handshake for 7.6 s; within the bound the worst found, ``(?s)a.{140}x`` (986), takes 43 ms,
and the patterns policies use (``^[A-Za-z0-9_-]{1,64}$``: 321; ``[a-z]{1,255}``: 513) well under 1 ms."""


MAX_HANDSHAKE_PROGRAM_SIZE = 4000
"""The default of what the patterns one API's handshake may run weigh together (:func:`regex_weight`: a
pattern's RE2 instructions, :data:`MIN_REGEX_WEIGHT` at least; ``handshake_limits.max_regex_weight``).
Each is matched against a value of the request (8 KiB a header line under ``run``); where RE2's DFA
cannot cache its states that costs ~8 ns per instruction and byte. Filled with the worst patterns found
at 2,000, a handshake with a fresh 8 KiB header took 35 ms (two ``(?s)a.{140}x``) to 130 ms (eighteen
``a[ab]{100}x``), so ~260 ms at this default; 1,024 conditions ``(?s)a.{140}x`` had taken 32.7 s. Twenty
ordinary patterns (``^10\\.``: 64, a UUID: 70, one ``{1,64}``: 321) weigh ~1,700 and took 0.14 ms."""
MIN_REGEX_WEIGHT = 64
"""What a pattern weighs at least: a small one whose DFA states still multiply (``a[ab]{30}x``, 36
instructions) took up to a few milliseconds on an 8 KiB header, as patterns several times larger do."""


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


@functools.lru_cache(maxsize=4096)  # a change through the management API weighs every API's patterns again
def regex_weight(pattern: str, *, ignore_case: bool = False) -> int:
    """What ``pattern`` weighs toward :data:`MAX_HANDSHAKE_PROGRAM_SIZE`: its RE2 program size, at
    least :data:`MIN_REGEX_WEIGHT`; 0 when RE2 refuses it (that is a problem of its own)."""
    try:
        size: int = compile_regex(pattern, ignore_case=ignore_case).programsize  # type: ignore[attr-defined]
    except ValueError:
        return 0
    return max(size, MIN_REGEX_WEIGHT)


__all__ = [
    "MAX_HANDSHAKE_PROGRAM_SIZE",
    "MAX_PROGRAM_SIZE",
    "MIN_REGEX_WEIGHT",
    "Pattern",
    "compile_regex",
    "regex_weight",
]
