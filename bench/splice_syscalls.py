"""System calls per echo (or per handshake) of each proxy, under the bench's load: what the load does not move.

``python -m bench.splice_syscalls [--paths nginx gateway-run] [--scenarios echo-64B echo-16KiB handshake]
[--seconds 3] [--tracer stat|perf|strace] [--baseline-src DIR]`` starts the upstream and each proxy as the
bench does (the proxy pinned to its core, the generator and upstream on the other), and counts the proxy's
system calls (every process and thread of it) over a whole generator run (connect, ``--seconds`` of load,
close) minus a run of almost no load, so that connecting, closing and the idle loop cancel out; the
difference is divided by the difference in echoes (handshakes: open, one echo, close).

Tracers: ``stat`` (the default: ``perf stat`` on syscall tracepoints, counting in the kernel, no slowdown;
the calls in :data:`STAT_CALLS` one by one, and EAGAIN returns of :data:`STAT_EAGAIN`), ``perf`` (``perf
trace -s``: every call by name and its errors, a modest slowdown) and ``strace`` (``strace -c -f``: stops
the proxy at every call, several times slower, so each ``epoll_wait`` returns more events; compare its
figures with each other's). ``--baseline-src`` adds ``gateway-run@base`` serving another tree's ``src``
(e.g. ``git archive HEAD``) in the same run.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .paths import PathSpec, StartContext, by_name, run_path, url
from .procs import Service
from .runner import ROOT, log, prepare_environment, upstream_server
from .scenarios import ECHO_16K, ECHO_64, HANDSHAKE, Generator, Scenario, _header_args
from .system import LOAD_CPUS, PROXY_CPUS, pinned

ATTACH_SECONDS = 1.5
STAT_CALLS = ("read", "write", "recvfrom", "sendto", "readv", "writev", "recvmsg", "sendmsg", "epoll_wait",
              "epoll_pwait", "epoll_ctl", "getsockopt", "setsockopt", "ioctl", "futex", "clock_gettime",
              "timerfd_settime", "getpid", "close", "shutdown", "accept4", "connect", "socket", "getrandom",
              "getsockname", "getpeername", "fcntl", "mmap", "munmap", "brk", "madvise")  # fmt: skip
"""The calls ``--tracer stat`` counts one by one (``(all)`` counts every call, these or not)."""
STAT_EAGAIN = ("read", "recvfrom", "write", "sendto", "accept4")
"""The calls whose EAGAIN returns ``--tracer stat`` counts (the errors column)."""
SHORT_SECONDS = 0.05
SCENARIOS = {s.name: s for s in (ECHO_64, ECHO_16K, HANDSHAKE)}
# perf trace -s: "   recvfrom    12345   678   ..." (name, calls, errors); strace -c: "... calls errors syscall".
_PERF_ROW = re.compile(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s")
_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d*)\s*([a-z_0-9]+)$")


def _pids(service: Service) -> list[int]:
    parent = psutil.Process(service.pid)
    return [parent.pid, *(child.pid for child in parent.children(recursive=True))]


def _tracer(kind: str, pids: list[int], out: Path) -> subprocess.Popen[bytes]:
    listed = ",".join(map(str, pids))
    if kind == "stat":
        events = ["-e", "raw_syscalls:sys_enter"]
        for name in STAT_CALLS:
            events += ["-e", f"syscalls:sys_enter_{name}"]
        for name in STAT_EAGAIN:
            events += ["-e", f"syscalls:sys_exit_{name}", "--filter", "ret == -11"]
        argv = ["perf", "stat", "-x", ",", "-o", str(out), *events, "-p", listed]
    elif kind == "perf":
        argv = ["perf", "trace", "-s", "-o", str(out), "-p", listed]
    else:
        argv = ["strace", "-c", "-f", "-o", str(out), *(arg for pid in pids for arg in ("-p", str(pid)))]
    return subprocess.Popen(pinned(LOAD_CPUS, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def parse(kind: str, text: str) -> dict[str, tuple[int, int]]:
    """Calls and errors per system call in a ``perf trace -s`` or ``strace -c`` summary (threads summed)."""
    found: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for line in text.splitlines():
        if kind == "stat":
            fields = line.split(",")
            if len(fields) < 3 or not fields[0].isdigit():
                continue
            event = fields[2].split(":")[-1]
            if event == "sys_enter":
                found["(all)"][0] += int(fields[0])
            elif event.startswith("sys_enter_"):
                found[event.removeprefix("sys_enter_")][0] += int(fields[0])
            elif event.startswith("sys_exit_"):
                found[event.removeprefix("sys_exit_")][1] += int(fields[0])
            continue
        if kind == "perf":
            if (match := _PERF_ROW.match(line)) is not None:
                name, calls, errors = match.group(1), int(match.group(2)), int(match.group(3))
            else:
                continue
        elif (match := _STRACE_ROW.match(line)) is not None and match.group(3) != "total":
            name, calls, errors = match.group(3), int(match.group(1)), int(match.group(2) or 0)
        else:
            continue
        found[name][0] += calls
        found[name][1] += errors
    return {name: (calls, errors) for name, (calls, errors) in found.items()}


def _traced_run(
    spec: PathSpec, proxy: Service, scenario: Scenario, seconds: float, kind: str
) -> tuple[int, dict[str, tuple[int, int]]]:
    """Echoes (or handshakes) and system calls of one whole generator run (connect, ``seconds`` of load, close),
    traced throughout."""
    with tempfile.NamedTemporaryFile(prefix="syscalls-", suffix=".txt", delete=False) as handle:
        out = Path(handle.name)
    tracer = _tracer(kind, _pids(proxy), out)
    time.sleep(ATTACH_SECONDS)  # the tracer is attached (perf reads its tables first)
    args = [scenario.mode, "--url", url(proxy.port), "--conns", str(scenario.conns), "--size", str(scenario.size),
            "--warmup", "0", "--duration", str(seconds), "--payload", spec.payload,
            *_header_args(spec.headers)]  # fmt: skip
    if spec.bearer is not None and scenario.mode == "handshake":  # gateway-run+policies: the openers' tokens
        args += ["--bearer", spec.bearer]
    generator = Generator(args)
    messages = 0
    for event in generator.events(timeout=seconds + 60):
        if event["event"] == "result":
            messages = int(event["handshakes"] if scenario.mode == "handshake" else event["messages"])
    generator.finish()
    time.sleep(0.2)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    counts = parse(kind, out.read_text(errors="replace"))
    out.unlink()
    return messages, counts


def measure(spec: PathSpec, proxy: Service, scenario: Scenario, seconds: float, kind: str) -> dict[str, object]:
    """Per-echo calls (and errors) by system call: a traced run of ``seconds`` minus one of almost none,
    so that connecting, closing and the idle loop's own calls cancel out."""
    short_echoes, short = _traced_run(spec, proxy, scenario, SHORT_SECONDS, kind)
    long_echoes, long = _traced_run(spec, proxy, scenario, seconds, kind)
    echoes = long_echoes - short_echoes
    per = {}
    for name in long.keys() | short.keys():
        calls = long.get(name, (0, 0))[0] - short.get(name, (0, 0))[0]
        errors = long.get(name, (0, 0))[1] - short.get(name, (0, 0))[1]
        per[name] = (calls / echoes, errors / echoes)
    total = per.pop("(all)", (0.0, 0.0))[0] or sum(calls for calls, _ in per.values())
    return {"path": spec.name, "scenario": scenario.name, "echoes": echoes, "total": total, "calls": per}


def report(row: dict[str, object]) -> None:
    calls = row["calls"]
    assert isinstance(calls, dict)
    unit = "handshake" if row["scenario"] == "handshake" else "echo"
    print(f"\n{row['scenario']}  {row['path']}: {row['total']:.2f} system calls per {unit} ({row['echoes']} {unit}s)")
    for name, (per, errors) in sorted(calls.items(), key=lambda item: -item[1][0]):
        if per >= 0.005:
            print(f"  {name:18} {per:7.3f}" + (f"   errors {errors:.3f}" if errors else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.splice_syscalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--paths", nargs="+", default=["nginx", "gateway-run"])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["echo-64B", "echo-16KiB"],
        choices=list(SCENARIOS),
        help="handshake: per handshake (open, one echo, close) instead of per echo",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="the traced window, per path and scenario")
    parser.add_argument("--tracer", choices=["stat", "perf", "strace"], default="stat")
    parser.add_argument("--baseline-src", type=Path, help="a tree (its src/ is served) to add as gateway-run@base")
    args = parser.parse_args(argv)
    prepare_environment()
    paths = by_name(args.paths)
    if args.baseline_src is not None:
        base_env = {"PYTHONPATH": f"{args.baseline_src.resolve() / 'src'}:{ROOT}"}
        paths.append(run_path("gateway-run@base", env=base_env))
    with tempfile.TemporaryDirectory(prefix="ws-syscalls-") as tmp, upstream_server(Path(tmp)) as upstream:
        for spec in paths:
            assert spec.start is not None
            with spec.start(StartContext(upstream.port, Path(tmp), PROXY_CPUS)) as proxy:
                for name in args.scenarios:
                    log(f"{spec.name} {name}")
                    report(measure(spec, proxy, SCENARIOS[name], args.seconds, args.tracer))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
