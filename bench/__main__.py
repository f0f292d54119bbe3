"""``python -m bench [--quick [--smoke]] [--paths ...] [--scenarios ...] [--out DIR] [--docs FILE]``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .paths import by_name
from .runner import FULL, QUICK, ROOT, SMOKE, SMOKE_PARALLEL, log, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the gateway against its peers.")
    parser.add_argument("--quick", action="store_true", help="smoke run: one short round, small idle levels")
    parser.add_argument("--smoke", action="store_true", help="with --quick: the test suite's run, shorter windows, "
                        "20 idle connections, 3 paths at a time (every path and scenario still measured)")  # fmt: skip
    parser.add_argument("--paths", nargs="+", help="only these paths (default: all)")
    parser.add_argument("--scenarios", nargs="+", help="only these scenarios (default: all)")
    parser.add_argument("--rounds", type=int, help="rounds of the interleaved scenarios")
    parser.add_argument("--duration", type=float, help="seconds of each measurement window")
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results, or reports/bench-quick)")
    parser.add_argument("--docs", type=Path, help="markdown file whose bench block is rewritten "
                        "(default: docs/performance.md for a full run of every path, none otherwise)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke and not args.quick:
        parser.error("--smoke is a kind of --quick run: give both")
    settings = (SMOKE if args.smoke else QUICK) if args.quick else FULL
    if args.scenarios:
        unknown = set(args.scenarios) - set(FULL.scenarios)
        if unknown:
            parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(FULL.scenarios)}")
        settings = dataclasses.replace(settings, scenarios=tuple(args.scenarios))
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    if args.duration:
        settings = dataclasses.replace(settings, timing=dataclasses.replace(settings.timing, duration=args.duration))
    complete = not args.quick and not args.paths and not args.scenarios
    out = args.out or (ROOT / "bench" / "results" if complete else ROOT / "reports" / "bench-quick")
    docs = args.docs or (ROOT / "docs" / "performance.md" if complete else None)
    results = run(by_name(args.paths), settings, out_dir=out, docs=docs, parallel=SMOKE_PARALLEL if args.smoke else 1)
    log(f"done in {results['seconds']:.0f} s: {out / 'results.json'}" + (f", {docs}" if docs else ""))


if __name__ == "__main__":
    main()
