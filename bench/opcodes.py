"""Where a handshake's Python goes: opcodes per function, counted in a real gateway.

CPU time on this shared 2-core machine moves by ±20 % between rounds, and callgrind counts
instructions by C function (``_PyEval_EvalFrameDefault``), not by Python function. This counts
Python opcodes per function instead: ``asgi-ws-gateway run`` (the default path: the splice, the
access log) starts inside a wrapper that installs a trace function on every thread; ``SIGUSR1``
starts counting and ``SIGUSR2`` writes the counts, around ``--handshakes`` handshakes (open, one 64 B
echo, close) after ``--warmup`` uncounted ones. The counts are the same on a quiet or a busy machine.
An opcode is not a unit of time (one that calls into C may cost a hundred others): confirm a cut with
``python -m bench.telemetry_instructions`` (instructions) before keeping it.

Usage: ``python -m bench.opcodes [--telemetry] [--policies] [--threads] [--handshakes 200] [--top 40]``
(``--telemetry``: traces and metrics exported over OTLP/gRPC to a receiver; ``--policies``: the
``gateway-run+policies`` set (``validate-jwt``, ``rate-limit-by-key`` on the Redis at 127.0.0.1:6379,
``set-header``), 4 openers each presenting its own token on every handshake, as
``bench.policies_instructions`` counts it; ``--threads``: every thread, the span exporter's too,
instead of the event loop's alone).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from . import policies_instructions
from . import telemetry_overhead as overhead
from .apps import policy_set
from .credentials import PUBLIC_KEY_PEM, mint
from .paths import REDIS_URL
from .telemetry_instructions import _handshakes

Counts = collections.Counter[tuple[str, str, str]]
OPENERS = 4
"""Concurrent clients with ``--policies`` (each with its own token), as ``bench.policies_instructions``."""


def _serve_counted(out: str, every_thread: bool, argv: list[str]) -> None:
    """In the gateway's process: run ``asgi-ws-gateway argv`` with opcodes counted between the signals."""
    import runpy
    import threading

    counts: Counts = collections.Counter()
    counting = False

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and counting:
            code = frame.f_code
            counts[(threading.current_thread().name, code.co_filename, code.co_qualname)] += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if not counting:
            return None
        frame.f_trace_opcodes = True
        return local

    def start(*_: object) -> None:
        nonlocal counting
        counts.clear()
        counting = True
        if not every_thread:  # the frames already running on this thread (the event loop's) count too
            frame = sys._getframe(1)
            while frame is not None:
                frame.f_trace_opcodes, frame.f_trace = True, local
                frame = frame.f_back  # type: ignore[assignment]

    def stop(*_: object) -> None:
        nonlocal counting
        counting = False
        Path(out).write_text(json.dumps([[*key, n] for key, n in counts.items()]))

    if every_thread:
        threading.settrace(calls)
    sys.settrace(calls)
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["asgi_ws_gateway", *argv]
    runpy.run_module("asgi_ws_gateway", run_name="__main__", alter_sys=True)


def _count(args: argparse.Namespace, upstream_port: int, receiver_port: int, tmp: Path) -> Counts:
    config = tmp / "gateway.json"
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{overhead.HOST}:{upstream_port}/"]}
    document: dict[str, Any] = {"apis": [{**api, "compression": None}]}
    if args.policies:
        document["apis"][0].update(policy_set(PUBLIC_KEY_PEM))
        document["store"] = {"type": "redis", "url": REDIS_URL, "prefix": f"bench-{os.urandom(6).hex()}"}
    config.write_text(json.dumps(document))
    env = overhead._quiet_env()
    if args.telemetry:
        env.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{overhead.HOST}:{receiver_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "asgi-ws-gateway-bench",
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
        })  # fmt: skip
    env["PYTHONPATH"] = str(overhead.ROOT / "src") + os.pathsep + str(overhead.ROOT)
    out, port = tmp / "counts.json", overhead._free_port()

    tokens = [mint(f"opener-{index}") for index in range(OPENERS)]  # held by each opener throughout

    def handshakes(url: str, count: int) -> Any:
        if args.policies:
            return policies_instructions._handshakes(url, count, tokens)
        return _handshakes(url, count)

    argv = ["run", str(config), "--port", str(port)]
    code = f"from bench.opcodes import _serve_counted; _serve_counted({str(out)!r}, {args.threads!r}, {argv!r})"
    gateway = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    try:
        overhead._wait_listening(port, timeout=60)
        url = f"ws://{overhead.HOST}:{port}/ws/echo"
        asyncio.run(handshakes(url, args.warmup))
        time.sleep(1)
        gateway.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        asyncio.run(handshakes(url, args.handshakes))
        time.sleep(0.5)
        gateway.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if out.exists():
                break
            time.sleep(0.1)
    finally:
        gateway.terminate()
        gateway.wait(30)
    return collections.Counter({(t, f, q): n for t, f, q, n in json.loads(out.read_text())})


def _short(path: str) -> str:
    """``path`` from the package or the standard library on (``asgi_ws_gateway/...``, ``logging/...``)."""
    return re.sub(r"^.*/(?:src|site-packages|lib/python3\.\d+)/", "", path)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=200, help="counted handshakes (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=300, help="handshakes before counting (default: %(default)s)")
    parser.add_argument("--telemetry", action="store_true", help="traces and metrics on, exported over OTLP/gRPC")
    parser.add_argument("--policies", action="store_true", help="the gateway-run+policies set, on Redis")
    parser.add_argument("--threads", action="store_true", help="count every thread, not the event loop's alone")
    parser.add_argument("--top", type=int, default=40, help="functions shown (default: %(default)s)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        upstream_port, receiver_port = overhead.start_upstream_and_receiver(stack)
        counts = _count(args, upstream_port, receiver_port, tmp)
    per = args.handshakes
    threads: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    for (thread, path, _), n in counts.items():
        threads[thread] += n
        files[_short(path)] += n
    print(f"Python opcodes per handshake ({per} handshakes after {args.warmup}; telemetry {args.telemetry}, "
          f"policies {args.policies})")  # fmt: skip
    for thread, n in threads.most_common():
        print(f"{n / per:10.0f}  thread {thread}")
    print("\nby file")
    for path, n in files.most_common(args.top // 2):
        print(f"{n / per:10.0f}  {path}")
    print("\nby function (self)")
    for (thread, path, name), n in counts.most_common(args.top):
        print(f"{n / per:10.0f}  {_short(path)}:{name}" + ("" if thread == "MainThread" else f"  [{thread}]"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
