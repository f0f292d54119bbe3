"""Instructions per 64 B echo of ``gateway-run+messages`` (the frame relay), this tree against another.

``bench/framed_cpu.py`` counts the frame relay in process, with fake transports; this counts what the
bench's ``gateway-run+messages`` path runs: ``asgi-ws-gateway run`` with the bench's message policies
(``bench.paths.MESSAGE_POLICIES``: size limits both ways, ``rate-limit-messages`` in memory and never
reached, ``validate-message`` with a JSON Schema), between the bench's picows echo upstream and one
client in a closed loop sending bench/message_policies.py's 64 B JSON text. Each gateway runs under
valgrind's callgrind, instrumentation off while it starts and warms up (``--warmup`` echoes); then,
``--repeat`` times, ``--echoes`` echoes are counted on the event loop's thread, minus what that thread
runs while idle for as long. The trees' windows alternate (both gateways run all along), so a
difference between them is the code's, not the machine's: callgrind counts user-space instructions,
which the machine's load does not move (system calls are the kernel's, not counted).

    python -m bench.messages_instructions [--against main | --baseline-src DIR] [--echoes 2000]
        [--warmup 500] [--repeat 3] [--keep DIR]

(``--against REV``: that git revision's ``src/``, exported; ``--keep DIR``: callgrind's files of each
tree's last window, for ``callgrind_annotate --tree=caller``.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .compare import export_src
from .message_policies import MESSAGE
from .paths import MESSAGE_POLICIES
from .procs import HOST, free_port, wait_for_port
from .runner import ROOT
from .splice_instructions import IDLE_SECONDS, _counted, _env, _idle
from .telemetry_instructions import _thread_totals, stop


async def _echoes(url: str, total: int) -> float:
    """Seconds one closed loop takes to make ``total`` echoes of :data:`MESSAGE` (text)."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, open_timeout=120, proxy=None) as ws:
        started = time.monotonic()
        for _ in range(total):
            await ws.send(MESSAGE)
            if await ws.recv() != MESSAGE:
                raise RuntimeError("the echo is not the message sent")
        return time.monotonic() - started


def _loop_counted(pid: int, prefix: Path, action: Callable[[], float]) -> tuple[int, float]:
    """Instructions of ``pid``'s event-loop thread (its main thread) during ``action()``, and its seconds."""
    return _counted(pid, prefix, action, lambda dumped: _thread_totals(dumped).get(1, 0))


class _Gateway:
    """One tree's ``asgi-ws-gateway run`` under callgrind, with the messages config."""

    def __init__(self, name: str, src: Path, upstream_port: int, tmp: Path) -> None:
        self.name = name
        tmp.mkdir()
        config = tmp / "gateway.json"
        api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{upstream_port}/ws/echo"],
               "message_policies": MESSAGE_POLICIES}  # fmt: skip
        config.write_text(json.dumps({"apis": [api]}))
        self.port = free_port()
        argv = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--host", HOST, "--port", str(self.port)]
        out = tmp / "callgrind"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                   f"--callgrind-out-file={out}.%p", *argv]  # fmt: skip
        env = {**_env(), "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.prefix = Path(f"{out}.{self.process.pid}")
        self.url = f"ws://{HOST}:{self.port}/ws/echo"
        self.idle_per_second = 0.0

    def warm(self, echoes: int) -> None:
        wait_for_port(self.port, self.process, timeout=300)
        asyncio.run(_echoes(self.url, echoes))
        idle, seconds = _loop_counted(self.process.pid, self.prefix, _idle)
        self.idle_per_second = idle / seconds

    def count(self, echoes: int) -> float:
        """Instructions per echo on the event loop's thread, idle work taken out."""
        busy, seconds = _loop_counted(self.process.pid, self.prefix, lambda: asyncio.run(_echoes(self.url, echoes)))
        return (busy - self.idle_per_second * seconds) / echoes

    def keep(self, into: Path) -> None:
        for path in self.prefix.parent.glob(self.prefix.name + ".*"):
            shutil.copy(path, into / f"{self.name}-{path.name}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.messages_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--against", help="a git revision whose src/ is counted beside this tree's")
    other.add_argument("--baseline-src", type=Path, help="another tree (its src/) counted beside this tree's")
    parser.add_argument("--echoes", type=int, default=2000, help="counted echoes per window (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=500, help="echoes before counting (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="counted windows per tree (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="a directory to copy the last windows' callgrind files to")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="messages-instr-")))
        trees = [("this", ROOT / "src")]
        if args.against is not None:
            src = export_src(args.against, tmp)
            for native in (ROOT / "src/asgi_ws_gateway/telemetry").glob("*.so"):  # built, never committed
                shutil.copy(native, src / "asgi_ws_gateway/telemetry")
            trees.append((args.against, src))
        elif args.baseline_src is not None:
            trees.append(("base", args.baseline_src.resolve() / "src"))
        upstream_port = free_port()
        upstream = subprocess.Popen([sys.executable, "-m", "bench.upstream_server", "--port", str(upstream_port)],
                                    env={**_env(), "PYTHONPATH": str(ROOT)})  # fmt: skip
        stack.callback(upstream.wait, 10)
        stack.callback(upstream.terminate)
        wait_for_port(upstream_port, upstream, timeout=30)
        gateways = [_Gateway(name, src, upstream_port, tmp / f"tree{i}") for i, (name, src) in enumerate(trees)]
        for gateway in gateways:
            stack.callback(stop, gateway.process)
        for gateway in gateways:
            gateway.warm(args.warmup)
        counts: dict[str, list[float]] = {gateway.name: [] for gateway in gateways}
        for _ in range(args.repeat):
            for gateway in gateways:
                counts[gateway.name].append(gateway.count(args.echoes))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for gateway in gateways:
                gateway.keep(args.keep)
    print(f"instructions per 64 B echo, event loop thread ({args.echoes} echoes x {args.repeat} after {args.warmup}; "
          f"idle {IDLE_SECONDS:g} s taken out)")  # fmt: skip
    first = statistics.median(counts["this"])
    for name, values in counts.items():
        median = statistics.median(values)
        spread = f"{min(values) / 1e3:.2f}-{max(values) / 1e3:.2f} k"
        print(f"{name:12} median {median / 1e3:8.2f} k  ({spread})  {median / first:.3f}x this")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
