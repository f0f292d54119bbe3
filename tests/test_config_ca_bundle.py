"""A wss:// upstream's ``ca_bundle`` is loaded when the configuration is checked: a file that is not there,
not a regular file or holds no certificate is a problem by field path at start-up, not a traceback at the
first connection (``check`` passed such a file, and ``run`` died making the upstream's TLS context)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.errors import ConfigError
from support.configs import api_entry, write_config
from support.mtls import make_mutual_ca

WHERE = "apis[0].upstreams[0]: ca_bundle: "


def _problems(ca_bundle: Path) -> list[str]:
    upstream = {"url": "wss://127.0.0.1:1/", "ca_bundle": str(ca_bundle)}
    try:
        parse_config({"apis": [{"name": "a", "path": "/a", "upstreams": [upstream]}]})
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_bundle_of_cas_is_accepted(tmp_path: Path) -> None:
    assert _problems(make_mutual_ca(tmp_path).ca_file) == []


def _absent(directory: Path) -> Path:
    return directory / "absent.pem"


def _directory(directory: Path) -> Path:
    return directory


def _fifo(directory: Path) -> Path:
    os.mkfifo(directory / "ca.fifo")  # opened as OpenSSL would, check would wait for a writer for ever
    return directory / "ca.fifo"


def _not_pem(directory: Path) -> Path:
    (directory / "notes.pem").write_text("secret-looking-content-never-quoted\n")
    return directory / "notes.pem"


def _a_key(directory: Path) -> Path:
    return make_mutual_ca(directory).client("a").key


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "absent": (_absent, "cannot be read (No such file or directory)"),
    "a directory": (_directory, "cannot be read"),
    "a FIFO": (_fifo, "cannot be read (a FIFO, not a regular file)"),
    "not PEM": (_not_pem, "holds no PEM certificate"),
    "a private key": (_a_key, "holds no PEM certificate"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_unusable_bundle_is_named_by_its_field(tmp_path: Path, case: str) -> None:
    make, problem = CASES[case]
    problems = _problems(make(tmp_path))
    assert len(problems) == 1 and problems[0].startswith(WHERE + problem), problems
    assert "secret-looking-content" not in problems[0]
    assert "BEGIN" not in problems[0]


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_an_absent_bundle_without_a_traceback(tmp_path: Path, command: str) -> None:
    upstream = {"url": "wss://127.0.0.1:1/", "ca_bundle": str(tmp_path / "absent.pem")}
    config = write_config(tmp_path, {"apis": [{**api_entry(name="c", path="/c"), "upstreams": [upstream]}]})
    extra = ["--port", "0"] if command == "run" else []
    done = subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", command, str(config), *extra],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert WHERE + "cannot be read (No such file or directory)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
