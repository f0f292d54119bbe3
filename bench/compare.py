"""A/B of the gateway: this checkout's ``src`` against another git revision's, interleaved.

``python -m bench.compare --against REV [--scenarios echo-64B handshake] [--rounds 5]`` exports
``src/`` of ``REV`` to a temporary directory, serves both trees under identical uvicorn processes
(or, with ``--run`` / ``--run-policies``, as the ``gateway-run`` / ``gateway-run+policies`` paths),
runs the chosen scenarios round by round (alternating which goes first) and prints medians with
min-max and the ratio ``this / REV``. Nothing is written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .aggregate import build
from .paths import GATEWAY, PathSpec, run_path, uvicorn_path
from .report import fmt
from .runner import FULL, ROOT, Samples, log, prepare_environment, run_rounds, upstream_server
from .system import machine_info

METRICS = ("proxy_cpu_us_per_message", "proxy_cpu_ms_per_handshake", "messages_per_s", "handshakes_per_s",
           "rtt_p50_us", "rtt_p99_us")  # fmt: skip


def export_src(revision: str, into: Path) -> Path:
    """Extract ``src/`` of ``revision`` under ``into``; return the ``src`` directory."""
    archive = into / "src.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), revision, "src"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--against", required=True, help="git revision to compare with (e.g. main, HEAD~1)")
    parser.add_argument("--scenarios", nargs="+", default=["echo-64B", "echo-16KiB", "handshake"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--factory", default="bench.apps:gateway_app", help="app factory both trees serve")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--run", action="store_true", help="serve both as `asgi-ws-gateway run` (gateway-run)")
    run.add_argument("--run-policies", action="store_true", help="both as gateway-run+policies (needs Redis)")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    args = parser.parse_args(argv)
    prepare_environment()
    settings = dataclasses.replace(
        FULL,
        rounds=args.rounds,
        scenarios=tuple(args.scenarios),
        timing=dataclasses.replace(FULL.timing, duration=args.duration),
    )
    with tempfile.TemporaryDirectory(prefix="ws-bench-ab-") as tmp:
        other_src = export_src(args.against, Path(tmp))
        other_env = {"PYTHONPATH": f"{other_src}:{ROOT}"}
        this: PathSpec
        if args.run or args.run_policies:
            this = run_path("this", policies=args.run_policies)
            other = run_path(args.against, policies=args.run_policies, env=other_env)
        else:
            this = uvicorn_path("this", args.factory) if args.factory != "bench.apps:gateway_app" else GATEWAY
            this = dataclasses.replace(this, name="this")
            other = uvicorn_path(args.against, args.factory, env=other_env)
        if why := this.unavailable():
            raise SystemExit(why)
        samples: Samples = {name: {} for name in settings.scenarios}
        with upstream_server(Path(tmp)) as upstream:
            run_rounds([this, other], settings, upstream, Path(tmp), samples)
    results = build(samples, mode="compare", settings=dataclasses.asdict(settings), machine=machine_info(),
                    paths={"this": {}, args.against: {}}, started="", seconds=0.0)  # fmt: skip
    for scenario, data in results["scenarios"].items():
        print(f"\n{scenario}")
        for metric in METRICS:
            a, b = data["summary"].get("this", {}).get(metric), data["summary"].get(args.against, {}).get(metric)
            if a is None or b is None:
                continue
            print(f"  {metric:28} this {fmt(a['median'], 1):>10} ({fmt(a['min'], 1)}–{fmt(a['max'], 1)})"  # noqa: RUF001
                  f"   {args.against} {fmt(b['median'], 1):>10} ({fmt(b['min'], 1)}–{fmt(b['max'], 1)})"  # noqa: RUF001
                  f"   ratio {a['median'] / b['median']:.3f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    log("done")


if __name__ == "__main__":
    main()
