"""Relay throughput of 64-byte JSON messages: no message policies vs size + rate + schema, and vs main.

Three gateways run side by side, each in its own process under uvicorn, in front of one
``websockets`` echo upstream (its own process too):

* ``bare``: this tree, an API with no message policies (the plain relay);
* ``policies``: this tree, an API with ``limit-message-size``, ``rate-limit-messages`` (in memory,
  a limit never reached) and ``validate-message`` (a JSON Schema) on client messages, and
  ``limit-message-size`` on upstream messages;
* ``baseline``: a copy of another revision's ``src/`` (default: where this branch left ``main``),
  an API with no policies: the no-policy relay before and after, in the same run.

A round sends ``--messages`` messages on one connection per target, as fast as the gateway takes
them, and times until the last echo is back. Rounds alternate between the targets (in a rotating
order), so all see the same machine state; the medians and their ratios are printed as JSON.

    python bench/message_policies.py [--rounds 9] [--messages 20000] [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = '{"type":"chat","room":"lobby","text":"hello, you","seq":1234567}'  # 64 bytes


def message_policies(*, limit: int = 4096, text_limit: int = 1000) -> dict[str, Any]:
    """Size limit, in-memory rate limit (never reached) and JSON Schema on client messages, size limit
    on the upstream's: the set this script measures (and, limits raised, the bench's
    ``gateway-run+messages`` path)."""
    schema = {
        "type": "object",
        "required": ["type", "room", "text"],
        "properties": {
            "type": {"enum": ["chat", "typing"]},
            "room": {"type": "string", "maxLength": 64},
            "text": {"type": "string", "maxLength": text_limit},
            "seq": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }
    return {
        "inbound": [
            {"limit-message-size": {"max": limit}},
            {"rate-limit-messages": {"messages": 10_000_000, "bytes": 10_000_000_000, "window": 1}},
            {"validate-message": {"schema": schema}},
        ],
        "outbound": [{"limit-message-size": {"max": 65536}}],
    }


POLICIES = message_policies()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _spawn(args: list[str], port: int, src: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    process = subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=tempfile.gettempdir())
    _wait_port(port, process)
    return process


def serve_upstream(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port, compression=None, max_size=None):
            await asyncio.Future()

    asyncio.run(main())


def serve_gateway(port: int, config: dict[str, Any]) -> None:
    import uvicorn

    from asgi_ws_gateway import WebSocketGateway
    from asgi_ws_gateway.standalone import not_found

    app = WebSocketGateway(not_found, config=config)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="off")


async def _round(url: str, n: int) -> float:
    """Messages per second through one connection: n sent back to back, timed to the last echo."""
    async with connect(url, compression=None, max_size=None, proxy=None) as ws:
        await ws.send(MESSAGE)
        await ws.recv()  # warm: the connection is open both ways
        started = time.perf_counter()

        async def send_all() -> None:
            for _ in range(n):
                await ws.send(MESSAGE)

        sender = asyncio.create_task(send_all())
        for _ in range(n):
            await ws.recv()
        elapsed = time.perf_counter() - started
        await sender
    return n / elapsed


def _baseline_src(rev: str, into: Path) -> Path:
    if rev == "merge-base":
        rev = _merge_base()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


async def run(rounds: int, messages: int, baseline_rev: str | None) -> dict[str, Any]:
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up_port = _free_port()
            processes.append(_spawn(["--serve-upstream", str(up_port)], up_port, ROOT / "src"))
            upstream = f"ws://127.0.0.1:{up_port}/"
            api: dict[str, Any] = {"upstreams": [upstream], "compression": None}
            policies = {"name": "policies", "path": "/ws/policies", **api, "message_policies": POLICIES}
            config = {"apis": [{"name": "bare", "path": "/ws/bare", **api}, policies]}
            port = _free_port()
            processes.append(_spawn(["--serve-gateway", str(port), json.dumps(config)], port, ROOT / "src"))
            targets = {"bare": f"ws://127.0.0.1:{port}/ws/bare", "policies": f"ws://127.0.0.1:{port}/ws/policies"}
            if baseline_rev:
                src = _baseline_src(baseline_rev, Path(tmp))
                base_config = {"apis": [{"name": "bare", "path": "/ws/bare", **api}]}
                base_port = _free_port()
                processes.append(_spawn(["--serve-gateway", str(base_port), json.dumps(base_config)], base_port, src))
                targets["baseline"] = f"ws://127.0.0.1:{base_port}/ws/bare"
            for url in targets.values():  # warm-up
                await _round(url, messages // 5)
            samples: dict[str, list[float]] = {name: [] for name in targets}
            names = list(targets)
            for i in range(rounds):
                order = names[i % len(names) :] + names[: i % len(names)]
                for name in order:
                    samples[name].append(await _round(targets[name], messages))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(10)
    medians = {name: round(statistics.median(values)) for name, values in samples.items()}
    result: dict[str, Any] = {
        "rounds": rounds,
        "messages_per_round": messages,
        "message_bytes": len(MESSAGE),
        "median_msgs_per_s": medians,
        "samples_msgs_per_s": {name: [round(v) for v in values] for name, values in samples.items()},
        "policies_vs_bare": round(medians["policies"] / medians["bare"], 3),
    }
    if "baseline" in medians:
        result["baseline_rev"] = baseline_rev if baseline_rev != "merge-base" else _merge_base()[:10]
        result["bare_vs_baseline"] = round(medians["bare"] / medians["baseline"], 3)
    return result


def _merge_base() -> str:
    found = subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True, capture_output=True)
    return found.stdout.decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--baseline-rev",
        default="merge-base",
        help="git revision to compare the bare relay with (default: the merge base of HEAD and main; '' skips)",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
    elif args.serve_gateway:
        serve_gateway(int(args.serve_gateway[0]), json.loads(args.serve_gateway[1]))
    else:
        print(json.dumps(asyncio.run(run(args.rounds, args.messages, args.baseline_rev or None)), indent=2))


if __name__ == "__main__":
    main()
