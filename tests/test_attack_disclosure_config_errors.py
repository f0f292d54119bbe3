"""Attacks on what the gateway shows: a credential pasted into a configuration field named as one.

A subscription's ``key_sha256`` takes the key's SHA-256, never the key; an operator who pasted the
key itself read it back in ``check``'s error (``String should match pattern ... (got 'the-key')``),
and ``check`` and ``run`` write their errors to terminals, CI logs and the service's journal.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from support.processes import EXE, cli_env
from support.servers import free_port

KEY = "SEKRIT-PLAINKEY-110"


def _config(tmp_path: Path, key: object) -> Path:
    path = tmp_path / "gateway.yaml"
    config = {
        "apis": [{"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"]}],
        "products": [{"name": "gold", "apis": ["a"]}],
        "subscriptions": [{"id": "s1", "product": "gold", "key_sha256": key}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _output(*args: str) -> tuple[int, str]:
    done = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=cli_env())
    return done.returncode, done.stdout + done.stderr


def test_check_and_run_name_a_pasted_key_without_quoting_it(tmp_path: Path) -> None:
    """The key where its hash goes: the field and what is wrong, by ``check`` (text and JSON) and ``run``."""
    path = _config(tmp_path, KEY)
    for args in (["check", str(path)], ["check", "--json", str(path)], ["run", str(path), "--port", str(free_port())]):
        code, output = _output(*args)
        assert code == 2, (args, output)
        assert "subscriptions[0].key_sha256: String should match pattern" in output, (args, output)
        assert KEY not in output, (args, output)


def test_a_key_of_the_wrong_type_is_not_quoted_either(tmp_path: Path) -> None:
    """A list (or any value) in ``key_sha256``: named, not quoted."""
    code, output = _output("check", str(_config(tmp_path, [KEY])))
    assert code == 2 and "subscriptions[0].key_sha256: Input should be a valid string" in output, output
    assert KEY not in output, output
