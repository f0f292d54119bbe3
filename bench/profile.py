"""Profile a path's proxy under the bench's load with py-spy, and print where its time goes.

``python -m bench.profile [--path gateway] [--scenario echo-64B] [--seconds 8]`` starts the
upstream and the proxy as the bench does, attaches ``py-spy record`` to the proxy for the
measurement window, writes the collapsed stacks (``--out``, for flame graph tools), and prints the
functions with the most samples, by self time and by inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import StartContext, by_name, url
from .runner import FULL, ROOT, log, prepare_environment, upstream_server
from .scenarios import ECHO_16K, ECHO_64, HANDSHAKE, LATENCY, measure
from .system import PROXY_CPUS

SCENARIOS = {s.name: s for s in (ECHO_64, ECHO_16K, LATENCY, HANDSHAKE)}


def summarise(collapsed: Path, top: int) -> str:
    """Top functions by self and inclusive samples from py-spy's ``raw`` (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--path", default="gateway")
    parser.add_argument("--scenario", default="echo-64B", choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "profile.txt")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    prepare_environment()
    (spec,) = by_name([args.path])
    if spec.start is None:
        raise SystemExit("direct has no proxy to profile")
    timing = dataclasses.replace(FULL.timing, warmup=1.0, duration=args.seconds + 2.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--duration", str(int(args.seconds)), "--rate", str(args.rate), "--format", "raw",
               "--output", str(args.out), "--nonblocking", "--function"]  # fmt: skip
    if args.native:
        command.append("--native")
    with (
        tempfile.TemporaryDirectory(prefix="ws-bench-prof-") as tmp,
        upstream_server(Path(tmp)) as upstream,
        spec.start(StartContext(upstream.port, Path(tmp), PROXY_CPUS)) as proxy,
    ):
        recorder = subprocess.Popen([*command, "--pid", str(proxy.pid)], stdout=subprocess.DEVNULL)
        metrics, warnings = measure(SCENARIOS[args.scenario], url(proxy.port), timing, proxy=proxy, upstream=upstream,
                                    headers=spec.headers, payload=spec.payload, bearer=spec.bearer)  # fmt: skip
        recorder.wait(60)
    log(f"{args.path} {args.scenario}: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if v is not None))
    for warning in warnings:
        log(f"warning: {warning}")
    print(summarise(args.out, args.top))


if __name__ == "__main__":
    main()
