"""A plugin policy that cannot work: its constructor raises something other than ``ValueError``, or
its ``apply`` is not an ``async def``. Each is one problem by field path, found by ``check`` and before
``run`` serves; before, the first was a traceback (exit 1) and the second passed ``check`` and made
every handshake a 500 with a ``TypeError`` traceback in the log.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from support.processes import EXE, cli_env
from support.servers import free_port

PLUGIN = textwrap.dedent(
    """
    import functools

    from asgi_ws_gateway.policies import PolicySettings, register_policy

    class Settings(PolicySettings):
        fail: str = ""

    @register_policy("fragile")
    class Fragile:
        Settings = Settings

        def __init__(self, settings, env):
            self.name = "fragile"
            if settings.fail == "runtime":
                raise RuntimeError("cannot reach the licence server: token=LICENCE-S3CRET")
            if settings.fail == "key":
                raise KeyError("region")
            if settings.fail == "type":
                raise TypeError("expected a list")

        async def apply(self, context):
            return None

    def traced(apply):  # a decorator that is not async itself but hands back apply's coroutine
        @functools.wraps(apply)
        def wrapper(self, context):
            return apply(self, context)
        return wrapper

    @register_policy("decorated")
    class Decorated:
        Settings = Settings

        def __init__(self, settings, env):
            self.name = "decorated"

        @traced
        async def apply(self, context):
            return None

    @register_policy("synchronous")
    class Synchronous:
        Settings = Settings

        def __init__(self, settings, env):
            self.name = "synchronous"

        def apply(self, context):
            return None
    """
)


def _config(tmp_path: Path, policy: object) -> Path:
    (tmp_path / "fragile_plugin.py").write_text(PLUGIN)
    api = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"plugins": ["fragile_plugin"], "apis": [api]}))
    return path


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=60)


CASES = {
    "RuntimeError": (
        {"fragile": {"fail": "runtime"}},
        "apis[0].policies[0].fragile: the policy could not be built: RuntimeError: "
        "cannot reach the licence server: token=REDACTED",
    ),
    "KeyError": ({"fragile": {"fail": "key"}}, "the policy could not be built: KeyError: 'region'"),
    "TypeError": ({"fragile": {"fail": "type"}}, "the policy could not be built: TypeError: expected a list"),
    "sync apply": (
        {"synchronous": {}},
        "apis[0].policies[0].synchronous: the policy's apply is not an async def (a coroutine function)",
    ),
}


@pytest.mark.parametrize(("policy", "problem"), CASES.values(), ids=CASES.keys())
def test_check_names_a_plugin_policy_that_cannot_work(tmp_path: Path, policy: object, problem: str) -> None:
    done = _cli(tmp_path, "check", str(_config(tmp_path, policy)))
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert "invalid gateway configuration in" in done.stderr and problem in done.stderr
    assert "LICENCE-S3CRET" not in done.stderr


def test_run_refuses_a_synchronous_apply_before_serving(tmp_path: Path) -> None:
    done = _cli(tmp_path, "run", str(_config(tmp_path, {"synchronous": {}})), "--port", str(free_port()))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "the policy's apply is not an async def" in done.stderr


@pytest.mark.parametrize("policy", ["fragile", "decorated"])
def test_a_plugin_policy_that_works_is_still_valid(tmp_path: Path, policy: str) -> None:
    """An ``async def`` apply, also behind a ``functools.wraps`` decorator (a coroutine all the same)."""
    _config(tmp_path, {policy: {}})
    done = _cli(tmp_path, "check", "gateway.yaml")
    assert (done.returncode, done.stdout) == (0, "gateway.yaml: valid, 1 API(s): a\n"), done.stderr
