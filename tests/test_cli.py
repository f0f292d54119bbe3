"""The command line through its real entry point: check, schema, and run serving a config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from support.clients import connect
from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.upstream import UpstreamServer

ROOT = Path(__file__).parent.parent


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "asgi-ws-gateway"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_accepts_the_example_config_from_the_project_directory() -> None:
    result = _cli("check", "example_app/gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid, 2 API(s): echo, chat" in result.stdout


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apis:\n  - name: a\n    path: /a\n    upstreams: [htp://x]\n  - name: a\n    path: b\n")
    result = _cli("check", str(bad))
    assert result.returncode == 2
    assert "apis[0].upstreams[0]: 'htp://x' is not a ws://, wss:// or asgi: URL" in result.stderr
    assert "apis[1].upstreams: Field required" in result.stderr
    as_json = _cli("check", str(bad), "--json")
    assert as_json.returncode == 2
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert json.loads(as_json.stdout) == {"valid": False, "problems": lines}  # the README's shape


def test_check_json_of_a_valid_file_names_its_apis_and_warnings(tmp_path: Path) -> None:
    """``{"valid": true, "apis": [...], "warnings": [...]}``, as the README shows it."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert json.loads(_cli("check", "example_app/gateway.yaml", "--json").stdout) == {
        "valid": True,
        "apis": ["echo", "chat"],
        "warnings": [],
    }
    (warning,) = json.loads(_cli("check", str(empty), "--json").stdout)["warnings"]
    assert "no WebSocket APIs are configured" in warning


def test_schema_prints_the_published_schema() -> None:
    result = _cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == json.loads((ROOT / "schema" / "gateway.schema.json").read_text())


def test_usage_error_exits_2() -> None:
    assert _cli("frobnicate").returncode == 2


async def test_run_serves_a_config_in_front_of_an_upstream(tmp_path: Path, upstream: UpstreamServer) -> None:
    config = write_config(tmp_path, build_config(upstream))
    gateway = GatewayProcess([str(config)], cwd=tmp_path, workers=1)
    async with gateway, await connect(gateway.url("/ws/echo")) as ws:
        await ws.send("through the standalone gateway")
        assert await ws.recv() == "through the standalone gateway"
    assert gateway.returncode in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises SIGTERM


HEAVY = ("pydantic", "opentelemetry", "redis", "starlette", "asgi_ws_gateway.middleware", "asgi_ws_gateway.config")


def _imported_by(argv: list[str]) -> tuple[object, set[str]]:
    """The command's exit code, and the heavy packages in ``sys.modules`` once it has answered."""
    script = (
        "import json, sys\nfrom asgi_ws_gateway import cli\n"
        f"try:\n    code = cli.main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "loaded = {m if m.startswith('asgi_ws_gateway') else m.split('.')[0] for m in sys.modules}\n"
        f"print(json.dumps([code, sorted(loaded & set({HEAVY!r}))]))"
    )
    unreachable = {**os.environ, "ASGI_WS_GATEWAY_URL": "http://127.0.0.1:9/_gateway"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT, env=unreachable
    )
    code, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return code, set(loaded)


def test_the_management_commands_and_help_do_not_import_the_gateway() -> None:
    """The command line imported the whole gateway (pydantic, OpenTelemetry, Redis, starlette) for every
    command: 0.8 s before ``apis list`` sent its request. Only check, schema and run need it."""
    assert _imported_by(["--help"]) == (0, set())
    assert _imported_by(["apis", "list"]) == (1, set())  # tried the management API: cannot reach it
    code, loaded = _imported_by(["schema"])
    assert code == 0 and loaded >= {"pydantic", "asgi_ws_gateway.config"}  # the check is not vacuous


def test_the_package_names_import_when_first_read() -> None:
    import asgi_ws_gateway
    import asgi_ws_gateway.management as management

    for package in (asgi_ws_gateway, management):
        assert set(package.__all__) <= set(dir(package))
        assert all(getattr(package, name) is not None for name in package.__all__)
    assert asgi_ws_gateway.WebSocketGateway.__module__ == "asgi_ws_gateway.middleware"
    try:
        asgi_ws_gateway.NoSuchName  # type: ignore[attr-defined]  # noqa: B018  (mypy knows it is not there)
    except AttributeError as exc:
        assert "no attribute 'NoSuchName'" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
