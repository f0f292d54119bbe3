"""Instructions per echo of the default path (``asgi-ws-gateway run``: the splice), and of nginx beside it.

CPU time per echo moves by ±20 % with this machine's load; the user-space instructions a proxy runs
per echo do not. Each proxy runs under valgrind's callgrind (instrumentation off while it starts and
warms up), between the bench's picows echo upstream and a client holding ``--conns`` connections in a
closed loop (each sends the next message when its echo arrives). The count covers ``--echoes`` echoes
(all connections together), minus what the proxy runs while idle for as long (uvicorn's ticks, timers).
System calls are the kernel's (not counted here): ``python -m bench.splice_syscalls`` counts those.

``python -m bench.splice_instructions [--sizes 64 16384] [--echoes 4000] [--conns 1] [--nginx]
[--baseline-src DIR] [--keep DIR]`` (``--baseline-src``: another tree, e.g. ``git archive HEAD``, whose
``src/`` is counted in the same run as ``run@base``; ``--keep``: callgrind's files, for
``callgrind_annotate``). With one connection each echo is two turns of the event loop (the client's
read, then the upstream's); more connections share turns as the bench's 50 do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import nginx
from .procs import HOST, free_port, wait_for_port
from .runner import ROOT
from .telemetry_instructions import stop

IDLE_SECONDS = 3.0


async def _echoes(url: str, conns: int, size: int, total: int) -> float:
    """Seconds ``conns`` closed loops take to make ``total`` echoes of ``size`` bytes between them."""
    from websockets.asyncio.client import ClientConnection, connect

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    per = [total // conns + (i < total % conns) for i in range(conns)]
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(url, compression=None, max_size=None, open_timeout=120))
                   for _ in range(conns)]  # fmt: skip

        async def loop(ws: ClientConnection, count: int) -> None:
            for _ in range(count):
                await ws.send(payload)
                await ws.recv()

        started = time.monotonic()
        await asyncio.gather(*(loop(ws, n) for ws, n in zip(sockets, per, strict=True)))
        return time.monotonic() - started


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def _total(prefix: Path) -> int:
    """Instructions in the last dump's files (every thread)."""
    total = 0
    for path in prefix.parent.glob(prefix.name + ".*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total


def _counted(
    pid: int, prefix: Path, action: Callable[[], float], total: Callable[[Path], int] = _total
) -> tuple[int, float]:
    """Instructions ``pid`` runs during ``action()`` (which returns its seconds), and those seconds;
    ``total`` reads them from the dump (default: every thread's)."""
    for stale in prefix.parent.glob(prefix.name + ".*"):
        stale.unlink()
    _control(pid, "--instr=on")
    _control(pid, "--zero")
    seconds = action()
    _control(pid, "--dump")
    _control(pid, "--instr=off")
    time.sleep(0.5)
    return total(prefix), seconds


def _idle() -> float:
    time.sleep(IDLE_SECONDS)
    return IDLE_SECONDS


def _command(kind: str, src: Path, config: Path, port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    if kind == "nginx":
        binary = nginx.nginx_binary()
        assert binary is not None
        return [binary, "-p", str(tmp / "nginx"), "-c", str(config), "-g", "daemon off; master_process off;"], {}
    argv = [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--host", HOST, "--port", str(port)]
    return argv, {"PYTHONPATH": str(src)}


def measure(kind: str, src: Path, upstream_port: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Instructions per echo of one proxy, for each size."""
    port = free_port()
    if kind == "nginx":
        config = nginx.write_config(tmp / "nginx", port=port, upstream_port=upstream_port, nofile=4096)
    else:
        config = tmp / "gateway.json"
        api = {"name": "echo", "path": "/ws/echo", "upstreams": [f"ws://{HOST}:{upstream_port}/ws/echo"]}
        config.write_text(json.dumps({"apis": [api]}))
    argv, env = _command(kind, src, config, port, tmp)
    prefix = tmp / f"callgrind-{kind}"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
               f"--callgrind-out-file={prefix}.%p", *argv]  # fmt: skip
    process = subprocess.Popen(command, env={**_env(), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prefix = Path(f"{prefix}.{process.pid}")
    url = f"ws://{HOST}:{port}/ws/echo"
    result: dict[str, float] = {}
    try:
        wait_for_port(port, process, timeout=300)
        for size in args.sizes:
            asyncio.run(_echoes(url, args.conns, size, args.warmup))
            idle, idle_seconds = _counted(process.pid, prefix, _idle)

            def echoes(size: int = size) -> float:
                return asyncio.run(_echoes(url, args.conns, size, args.echoes))

            busy, seconds = _counted(process.pid, prefix, echoes)
            result[str(size)] = (busy - idle / idle_seconds * seconds) / args.echoes
            if args.keep:
                for path in prefix.parent.glob(prefix.name + ".*"):
                    shutil.copy(path, Path(args.keep) / f"{kind}-{size}-{path.name}")
    finally:
        stop(process)
    return result


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.splice_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 16384])
    parser.add_argument("--echoes", type=int, default=4000, help="counted echoes per size (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1000, help="echoes before counting (default: %(default)s)")
    parser.add_argument("--conns", type=int, default=1, help="connections in closed loops (default: %(default)s)")
    parser.add_argument("--nginx", action="store_true", help="count nginx too (one process: master_process off)")
    parser.add_argument("--baseline-src", type=Path, help="another tree (its src/) counted as run@base")
    parser.add_argument("--keep", help="a directory to copy callgrind's files to")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    kinds: list[tuple[str, str, Path]] = [("run", "run", ROOT / "src")]
    if args.baseline_src is not None:
        kinds.append(("run@base", "run", args.baseline_src.resolve() / "src"))
    if args.nginx:
        kinds.append(("nginx", "nginx", ROOT))
    upstream_port = free_port()
    with tempfile.TemporaryDirectory(prefix="splice-instr-") as tmp_name:
        tmp = Path(tmp_name)
        upstream = subprocess.Popen([sys.executable, "-m", "bench.upstream_server", "--port", str(upstream_port)],
                                    env={**_env(), "PYTHONPATH": str(ROOT)})  # fmt: skip
        try:
            wait_for_port(upstream_port, upstream, timeout=30)
            results = {}
            for name, kind, src in kinds:
                (tmp / name).mkdir()
                results[name] = measure(kind, src, upstream_port, args, tmp / name)
        finally:
            upstream.terminate()
            upstream.wait(10)
    print(f"instructions per echo (user space, {args.conns} connection(s), {args.echoes} echoes after {args.warmup})")
    for name, sizes in results.items():
        print(f"{name:10}" + "".join(f"   {size} B {count / 1e3:8.2f} k" for size, count in sizes.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
