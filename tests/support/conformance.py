"""Run the Autobahn fuzzingclient cases (via ``kosoku``) against a server and summarise the verdicts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import kosoku

# The writer the ``kosoku`` CLI uses for ``-o DIR``; the Python API only returns results. Private, but
# kosoku is pinned (==0.1.0) in the dev extras.
from kosoku._report import write_reports

__all__ = ["CLOSE_FAILURES", "VERDICTS", "AutobahnReport", "run_autobahn"]

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
        The verdict counts and failed case ids. A failed case is reported, not raised.
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
    for cases in index.values():  # keyed by agent (the server's ``Server`` header)
        for case_id, entry in cases.items():
            behavior, close = str(entry["behavior"]), str(entry["behaviorClose"])
            counts[behavior] += 1
            if behavior in ("FAILED", "ERROR") or close in CLOSE_FAILURES:
                failed.append(case_id)
    return AutobahnReport(counts=dict(counts), failed=sorted(failed, key=_case_key), outdir=outdir)


def _case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]
