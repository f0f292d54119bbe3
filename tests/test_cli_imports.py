"""Each command imports what it uses: ``check``, ``schema``, ``--help`` and the management client
commands start without redis-py (which imports the OpenTelemetry SDK), uvicorn, the server or the
management API; ``run`` imports them itself. Help and usage errors import no event loop nor
websockets either (0.18 -> 0.12 CPU-s a call: 326 -> 180 modules): ``connect`` and the commands that
call the API import them.

``check`` imported all of them (0.45 s before it read the file): redis-py through the store's URL
parser, uvicorn and the management API through the command line module. The suite launches the
command line hundreds of times.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.config import LOG_LEVELS

from asgi_ws_gateway import cli
from support.processes import cli_env

# What none of these commands may import (a module counts with its submodules).
RUN_ONLY = (
    "redis",
    "uvicorn",
    "opentelemetry.sdk",
    "starlette",
    "asgi_ws_gateway.server",
    "asgi_ws_gateway.standalone",
    "asgi_ws_gateway.middleware",
    "asgi_ws_gateway.state.redis",
    "asgi_ws_gateway.management.app",
    "asgi_ws_gateway.management.mount",
    "asgi_ws_gateway.management.standalone",
)
NO_REDIS_CONFIG = "apis:\n  - name: echo\n    path: /ws\n    upstreams:\n      - url: ws://127.0.0.1:9/\n"
UNREACHABLE = "http://127.0.0.1:1/_gateway"  # nothing listens on port 1: refused at once


def _imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the command line with ``-X importtime``: its result, and every module it imported."""
    command = [sys.executable, "-X", "importtime", "-m", "asgi_ws_gateway", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=60)
    modules = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "asgi_ws_gateway.cli" in modules, done.stderr[-2000:]  # -X importtime did report
    return done, modules


def _run_only(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(f"{name}.") for name in RUN_ONLY))


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_check_of_a_config_without_redis_imports_neither_redis_uvicorn_nor_the_sdk(
    tmp_path: Path, json_output: bool
) -> None:
    """``check`` reads and builds the configuration: nothing of ``run``'s is imported."""
    config = tmp_path / "gateway.yaml"
    config.write_text(NO_REDIS_CONFIG)
    done, modules = _imported("check", *(["--json"] if json_output else []), str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert ('"valid": true' if json_output else "valid, 1 API(s): echo") in done.stdout
    assert "asgi_ws_gateway.policies.build" in modules  # the configuration was built, not skipped
    assert _run_only(modules) == []


def test_check_of_an_invalid_config_imports_nothing_of_run(tmp_path: Path) -> None:
    """A configuration refused: its problems said, without the server's imports."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: [{name: echo}]\n")
    done, modules = _imported("check", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert "apis[0].path" in done.stderr
    assert _run_only(modules) == []


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["check", "--help"], ["apis", "list", "--help"], ["connect", "--help"], ["schema"]],
    ids=" ".join,
)
def test_help_and_schema_import_nothing_of_run(tmp_path: Path, args: list[str]) -> None:
    done, modules = _imported(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert _run_only(modules) == []


@pytest.mark.parametrize("args", [["apis", "list"], ["export"]], ids=" ".join)
def test_the_management_client_commands_import_only_the_client(tmp_path: Path, args: list[str]) -> None:
    """``apis list`` and ``export`` need an HTTP client, not the server they talk to."""
    done, modules = _imported(*args, "--url", UNREACHABLE, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert "cannot reach the management API" in done.stderr
    assert "httpx2" in modules
    assert _run_only(modules) == []


def test_help_imports_no_http_client(tmp_path: Path) -> None:
    """``--help`` lists the commands: the management client's HTTP library is the commands' that call it."""
    done, modules = _imported("apis", "list", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "httpx2" not in modules


# What the command line's help and usage errors may do without: only a command that connects needs them.
CONNECTING = ("asyncio", "websockets", "python_socks", "asgi_ws_gateway.management.connect")


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["run", "--help"], ["apis", "list", "--help"], ["connect", "--help"]], ids=" ".join
)
def test_help_and_usage_errors_import_no_websocket_client_nor_event_loop(tmp_path: Path, args: list[str]) -> None:
    """Help and a usage error parse arguments: no event loop, no WebSocket library (~0.1 CPU-s of each call)."""
    done, modules = _imported(*args, cwd=tmp_path)
    assert done.returncode == (0 if args else 2), done.stdout + done.stderr[-2000:]
    assert "usage: asgi-ws-gateway" in done.stdout + done.stderr
    connecting = sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in CONNECTING))
    assert connecting == []


def test_run_log_levels_are_uvicorns() -> None:
    """``run --log-level`` names uvicorn's levels without importing uvicorn: the same, in the same order."""
    assert list(cli.LOG_LEVELS) == list(LOG_LEVELS)
