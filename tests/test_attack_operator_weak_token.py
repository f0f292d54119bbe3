"""``run`` with a guessable admin token on an address beyond this host.

An attack pass started ``run --host 0.0.0.0 --management /_gateway`` with the example's token (which
``make run`` prints and the README shows) without a word, and with a 4-character one with a warning;
a guesser spreading 972 guesses over 34 addresses (29 each, under the lockout's 30 a minute) found
the short one in 0.4 s. ``run`` now refuses both where the management API listens beyond loopback,
and starts (with the warning) where it listens on loopback only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asgi_ws_gateway.management.admin_auth import EXAMPLE_ADMIN_TOKEN
from support.processes import SRC, main_in_process, ready_server
from support.servers import free_port

RUN = [sys.executable, "-m", "asgi_ws_gateway", "run"]
WEAK = ["zq7k", "fifteen-chars-x", EXAMPLE_ADMIN_TOKEN]


def _config(tmp: Path) -> str:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"]}]}))
    return str(path)


@pytest.mark.parametrize("token", WEAK)
@pytest.mark.parametrize(
    "where",
    [
        ["--host", "0.0.0.0", "--management", "/_gateway"],
        ["--host", "::", "--management", "/_gateway"],
        ["--host", "gw.example", "--management", "/_gateway"],
        ["--management-port", "0", "--management-host", "0.0.0.0"],
    ],
    ids=["any-v4", "any-v6", "a-name", "management-host"],
)
def test_a_weak_token_beyond_loopback_is_refused(
    tmp_path: Path, token: str, where: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if "--management-port" in where:
        where = [*where[:1], str(free_port()), *where[2:]]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "ASGI_WS_GATEWAY_ADMIN_TOKEN": token}
    if where[1] == "0.0.0.0":  # by the command line, in that environment alone
        done = subprocess.run([*RUN, _config(tmp_path), *where], env=env, capture_output=True, text=True, timeout=60)
    else:  # cli.main in this process: a process's start and the server's imports were most of a refusal's time
        for name in [name for name in os.environ if name.startswith(("ASGI_WS_GATEWAY_", "OTEL_"))]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("ASGI_WS_GATEWAY_ADMIN_TOKEN", token)
        done = subprocess.CompletedProcess(RUN, *main_in_process("run", _config(tmp_path), *where))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "ASGI_WS_GATEWAY_ADMIN_TOKEN" in done.stderr and "beyond this host" in done.stderr, done.stderr
    assert token not in done.stderr + done.stdout


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_on_loopback_it_starts_with_a_warning(tmp_path: Path, host: str) -> None:
    command = [*RUN[1:], _config(tmp_path), "--host", host, "--management", "/_gateway"]
    env = {"ASGI_WS_GATEWAY_ADMIN_TOKEN": "zq7k"}
    with ready_server(lambda port: [*command, "--port", str(port)], env=env) as server:
        server.stop()
        assert "the admin token is 4 characters: guessable" in server.output()


def test_a_strong_token_starts_anywhere(tmp_path: Path) -> None:
    command = [*RUN[1:], _config(tmp_path), "--host", "0.0.0.0", "--management", "/_gateway"]
    with ready_server(lambda port: [*command, "--port", str(port)], env={"ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32}):
        pass
