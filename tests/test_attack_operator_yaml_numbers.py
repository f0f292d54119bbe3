"""Numbers YAML 1.1 and YAML 1.2 read differently, which PyYAML (1.1) took without a word:
``max_message_size: 010`` was 8 bytes, ``limit: 0100`` a limit of 64, ``idle_timeout: 1:30`` 90 seconds,
while a YAML 1.2 reader (Go's yaml.v3, a linter, a generator) and JSON read 10, 100 and text, and
``check`` said valid. Each is refused by file, line and field path; quoted, it is text.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from asgi_ws_gateway import ConfigError, load_config
from support.processes import EXE, cli_env
from support.servers import free_port

API = 'apis:\n  - name: a\n    path: /a\n    upstreams: ["ws://127.0.0.1:9/x"]\n'
PROBLEM = (
    "{file}:{line}:{column}: not valid YAML: {path}: {value} is {read} to this reader (YAML 1.1: octal or base 60) "
    "but not to YAML 1.2 or JSON: write the number in decimal, or quote it if it is text"
)
CASES = {
    "octal size": ("    max_message_size: 010\n", 5, 23, "apis[0].max_message_size", "010", 8),
    "octal limit": (
        "    policies: [{rate-limit-by-key: {key: k, limit: 0100, window: 60}}]\n",
        5, 52, "apis[0].policies[0].rate-limit-by-key.limit", "0100", 64,
    ),
    "base 60 timeout": ("    idle_timeout: 1:30\n", 5, 19, "apis[0].idle_timeout", "1:30", 90),
    "base 60 in a message": (
        "    message_policies: {inbound: [transform-message: {set: {at: 12:00}}]}\n",
        5, 64, "apis[0].message_policies.inbound[0].transform-message.set.at", "12:00", 720,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("text", "line", "column", "path", "value", "read"), CASES.values(), ids=CASES.keys())
def test_a_number_yaml_versions_read_differently_is_refused_by_line_and_path(
    tmp_path: Path, text: str, line: int, column: int, path: str, value: str, read: int
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + text)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [
        PROBLEM.format(file=config, line=line, column=column, path=path, value=value, read=read)
    ]


def test_check_and_run_refuse_it(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + "    max_message_size: 010\n")
    for args in (["check", str(config)], ["run", str(config), "--port", str(free_port())]):
        done = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=cli_env())
        assert done.returncode == 2 and "apis[0].max_message_size: 010 is 8 to this reader" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "text", ["    max_message_size: 10\n", "    max_message_size: 0x10\n", "    display_name: '010'\n",
             "    idle_timeout: 0.5\n", "    cooldown: 0\n"],
)  # fmt: skip
def test_numbers_every_reader_reads_alike_and_quoted_text_pass(tmp_path: Path, text: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(API + text)
    assert load_config(config).apis[0].name == "a"


def test_the_management_cli_names_the_file_line_and_field(tmp_path: Path) -> None:
    """The file is read before any request: one line naming it, not PyYAML's multi-line mark escaped."""
    api = tmp_path / "api.yaml"
    api.write_text('name: b\npath: /b\nupstreams: ["ws://127.0.0.1:9/"]\nmax_message_size: 010\n')
    env = cli_env(ASGI_WS_GATEWAY_URL=f"http://127.0.0.1:{free_port()}/_gateway")
    done = subprocess.run([str(EXE), "apis", "create", str(api)], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {api}:4:19: max_message_size: 010 is 8 to this reader (YAML 1.1: octal or base 60) but not to "
        "YAML 1.2 or JSON: write the number in decimal, or quote it if it is text\n",
    )
