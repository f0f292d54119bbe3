"""Plugins through the real command line: ``check``, ``schema`` and ``run --workers 2`` (every worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from support.clients import connect, expect_close, expect_status
from support.configs import UNUSED_UPSTREAM, build_config, write_config
from support.plugins import assert_example_plugin_works, write_plugin
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

ROOT = Path(__file__).parent.parent
EXE = Path(sys.executable).parent / "asgi-ws-gateway"
WORKERS = 2

needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGI_WS_GATEWAY_")}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def _config(tmp_path: Path, document: dict[str, Any]) -> str:
    return write_config(tmp_path, document).name


def _gated(upstream: str = UNUSED_UPSTREAM, **settings: Any) -> dict[str, Any]:
    api = {"policies": [{"tenant-gate": settings}], "message_policies": {"inbound": [{"teapot": {}}]}}
    return build_config(upstream, name="gated", path="/ws/gated", api=api)


def test_check_knows_the_example_plugins_types() -> None:
    """example_app/gateway.yaml names its plugin: valid; the same policies without it: the issue's error."""
    result = _cli("check", "example_app/gateway.yaml")
    assert (result.returncode, result.stdout) == (0, "example_app/gateway.yaml: valid, 2 API(s): echo, chat\n")


def test_check_without_the_plugin_reports_unknown_types(tmp_path: Path) -> None:
    result = _cli("check", _config(tmp_path, _gated()), cwd=tmp_path)
    assert result.returncode == 2
    assert "apis[0].policies[0]: unknown policy type 'tenant-gate' (known: " in result.stderr


@pytest.mark.parametrize("how", ["config", "option"])
def test_check_imports_a_plugin_from_the_working_directory(tmp_path: Path, how: str) -> None:
    """As uvicorn does for apps: the module beside the config, named in plugins: or by --plugin."""
    name = write_plugin(tmp_path)
    if how == "config":
        result = _cli("check", _config(tmp_path, {"plugins": [name], **_gated()}), cwd=tmp_path)
    else:
        result = _cli("check", _config(tmp_path, _gated()), "--plugin", name, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "gateway.yaml: valid, 1 API(s): gated\n"), result.stderr


@pytest.mark.parametrize("how", ["config", "option"])
def test_check_gives_field_paths_in_a_custom_policys_settings(tmp_path: Path, how: str) -> None:
    name = write_plugin(tmp_path)
    config = {**_gated(status=99, colour="red")}
    config["apis"][0]["message_policies"]["inbound"] = [{"teapot": {"word": 7}}]
    plugin_args = ["--plugin", name] if how == "option" else []
    if how == "config":
        config["plugins"] = [name]
    result = _cli("check", _config(tmp_path, config), "--json", *plugin_args, cwd=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"valid": False, "problems": [
        "apis[0].message_policies.inbound[0].teapot.word: Input should be a valid string (got 7)",
        "apis[0].policies[0].tenant-gate.status: Input should be greater than or equal to 400 (got 99)",
        "apis[0].policies[0].tenant-gate.colour: unknown field",
    ]}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "error"),
    [(None, "ModuleNotFoundError: No module named '{name}'"),
     ("raise ImportError('needs libtenant.so')\n", "ImportError: needs libtenant.so"),
     ("x = 1 +\n", "SyntaxError: ")],
    ids=["missing", "raises", "syntax"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["config", "option"])
def test_check_stops_with_exit_2_naming_a_plugin_that_fails_to_import(
    tmp_path: Path, source: str | None, error: str, how: str
) -> None:
    """Text from a config's plugins:, JSON (--json) from --plugin: the same problem, and nothing after it."""
    name = write_plugin(tmp_path, source) if source is not None else "tenant_plugin_absent"
    if how == "config":
        result = _cli("check", _config(tmp_path, {"plugins": [name], **_gated()}), cwd=tmp_path)
        where, problems = "plugins[0]", result.stderr.splitlines()[1:]
    else:
        result = _cli("check", _config(tmp_path, _gated()), "--json", "--plugin", name, cwd=tmp_path)
        where, problems = f"--plugin {name}", json.loads(result.stdout)["problems"]
    assert result.returncode == 2
    (problem,) = problems  # it stops there: no cascade of unknown policy types
    assert problem.strip().startswith(f"{where}: cannot import '{name}': {error.format(name=name)}")
    assert "Traceback" not in result.stderr


def test_run_stops_with_exit_2_naming_a_plugin_that_fails_to_import(tmp_path: Path) -> None:
    """Before uvicorn starts: no worker is spawned for a config that cannot load."""
    name = write_plugin(tmp_path, "raise RuntimeError('broken on purpose')\n")
    result = _cli("run", _config(tmp_path, {"plugins": [name], **_gated()}), "--port", "9", cwd=tmp_path)
    assert result.returncode == 2
    assert f"plugins[0]: cannot import '{name}': RuntimeError: broken on purpose" in result.stderr
    assert "Traceback" not in result.stderr
    option = _cli("run", "gateway.yaml", "--plugin", "tenant_plugin_absent", "--port", "9", cwd=tmp_path)
    assert option.returncode == 2
    assert "--plugin tenant_plugin_absent: cannot import 'tenant_plugin_absent'" in option.stderr


def test_schema_includes_a_plugins_settings() -> None:
    plain = json.loads((ROOT / "schema" / "gateway.schema.json").read_text())["$defs"]  # = `schema` (test_cli)
    result = _cli("schema", "--plugin", "example_app.plugins")
    assert result.returncode == 0, result.stderr
    defs = json.loads(result.stdout)["$defs"]
    assert "RequireTenantPolicySettings" not in plain and "NoShoutingPolicySettings" not in plain
    assert set(defs["RequireTenantPolicySettings"]["properties"]) == {"name", "header", "tenants", "status",
                                                                      "allow_missing"}  # fmt: skip
    assert defs["RequireTenantPolicySettings"]["properties"]["status"]["minimum"] == 400
    assert defs["NoShoutingPolicySettings"]["properties"]["max_capitals"]["default"] == 10
    assert "require-tenant" in [next(iter(c["properties"])) for c in defs["Policy"]["oneOf"]]
    assert "no-shouting" in [next(iter(c["properties"])) for c in defs["MessagePolicy"]["oneOf"]]
    missing = _cli("schema", "--plugin", "example_app.nope")
    assert missing.returncode == 2 and missing.stdout == ""
    assert "--plugin example_app.nope: cannot import 'example_app.nope'" in missing.stderr


async def _on_every_worker(gateway: GatewayProcess, url: str, check: Any, **kw: Any) -> set[int]:
    """Open a connection on each worker in turn (pausing the one that took the last), run ``check`` on it."""
    held: list[ClientConnection] = []
    paused: list[int] = []
    try:
        for _ in range(WORKERS):
            ws = await connect(url, **kw)
            held.append(ws)
            owner = gateway.owner(ws.transport.get_extra_info("sockname")[1])
            await check(ws)
            os.kill(owner, signal.SIGSTOP)  # the next handshake can only be taken by another worker
            paused.append(owner)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        for ws in held:
            await ws.close()
    return set(paused)


@needs_proc
async def test_run_with_two_workers_serves_the_example_plugin_in_each() -> None:
    """`asgi-ws-gateway run example_app/gateway.yaml --workers 2`: each worker has imported the plugin."""
    async with GatewayProcess(["example_app/gateway.yaml"], cwd=ROOT, workers=WORKERS) as gateway:
        url = gateway.url("/ws/chat/workers")

        async def no_shouting(ws: ClientConnection) -> None:
            await ws.send("STOP SHOUTING AT ME PLEASE, EVERYONE")
            assert json.loads(await ws.recv())["policy"] == "no-shouting"

        served = await _on_every_worker(gateway, url, no_shouting, additional_headers={"X-Tenant": "globex"})
        assert len(served) == WORKERS  # two different workers admitted through the plugin's policies
        await assert_example_plugin_works(url)  # the same checks as in the example's app


@needs_proc
async def test_run_plugin_option_reaches_each_worker(tmp_path: Path, upstream: UpstreamServer) -> None:
    """`run --plugin MODULE --workers 2` from the plugin's directory: the workers import it too."""
    name = write_plugin(tmp_path)
    config = _config(tmp_path, _gated(upstream.url("/echo"), status=418))
    async with GatewayProcess([config, "--plugin", name], cwd=tmp_path, workers=WORKERS) as gateway:
        url = gateway.url("/ws/gated")

        async def refused_then_teapot(ws: ClientConnection) -> None:
            status, _, _ = await expect_status(url)  # a worker not paused answers: 418 from the plugin
            assert status == 418
            await ws.send("tea")
            assert await expect_close(ws) == (4418, "I am a teapot")

        served = await _on_every_worker(gateway, url, refused_then_teapot, additional_headers={"X-Tenant": "a"})
        assert len(served) == WORKERS
