"""A broken ``--log-config`` file is a usage error (exit 2) that never quotes the file's text.

A logging configuration holds credentials (an SMTP handler's login, an HTTP handler's ``?api_key=``).
PyYAML's error quoted the line around the problem (``credentials: [ops, PASSWORD]``); configparser's
quoted a line or a raw value; an INI ``args=`` that does not parse as Python was a traceback and exit
1, its source line printed. The error now names the file, the line and column where the parser knows
them, and the problem.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.processes import EXE
from support.servers import free_port

SECRET = "SEKRIT-LOGCFG-81"
INI_HEAD = "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n[logger_root]\nhandlers=h\n[handler_h]\n"
BROKEN = {
    "yaml flow mapping": (
        "logging.yaml",
        "version: 1\nhandlers:\n  mail: {class: logging.handlers.SMTPHandler, mailhost: smtp, "
        f"credentials: [ops, {SECRET}] secure: []}}\n",
        "expected ',' or '}', but got '<scalar>' (line 3, column 100)",
    ),
    "yaml mapping value": ("logging.yaml", f"version: 1\nhandlers:\n  mail:\n    password: {SECRET}: x\n", "line 4"),
    "yaml unclosed quote": ("logging.yml", f'version: 1\nhandlers:\n  mail:\n    password: "{SECRET}\n', "line 5"),
    "ini args unclosed": (
        "logging.ini",
        INI_HEAD + f'class=logging.handlers.SMTPHandler\nargs=("smtp", "a@b", ["c@d"], "s", ("ops", "{SECRET}"), (\n',
        "SyntaxError",
    ),
    "ini args name": (
        "logging.ini",
        INI_HEAD + f"class=StreamHandler\nargs=({SECRET.replace('-', '_')},)\n",
        "NameError",
    ),
    "ini no section": ("logging.ini", f"password = {SECRET}\n[loggers]\nkeys=root\n", "line 1"),
    "ini bad line": ("logging.ini", f"[loggers]\nkeys=root\n{SECRET}\n", "line 3"),
    "ini interpolation": ("logging.ini", INI_HEAD + f"class=StreamHandler\nargs=('%(x)s', '{SECRET}')\n", "section"),
    "ini handler raises": (
        "logging.ini",
        INI_HEAD + f"class=FileHandler\nargs=('/nonexistent-dir/{SECRET}/log',)\n",
        "FileNotFoundError",
    ),
}


@pytest.mark.parametrize(("name", "text", "where"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_log_config_is_a_usage_error_without_its_text(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    """Exit 2, one ``error:`` line naming the file and the place; no secret, no traceback."""
    (tmp_path / name).write_text(text)
    (tmp_path / "gateway.yaml").write_text("apis: []\n")
    done = subprocess.run(
        [str(EXE), "run", "gateway.yaml", "--port", str(free_port()), "--log-config", name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"argument --log-config: {name}: " in done.stderr
    assert where in done.stderr
    assert "Traceback" not in output
    assert SECRET not in output and SECRET.replace("-", "_") not in output, output
