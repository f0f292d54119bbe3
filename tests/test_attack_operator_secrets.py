"""A credential the operator wrote into a policy is never quoted by the error about it.

``check`` and ``run`` print every problem, and start-up errors end up in the service's journal. A
policy setting with the wrong type or length was quoted (``(got 'sk_live_...')``) although the
management API shows the same value as ``REDACTED``: the ``value`` of a ``set-header`` of
``X-Api-Key`` or ``Authorization``, the accepted keys of a ``check-header``, the ``value`` of a
``set-query-parameter`` of ``api_key``; and a ``Bearer``/``Basic`` credential in any quoted value.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from support.processes import EXE, cli_env, main_in_process
from support.servers import free_port

SECRET = "sk_live_S3CRETVALUE"
POLICIES = {
    "set-header X-Api-Key, too long": {"set-header": {"header": "X-Api-Key", "value": SECRET + "x" * 9000}},
    "set-header Authorization, a list": {"set-header": {"header": "Authorization", "value": [f"Basic {SECRET}=="]}},
    "check-header X-Api-Key, a mapping": {"check-header": {"header": "X-Api-Key", "values": {"partner": SECRET}}},
    "set-query-parameter api_key, a list": {"set-query-parameter": {"parameter": "api_key", "value": [SECRET]}},
    "a bearer token in a header not named so": {"set-header": {"header": "X-Upstream", "value": [f"Bearer {SECRET}"]}},
}


def _config(tmp_path: Path, policy: object) -> Path:
    path = tmp_path / "gateway.yaml"
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy]}
    path.write_text(yaml.safe_dump({"apis": [api]}))
    return path


def _output(*args: str, as_process: bool = True) -> tuple[int, str]:
    """The command's exit code and output: of the command line, or (not ``as_process``) of ``cli.main`` in this
    process, what it writes to stderr included (a process's start was most of a ``check``'s time)."""
    if not as_process:
        code, out, err = main_in_process(*args)
        return code, out + err
    done = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=cli_env())
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("name", POLICIES)
def test_check_names_the_field_and_never_the_secret(tmp_path: Path, name: str) -> None:
    path = _config(tmp_path, POLICIES[name])
    for args in (["check", str(path)], ["check", "--json", str(path)]):
        code, output = _output(*args, as_process=name == "set-header X-Api-Key, too long")  # one by the command line
        assert code == 2 and "apis[0].policies[0]." in output, output
        assert SECRET not in output


def test_run_refuses_it_at_start_up_without_the_secret(tmp_path: Path) -> None:
    path = _config(tmp_path, POLICIES["set-header X-Api-Key, too long"])
    code, output = _output("run", str(path), "--port", str(free_port()))
    assert code == 2, output
    assert "apis[0].policies[0].set-header.value: String should have at most 8192 characters" in output
    assert SECRET not in output


def test_a_value_that_is_no_credential_is_still_quoted(tmp_path: Path) -> None:
    """The quote is what makes most errors clear: only credentials lose it."""
    path = _config(tmp_path, {"set-header": {"header": "X-Tenant", "value": ["acme"]}})
    code, output = _output("check", str(path))
    assert (code, output.splitlines()[1]) == (
        2,
        "  apis[0].policies[0].set-header.value: Input should be a valid string (got ['acme'])",
    )


def test_the_management_cli_never_prints_the_urls_credentials() -> None:
    """``ASGI_WS_GATEWAY_URL`` with a proxy's password: the "cannot reach" error printed the URL whole."""
    url = f"http://admin:{SECRET}@127.0.0.1:{free_port()}/_gateway?token={SECRET}"
    done = subprocess.run([str(EXE), "apis", "list"], capture_output=True, text=True, timeout=60,
                          env=cli_env(ASGI_WS_GATEWAY_URL=url))  # fmt: skip
    assert done.returncode == 2 and "must not hold a user or password (user:password@)" in done.stderr  # refused unsent
    assert SECRET not in done.stdout + done.stderr
