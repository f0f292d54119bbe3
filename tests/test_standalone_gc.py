"""The standalone gateway settles its process's garbage collector at start-up when asked (``run`` asks).

A full collection walked every object start-up made (~86,000: the modules, the configuration, the
telemetry SDK), a 50 ms pause of the event loop each time; frozen, they are never walked again. The
collector's state is per process, so each case runs in a process of its own: this one's must stay
as pytest has it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.standalone import GC_ENV, YOUNG_THRESHOLD, create_app
from support.processes import ready_server

STARTED = """
import asyncio, gc, json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
if sys.argv[2] != "default":
    gc.set_threshold(*map(int, sys.argv[2].split(",")))
from asgi_ws_gateway.standalone import create_app

async def start_up(app):
    messages = [{"type": "lifespan.startup"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else await asyncio.Future()

    async def send(message):
        sent.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    while not sent:
        await asyncio.sleep(0.01)
    task.cancel()
    return sent

sent = asyncio.run(start_up(create_app(sys.argv[1])))
print(json.dumps({"sent": sent, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
"""


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/"]}]}))
    return config


def _started(tmp_path: Path, mode: str | None, threshold: str = "default") -> tuple[dict[str, object], str]:
    config = _config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != GC_ENV} | ({GC_ENV: mode} if mode is not None else {})
    done = subprocess.run([sys.executable, "-c", STARTED, str(config), threshold], env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_tuned_freezes_what_start_up_made_and_raises_the_young_threshold(tmp_path: Path) -> None:
    state, log = _started(tmp_path, "tuned")
    assert state["sent"] == ["lifespan.startup.complete"]
    assert isinstance(state["frozen"], int) and state["frozen"] > 10_000  # the modules and the configuration
    assert state["threshold"] == [YOUNG_THRESHOLD, 10, 10]
    settled = rf"garbage collector settled: \d{{5,}} start-up objects frozen, thresholds \({YOUNG_THRESHOLD}, 10, 10\)"
    assert re.search(settled, log), log


def test_thresholds_the_application_chose_are_kept(tmp_path: Path) -> None:
    state, _ = _started(tmp_path, " Tuned ", threshold="1500,20,5")
    assert isinstance(state["frozen"], int) and state["frozen"] > 10_000
    assert state["threshold"] == [1500, 20, 5]


@pytest.mark.parametrize("mode", [None, "python", ""])
def test_unset_or_python_leaves_the_collector_alone(tmp_path: Path, mode: str | None) -> None:
    """A gateway built in a process of its caller's (a test, an app of the user's) must not freeze that process."""
    state, log = _started(tmp_path, mode)
    assert state["sent"] == ["lifespan.startup.complete"]
    assert state["frozen"] == 0
    assert state["threshold"] == [700, 10, 10]
    assert "garbage collector" not in log


def test_an_unknown_mode_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GC_ENV, "aggressive")
    with pytest.raises(ConfigError) as error:
        create_app(tmp_path / "never-read.json")
    assert error.value.problems == [f"{GC_ENV}: 'aggressive' is not supported (tuned or python)"]


@pytest.mark.parametrize("mode", [None, "python"])
def test_run_settles_the_collector_unless_told_not_to(tmp_path: Path, mode: str | None) -> None:
    config = _config(tmp_path)
    env = {GC_ENV: mode} if mode is not None else None
    command = ["-m", "asgi_ws_gateway", "run", str(config)]
    with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:
        assert server.stop() == 0
        output = server.stdout() + server.stderr()
    settled = [line for line in output.splitlines() if "garbage collector settled" in line]
    assert len(settled) == (0 if mode == "python" else 1), output
