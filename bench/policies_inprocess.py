"""What the realistic policy set costs a handshake in process, counted in instructions: a minute a count.

``bench.policies_instructions`` counts a served gateway (~4 minutes a tree under callgrind, a handshake's
whole path). This counts the set alone: ``validate-jwt`` (ES256), ``rate-limit-by-key`` on ``{jwt.sub}``
(the Redis at 127.0.0.1:6379 under a fresh prefix, or ``--store memory``) and ``set-header``, run on a
handshake context (``GatewayPolicies.context``, ``run``, ``build_request``) under uvloop, 4 tokens reused
(every counted ``validate-jwt`` a cache hit), ``--handshakes`` of them after 200 uncounted. Callgrind is
switched on after start-up and counts between two ``os.getppid()`` markers (``--dump-before=getppid``), so
start-up and warmup are not in the figure. ``--only`` keeps a part of the set (what each policy adds);
``--only none``, a context without policies. Without telemetry (no handshake trace in process).

    python -m bench.policies_inprocess [--baseline-src DIR] [--handshakes 1000] [--only validate-jwt,...]
        [--store redis|memory] [--opcodes TOP]

(``--opcodes TOP``: no valgrind; Python opcodes per function per handshake, the ``TOP`` largest, this tree.)
Counts of one tree differ by ~1-2 k between runs (when Redis's replies arrive).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from .apps import policy_set
from .credentials import PUBLIC_KEY_PEM, mint
from .paths import REDIS_URL
from .telemetry_overhead import ROOT

WARMUP = 200
TOKENS = 4


def _scope(token: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
               (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"),
               (b"authorization", b"Bearer " + token.encode()),
               (b"user-agent", b"Python/3.11 websockets/15.0")]  # fmt: skip
    return {"type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "headers": headers}  # fmt: skip


async def _serve(args: argparse.Namespace) -> None:
    """In the counted process: the handshakes, between the markers (callgrind on after start-up)."""
    from asgi_ws_gateway.policies.build import load_policies

    api: dict[str, Any] = {"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/"]}
    policies = [entry for entry in policy_set(PUBLIC_KEY_PEM)["policies"] if next(iter(entry)) in args.only]
    if policies:
        api["policies"] = policies
    document: dict[str, Any] = {"apis": [api]}
    if args.store == "redis":
        document["store"] = {"type": "redis", "url": REDIS_URL, "prefix": f"bench-inprocess-{os.getpid()}"}
    built = load_policies(document)
    config = built.config.apis[0]
    scopes = [_scope(mint(f"opener-{index}")) for index in range(TOKENS)]

    async def handshake(scope: dict[str, Any]) -> None:
        context = built.context("echo", scope, {})
        await built.run(context)
        context.build_request(config, config.upstreams[0])

    if not args.opcodes:
        # Blocking, once, before the handshakes: callgrind on for this process (not under valgrind: nothing).
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=False)  # noqa: ASYNC221
    for index in range(WARMUP):
        await handshake(scopes[index % TOKENS])
    counts: collections.Counter[str] = collections.Counter()
    if args.opcodes:

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                code = frame.f_code
                where = code.co_filename.rpartition("site-packages/")[2].rpartition("/src/")[2]
                counts[f"{where}:{code.co_qualname}"] += 1
            return local

        def enter(frame: FrameType, event: str, arg: object) -> Any:
            frame.f_trace_opcodes = True
            return local

        sys.settrace(enter)
    os.getppid()  # the first marker
    for index in range(args.handshakes):
        await handshake(scopes[index % TOKENS])
    os.getppid()  # the second
    sys.settrace(None)
    await built.aclose()
    if args.opcodes:
        print(f"{sum(counts.values()) / args.handshakes:9.1f}  all")
        for name, count in counts.most_common(args.opcodes):
            print(f"{count / args.handshakes:9.1f}  {name}")


def _count(src: Path, args: argparse.Namespace, tmp: Path, name: str) -> float:
    """Instructions per handshake of the tree ``src``: the part of callgrind's output between the markers."""
    out = tmp / f"callgrind-{name}"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-before=getppid", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.policies_inprocess", "--serve", "--handshakes", str(args.handshakes),
        "--only", ",".join(args.only) or "none", "--store", args.store,
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
    counted = Path(f"{out}.2")  # part 1: up to the first marker; part 2: between the two
    summary = next(line for line in counted.read_text().splitlines() if line.startswith("summary:"))
    handshakes: int = args.handshakes
    return int(summary.split()[1]) / handshakes


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies_inprocess", description=__doc__)
    parser.add_argument("--baseline-src", help="a source tree's src/ counted beside this tree's")
    parser.add_argument("--handshakes", type=int, default=1000, help="counted handshakes (default: %(default)s)")
    parser.add_argument("--only", default="validate-jwt,rate-limit-by-key,set-header",
                        help="the set's policies kept (default: all three; 'none': none)")  # fmt: skip
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--opcodes", type=int, default=0, help="Python opcodes per function instead (the TOP largest)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the counted process
    args = parser.parse_args()
    args.only = [name for name in args.only.split(",") if name and name != "none"]
    if args.serve or args.opcodes:
        import uvloop

        uvloop.run(_serve(args))
        return 0
    trees = {"this": ROOT / "src"} | ({"baseline": Path(args.baseline_src)} if args.baseline_src else {})
    with tempfile.TemporaryDirectory() as tmp:
        counts = {name: _count(src, args, Path(tmp), name) for name, src in trees.items()}
    print(f"instructions per handshake in process ({', '.join(args.only) or 'no policies'}; {args.store}; "
          f"{args.handshakes} after {WARMUP})")  # fmt: skip
    for name, count in counts.items():
        print(f"{name:10} {count / 1e3:8.1f} k")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
