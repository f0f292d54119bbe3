"""The worst values of ``run``'s and ``connect``'s options: a usage error (exit 2) naming the option, before
anything starts; never a traceback, a fork bomb, or a server that cannot log.

The config file given does not exist: should an option pass by mistake, the run stops at the file
(another message), never starting a server.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from asgi_ws_gateway.cli import main
from support.processes import EXE

CPUS = len(os.sched_getaffinity(0))
ARGUMENTS = {
    "--port 65536": ("--port", "65536", "argument --port: 65536 is not a port (0 to 65535)"),
    "--port -1": ("--port", "-1", "argument --port: -1 is not a port (0 to 65535)"),
    "--port x": ("--port", "x", "argument --port: 'x' is not a whole number"),
    "--management-port 0": ("--management-port", "0", "argument --management-port: 0 is not a port (1 to 65535)"),
    "--management /": ("--management", "/", "argument --management: '/': a path of its own, e.g. /_gateway"),
    "--redis-prefix {x}": (
        "--redis-prefix",
        "gw{x}",
        "argument --redis-prefix: 'gw{x}': letters, digits and _.:- only",
    ),
    "--redis-prefix empty": ("--redis-prefix", "", "argument --redis-prefix: '': letters, digits and _.:- only"),
    "--workers 0": ("--workers", "0", f"argument --workers: 0: from 1 to {8 * CPUS}"),
    "--timeout-worker-healthcheck 0": (
        "--timeout-worker-healthcheck",
        "0",
        "argument --timeout-worker-healthcheck: 0: from 1 to 3600 seconds",
    ),
    "--timeout-worker-healthcheck 0.5": (
        "--timeout-worker-healthcheck",
        "0.5",
        "argument --timeout-worker-healthcheck: '0.5' is not a whole number",
    ),
    "--workers many": ("--workers", str(8 * CPUS + 1), f"argument --workers: {8 * CPUS + 1}: from 1 to {8 * CPUS}"),
}


@pytest.mark.parametrize(("option", "value", "message"), ARGUMENTS.values(), ids=ARGUMENTS.keys())
def test_run_refuses_a_port_or_worker_count_out_of_range_before_starting(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--workers 100000`` used to fork 100,000 processes; ``--port 70000`` ended in a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["run", "missing.yaml", option, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_connect_refuses_a_linger_that_never_ends(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["connect", "ws://127.0.0.1:9/x", "--linger", value])
    assert info.value.code == 2
    assert "argument --linger: " in capsys.readouterr().err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(["run", "missing.yaml", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


BROKEN_LOG_CONFIGS = {
    "bad.yaml": ("version: [1", "argument --log-config: {path}: ParserError: "),
    "bad.json": ('{"version": 1, "handlers": {"x": {"class": "no.such.Handler"}}}',
                 "argument --log-config: {path}: ValueError: Unable to configure handler 'x'"),
    "list.yaml": ("- just a list", "argument --log-config: {path}: "),
    "bad.ini": ("[loggers]\nkeys=root\n", "argument --log-config: {path}: "),
}  # fmt: skip


def _run_refused(*argv: str) -> str:
    """``run`` in a child process: applying a logging configuration changes the process's logging."""
    done = subprocess.run([str(EXE), "run", "missing.yaml", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize("name", BROKEN_LOG_CONFIGS)
def test_a_log_config_that_cannot_be_applied_is_a_usage_error(name: str, tmp_path: Path) -> None:
    """uvicorn applied it in the server and died with a traceback (exit 1)."""
    path = tmp_path / name
    text, message = BROKEN_LOG_CONFIGS[name]
    path.write_text(text)
    assert message.format(path=path) in _run_refused("--log-config", str(path))


def test_a_missing_log_config_is_a_usage_error(tmp_path: Path) -> None:
    for name in ("gone.yaml", "gone.ini"):
        err = _run_refused("--log-config", str(tmp_path / name))
        assert f"argument --log-config: {tmp_path / name}: FileNotFoundError" in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no.such:Protocol", "No module named 'no'"),
        ("asgi_ws_gateway.server:Nope", 'Attribute "Nope" not found'),
        ("json", 'must be in format "<module>:<attribute>"'),
    ],
)
def test_a_ws_protocol_that_does_not_import_is_a_usage_error(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "--ws", value)
    assert f"argument --ws: {value!r}: " in err and message in err and "websockets-sansio" in err


def test_an_unknown_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument --log-level: invalid choice: 'loud'" in _refused(capsys, "--log-level", "loud")


def test_a_ws_protocol_from_the_working_directory_imports(tmp_path: Path) -> None:
    """As uvicorn imports it: the working directory is on sys.path before the option is checked."""
    (tmp_path / "myproto.py").write_text("from uvicorn.protocols.websockets.wsproto_impl import WSProtocol\n")
    done = subprocess.run(
        [str(EXE), "run", "missing.yaml", "--ws", "myproto:WSProtocol"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--ws" not in done.stderr and "cannot read file" in done.stderr, done.stderr  # the next check failed


def test_a_management_port_equal_to_the_port_is_refused(tmp_path: Path) -> None:
    """Both sockets bound (SO_REUSEADDR), and every request on the public port was the management API's."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    done = subprocess.run(
        [str(EXE), "run", str(config), "--port", "18999", "--management-port", "18999"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "ASGI_WS_GATEWAY_ADMIN_TOKEN": "t" * 32},
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: --management-port must differ from --port" in done.stderr
