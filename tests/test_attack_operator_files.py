"""Paths the operator names that are not configuration files: a FIFO, a device, a file too large, a
logging configuration nested too deeply. Each is one problem naming the path and what it is, exit 2
(7 for the state file, read at start-up), never a hang, a ``MemoryError`` or a traceback.

Every command runs as a real subprocess under a 2 GB address-space limit (``prlimit``) and a timeout:
before, a FIFO hung ``check`` and ``run`` for ever and ``/dev/zero`` was read until memory ran out.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from asgi_ws_gateway.loading import MAX_FILE_BYTES
from support.processes import EXE, cli_env
from support.servers import free_port

API = 'apis:\n  - name: a\n    path: /a\n    upstreams: ["ws://127.0.0.1:9/x"]\n'


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``asgi-ws-gateway ARGS`` with at most 2 GB of address space; a hang fails the test, not the suite."""
    command: Sequence[str] = ["prlimit", "--as=2000000000", str(EXE), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=cli_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} still running after {timeout} s")


def _special(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A path of ``kind`` and what the gateway says it is."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo.yaml")
        return str(tmp_path / "fifo.yaml"), "a FIFO, not a regular file"
    if kind == "device":
        return "/dev/zero", "a character device, not a regular file"
    big = tmp_path / "big.yaml"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    return str(big), f"larger than {MAX_FILE_BYTES:,} bytes"


KINDS = ["fifo", "device", "too large"]


@pytest.mark.parametrize("kind", KINDS)
def test_check_refuses_a_config_path_that_is_not_a_configuration_file(tmp_path: Path, kind: str) -> None:
    path, what = _special(tmp_path, kind)
    done = _run("check", path)
    assert (done.returncode, done.stdout + done.stderr) == (
        2,
        f"invalid gateway configuration in {path} (1 problem(s)):\n  cannot read file: {what}\n",
    )


def test_run_refuses_a_fifo_as_its_configuration_before_serving(tmp_path: Path) -> None:
    path, what = _special(tmp_path, "fifo")
    done = _run("run", path, "--port", str(free_port()))
    assert done.returncode == 2 and f"cannot read file: {what}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_a_schema_file_that_is_not_a_file_is_one_problem_by_field_path(tmp_path: Path, kind: str) -> None:
    path, what = _special(tmp_path, kind)
    config = tmp_path / "gateway.yaml"
    config.write_text(API + f"    message_policies: {{inbound: [validate-message: {{schema_file: {path}}}]}}\n")
    done = _run("check", str(config))
    field = "apis[0].message_policies.inbound[0].validate-message.schema_file"
    output = done.stdout + done.stderr
    assert done.returncode == 2 and f"  {field}: cannot read: {what}\n" in output, output


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("fifo.yaml", None, "OSError: [Errno 22] a FIFO, not a regular file"),
        ("fifo.ini", None, "OSError: [Errno 22] a FIFO, not a regular file"),
        ("deep.yaml", "version: 1\nx: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply to read"),
        ("deep.json", '{"version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
    ],
)
def test_a_log_config_that_cannot_be_read_is_a_usage_error(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    """A FIFO hung ``run`` before it printed anything; a deep file was a ``RecursionError`` traceback."""
    config = tmp_path / "gateway.yaml"
    config.write_text(API)
    log_config = tmp_path / name
    if text is None:
        os.mkfifo(log_config)
    else:
        log_config.write_text(text)
    done = _run("run", str(config), "--port", str(free_port()), "--log-config", str(log_config))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"argument --log-config: {log_config}: {message}" in done.stderr


def test_a_fifo_as_the_state_file_stops_start_up_with_exit_7(tmp_path: Path) -> None:
    """The state file is read at start-up: a FIFO there hung the server before it served anything."""
    config = tmp_path / "gateway.yaml"
    config.write_text(API)
    os.mkfifo(tmp_path / "state.json")
    port = str(free_port())
    done = _run(
        "run", str(config), "--port", port, "--management", "/_gateway", "--state", str(tmp_path / "state.json")
    )
    assert done.returncode == 7, done.stderr
    assert "cannot read the stored changes ([Errno 22] a FIFO, not a regular file" in done.stderr
