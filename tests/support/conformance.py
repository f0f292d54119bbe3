"""Run the Autobahn fuzzingclient cases (via ``kosoku``) against a server and summarise the verdicts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kosoku

# The writer the ``kosoku`` CLI uses for ``-o DIR``; the Python API only returns results. Private, but
# kosoku is pinned (==0.1.0) in the dev extras.
from kosoku._report import write_reports

__all__ = [
    "CLOSE_FAILURES", "VERDICTS", "AutobahnReport", "missed_its_deadline", "run_autobahn", "run_autobahn_overlapped",
]  # fmt: skip

VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED")
"""Autobahn's ``behavior`` labels (kosoku adds ``ERROR`` for a case it could not run)."""

CLOSE_FAILURES = frozenset({"FAILED", "FAILED BY CLIENT", "WRONG CODE", "UNCLEAN"})
"""``behaviorClose`` labels that fail a case even when its ``behavior`` is OK."""


@dataclass(frozen=True)
class AutobahnReport:
    """Summary of one run, read back from the ``index.json`` it wrote."""

    counts: dict[str, int]
    """Cases per ``behavior`` verdict; every label in ``VERDICTS`` is present, zero or not."""
    failed: list[str]
    """Ids of cases whose ``behavior`` is FAILED/ERROR or whose ``behaviorClose`` is in ``CLOSE_FAILURES``."""
    late: list[str]
    """Those of ``failed`` whose only fault is time: see :func:`missed_its_deadline`."""
    outdir: Path
    """Where ``index.json``, ``index.html`` and the per-case reports are."""

    @property
    def total(self) -> int:
        """How many cases ran."""
        return sum(self.counts.values())


async def run_autobahn(
    url: str,
    include: Sequence[str],
    exclude: Sequence[str],
    outdir: Path,
    *,
    concurrency: int = 1,
) -> AutobahnReport:
    """Run the Autobahn cases selected by ``include``/``exclude`` against the server at ``url``.

    Runs on the caller's event loop without blocking it, so the server under test may share it.
    Cases 1-10 take about 20 s against uvicorn; 12-13 (permessage-deflate) take minutes.

    Args:
        url: ``ws://`` URL of the server under test.
        include: Case ids or ``*`` globs (``"1.1.1"``, ``"9.*"``); empty selects the whole suite.
        exclude: Case ids or globs removed from the selection.
        outdir: Directory for the Autobahn-format report (created if missing).
        concurrency: Cases run in parallel. Keep 1 for cases 9.x, which are timing-sensitive.

    Returns:
        The verdict counts, the failed case ids and which of them only missed a deadline. A failed
        case is reported, not raised.
    """
    try:
        results = await kosoku.run_fuzzingclient(
            url, list(include) or None, list(exclude) or None, concurrency=concurrency
        )
    except kosoku.FailureError as failure:  # carries every result, not only the failed ones
        results = failure.results
    write_reports(results, str(outdir))
    index: dict[str, dict[str, dict[str, object]]] = json.loads((outdir / "index.json").read_text())
    counts: Counter[str] = Counter(dict.fromkeys(VERDICTS, 0))
    failed: list[str] = []
    late: list[str] = []
    for cases in index.values():  # keyed by agent (the server's ``Server`` header)
        for case_id, entry in cases.items():
            behavior, close = str(entry["behavior"]), str(entry["behaviorClose"])
            counts[behavior] += 1
            if behavior in ("FAILED", "ERROR") or close in CLOSE_FAILURES:
                failed.append(case_id)
                if missed_its_deadline(json.loads((outdir / str(entry["reportfile"])).read_text())):
                    late.append(case_id)
    return AutobahnReport(
        counts=dict(counts), failed=sorted(failed, key=_case_key), late=sorted(late, key=_case_key), outdir=outdir
    )


_OWN_TIMERS = frozenset({"KLE", "TIE"})
"""Wire-log entries of the client's timers firing: its kill timer, and a case's own timed wait."""


def missed_its_deadline(case: dict[str, Any]) -> bool:
    """Whether a failed case's report (``<agent>_case_<id>.json``) says it failed only for time.

    Most cases give the server a deadline: ``killAfter`` drops the connection 1 s after the client sent
    its frames (0.5 s in the UTF-8 cases, 6.5-6.22), and whatever the server had not done by then (its
    echo, its close frame, the TCP close) fails the case. The report's wire log then ends the client's own way
    (``KLE``: the kill timer fired; ``TIE``: a case's own wait, as 5.19/5.20's 1 s after their last fragment,
    ended before it closes). Such a case failed for time, not conformance, when nothing that came
    contradicts the expectation: the messages received are the start of an expected outcome, and a close
    code received is an expected one. A wrong message, a wrong code, or a close without the timer (a
    connection dropped by the server) is a conformance fault, however the load.
    """
    if not any(entry[0] in _OWN_TIMERS for entry in case["wirelog"]):
        return False
    received, outcomes = case["received"], case["expected"].values()
    if not any(received == expected[: len(received)] for expected in outcomes):
        return False
    code, codes = case["remoteCloseCode"], case["expectedClose"]["closeCode"]
    return code is None or code in codes


async def run_autobahn_overlapped(
    url: str, include: Sequence[str], outdir: Path, *, concurrency: int = 16
) -> AutobahnReport:
    """:func:`run_autobahn` for ``include`` with the cases outside 9.x ``concurrency`` at a time.

    Most of a sequential run of cases 1-10 is the cases' own pauses (6.4.x wait 2 s each, 5.19/5.20
    1 s): overlapping them cuts ~11 s to ~2.5 s, with the same verdicts case by case (measured under
    both uvicorn implementations). The 9.x cases measure throughput and run one at a time, beside the
    others: those mostly wait (~0.5 s of CPU in their ~2.5 s), so their run no longer adds its pauses to
    the 9.x run's (3-12 s of CPU; each 9.x case has 10 s or more for well under one).

    Args:
        url: ``ws://`` URL of the server under test.
        include: Globs such as ``"1.*"``; a ``"9..."`` entry runs sequentially after the rest.
        outdir: The reports go to ``outdir/overlapped`` and ``outdir/sequential``.
        concurrency: Cases outside 9.x run in parallel.

    Returns:
        Both runs' verdict counts added up and their failed (and late) case ids, in case order.
    """
    sequential = [case for case in include if case.startswith("9.")]
    overlapped = [case for case in include if not case.startswith("9.")]
    runs = []
    if overlapped:
        runs.append(run_autobahn(url, overlapped, [], outdir / "overlapped", concurrency=concurrency))
    if sequential:
        runs.append(run_autobahn(url, sequential, [], outdir / "sequential"))
    reports = await asyncio.gather(*runs)
    counts: Counter[str] = Counter(dict.fromkeys(VERDICTS, 0))
    for report in reports:
        counts.update(report.counts)
    failed = sorted((case for report in reports for case in report.failed), key=_case_key)
    late = sorted((case for report in reports for case in report.late), key=_case_key)
    return AutobahnReport(counts=dict(counts), failed=failed, late=late, outdir=outdir)


def _case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]
