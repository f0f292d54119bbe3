"""The management API never loads code, files or environment variables the operator did not allow.

Every attack goes through the real HTTP API (real uvicorn); each asserts the exact 422, that the
bait module's import-time code did not run, and that nothing was written to the state file.
"""

from __future__ import annotations

import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asgi_ws_gateway
from asgi_ws_gateway.config.parsing import is_asgi_app
from support.clients import connect
from support.management import Managed, api, managed_gateway
from support.syspath import prepend_sys_path
from support.upstream import UpstreamServer

BAIT = "bait_module_for_management"
BAIT_CODE = """
import pathlib, sys
pathlib.Path({marker!r}).write_text("imported")
async def app(scope, receive, send):
    pass
async def transform(message):
    return message
"""


async def echo_fn(message: Any) -> Any:
    return message


@pytest.fixture
def bait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module on sys.path whose import writes a marker file; yields the marker's path."""
    marker = tmp_path / "imported.marker"
    package = tmp_path / "bait"
    package.mkdir()
    (package / f"{BAIT}.py").write_text(BAIT_CODE.format(marker=str(marker)))
    prepend_sys_path(monkeypatch, str(package))
    sys.modules.pop(BAIT, None)
    yield marker
    sys.modules.pop(BAIT, None)


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


def _not_imported(marker: Path) -> None:
    assert not marker.exists(), "the bait module's import-time code ran"
    assert BAIT not in sys.modules


async def _refused(managed: Managed, method: str, route: str, body: Any, problem: str) -> list[str]:
    """Send the request; assert 422 with a problem matching ``problem`` and no state written."""
    before = managed.state.read_bytes() if managed.state.exists() else None
    async with managed.http() as http:
        response = await http.request(method, route, json=body)
    assert response.status_code == 422, response.text
    problems: list[str] = response.json()["problems"]
    assert any(re.search(problem, p) for p in problems), problems
    assert (managed.state.read_bytes() if managed.state.exists() else None) == before
    return problems


ASGI_UPSTREAMS = [
    pytest.param({"app": f"{BAIT}:app"}, id="app-field"),
    pytest.param({"url": "ws://h/", "app": f"{BAIT}:app"}, id="app-field-with-url"),
    pytest.param(f"asgi:{BAIT}:app", id="string"),
    pytest.param({"url": f"asgi:{BAIT}:app"}, id="mapping"),
    pytest.param({"url": f"asgi:{BAIT}:app", "path": "/inner"}, id="mapping-with-path"),
]


@pytest.mark.parametrize("upstream_value", ASGI_UPSTREAMS)
async def test_create_api_with_asgi_upstream_is_refused_before_import(
    managed: Managed, bait: Path, upstream_value: Any
) -> None:
    """POST /apis with an asgi: upstream: 422 naming the field, the module never imported."""
    body = {"name": "evil", "path": "/ws/evil", "upstreams": [upstream_value]}
    problems = await _refused(managed, "POST", "apis", body, r"^upstreams\[0\]: (importing .* is not allowed|app is)")
    assert len(problems) == 1
    _not_imported(bait)


async def test_replace_file_api_with_asgi_upstream_is_refused(managed: Managed, bait: Path) -> None:
    """PUT over the file's API, second upstream in-process: refused, the file API unchanged."""
    body = {"path": "/ws/echo", "upstreams": ["ws://127.0.0.1:1/", f"asgi:{BAIT}:app"]}
    await _refused(managed, "PUT", "apis/echo", body, r"^upstreams\[1\]: importing")
    _not_imported(bait)


@pytest.mark.parametrize("target", ["os:system", "builtins:exec", "subprocess:Popen", "os.path:join"])
async def test_already_imported_callables_are_refused(managed: Managed, target: str) -> None:
    """asgi:os:system and friends (modules loaded anyway): still 422, never 201."""
    body = {"name": "evil", "path": "/ws/evil", "upstreams": [f"asgi:{target}"]}
    await _refused(managed, "POST", "apis", body, r"^upstreams\[0\]: importing .* is not allowed")


@pytest.mark.parametrize("url", ["asgi:os", "asgi:", "asgi::system", "asgi:os:", "asgi:../x:app", "asgi:os:sys tem"])
async def test_malformed_asgi_targets_are_refused(managed: Managed, url: str) -> None:
    """Malformed asgi: targets are a syntax error (422), whatever the gate says."""
    body = {"name": "evil", "path": "/ws/evil", "upstreams": [url]}
    await _refused(managed, "POST", "apis", body, r"^upstreams\[0\]: ")


def _message_policy(policy: dict[str, Any]) -> dict[str, Any]:
    return {"message_policies": {"inbound": [policy]}}


async def test_transform_call_in_api_is_refused_before_import(managed: Managed, bait: Path) -> None:
    """transform-message call: module:function in an API: 422, not imported."""
    body = _api("t", "/ws/t", managed, **_message_policy({"transform-message": {"call": f"{BAIT}:transform"}}))
    await _refused(managed, "POST", "apis", body, r"message_policies\.inbound\[0\]\.transform-message\.call: importing")
    _not_imported(bait)


async def test_transform_call_in_product_is_refused_before_import(managed: Managed, bait: Path) -> None:
    """The same function through a product's message policies: 422, not imported."""
    body = {"name": "p", "apis": ["echo"], **_message_policy({"transform-message": {"call": f"{BAIT}:transform"}})}
    await _refused(managed, "POST", "products", body, r"transform-message\.call: importing")
    _not_imported(bait)


FILE_READS = [
    pytest.param({"validate-jwt": {"algorithms": ["RS256"], "public_key_files": ["/etc/hostname"]}},
                 r"validate-jwt\.public_key_files\[0\]: reading file '/etc/hostname' is not allowed", id="pem-file"),
    pytest.param({"validate-jwt": {"algorithms": ["HS256"], "secret_env": "HOME"}},
                 r"validate-jwt\.secret_env: reading environment variable 'HOME' is not allowed", id="secret-env"),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "problem"), FILE_READS)
async def test_handshake_policies_cannot_read_files_or_env(managed: Managed, policy: Any, problem: str) -> None:
    """validate-jwt PEM files and secret_env, in an API's policies: 422, nothing read."""
    await _refused(managed, "POST", "apis", _api("j", "/ws/j", managed, policies=[policy]), problem)


async def test_product_policies_cannot_read_files(managed: Managed) -> None:
    """The same file read through a product's handshake policies: 422."""
    policy = {"validate-jwt": {"algorithms": ["RS256"], "public_key_files": ["/etc/passwd"]}}
    await _refused(managed, "POST", "products", {"name": "p", "apis": ["echo"], "policies": [policy]},
                   r"public_key_files\[0\]: reading file '/etc/passwd' is not allowed")  # fmt: skip


_REF_REFUSED = r"schema: not a valid JSON Schema: .*(is not allowed through the management API|is not a local file)"
SCHEMAS = [
    pytest.param({"validate-message": {"schema_file": "/etc/hostname"}}, r"schema_file: reading file", id="file"),
    pytest.param({"validate-message": {"schema": {"$ref": "file:///etc/hostname"}}}, _REF_REFUSED, id="ref-file"),
    pytest.param({"validate-message": {"schema": {"items": {"$ref": "file:///etc/passwd#/x"}}}}, _REF_REFUSED,
                 id="nested-ref-file"),
    pytest.param({"validate-message": {"schema": {"properties": {"a": {"$ref": "http://127.0.0.1:9/s.json"}}}}},
                 _REF_REFUSED, id="ref-url"),
    pytest.param({"validate-message": {"schema": {"$id": "http://127.0.0.1:9/b/", "$ref": "o.json"}}}, _REF_REFUSED,
                 id="ref-relative-to-id"),
    pytest.param({"validate-message": {"schema": {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "file:///etc/passwd"}}}}},
                 _REF_REFUSED, id="ref-through-defs"),
    pytest.param({"validate-message": {"schema": {"$schema": "http://127.0.0.1:9/meta"}}}, r"schema: not a valid JSON",
                 id="schema-url"),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "problem"), SCHEMAS)
async def test_json_schemas_cannot_reach_files_or_urls(managed: Managed, policy: Any, problem: str) -> None:
    """validate-message schema_file and external $refs (file:, http:): 422, nothing read."""
    body = _api("s", "/ws/s", managed, **_message_policy(policy))
    await _refused(managed, "POST", "apis", body, problem)


async def test_ca_bundle_path_is_refused(managed: Managed) -> None:
    """A wss:// upstream's ca_bundle is a file read: 422."""
    body = {"name": "w", "path": "/ws/w", "upstreams": [{"url": "wss://127.0.0.1:1/", "ca_bundle": "/etc/passwd"}]}
    await _refused(managed, "POST", "apis", body, r"^upstreams\[0\]: reading file '/etc/passwd' is not allowed")


async def test_operator_allowed_module_is_served(upstream: UpstreamServer, tmp_path: Path) -> None:
    """allowed_asgi_upstreams=[module:attr]: that app is creatable and serves; another one is not."""
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    allowed = ["support.apps:echo_app"]
    with managed_gateway(config, tmp_path / "s.json", allowed_asgi_upstreams=allowed) as managed:
        async with managed.http() as http:
            ok = await http.post(
                "apis", json={"name": "in", "path": "/ws/in", "upstreams": ["asgi:support.apps:echo_app"]}
            )
            assert ok.status_code == 201, ok.text
            other = await http.post(
                "apis", json={"name": "x", "path": "/ws/x", "upstreams": ["asgi:support.apps:_http"]}
            )
            assert other.status_code == 422
        async with await connect(managed.url("/ws/in")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_allowed_module_object_must_be_an_asgi_app(upstream: UpstreamServer, tmp_path: Path) -> None:
    """Allowing the module os does not make os.system an app: 422 with the field path."""
    config = {"apis": [api("echo", "/ws/echo", upstream)]}
    with managed_gateway(config, tmp_path / "s.json", allowed_asgi_upstreams=["os"]) as managed:
        body = {"name": "x", "path": "/ws/x", "upstreams": ["asgi:os:system"]}
        await _refused(managed, "POST", "apis", body, r"^upstreams\[0\]: 'os:system' is not an ASGI app")


async def test_file_config_loads_stay_allowed(upstream: UpstreamServer, tmp_path: Path) -> None:
    """The file's own in-process app and transform function keep working across management changes."""
    transform = {"transform-message": {"call": f"{__name__}:echo_fn"}}
    config = {
        "apis": [
            {"name": "in", "path": "/ws/in", "upstreams": ["asgi:support.apps:echo_app"]},
            api("echo", "/ws/echo", upstream, message_policies={"inbound": [transform]}),
        ]
    }
    with managed_gateway(config, tmp_path / "s.json") as managed:
        async with managed.http() as http:
            created = await http.post("apis", json=api("more", "/ws/more", upstream))
            assert created.status_code == 201, created.text
        async with await connect(managed.url("/ws/in")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


def _api(name: str, path: str, managed: Managed, **fields: Any) -> dict[str, Any]:
    """An API body proxying to the file API's upstream."""
    return {"name": name, "path": path, "upstreams": [managed.gateway.config.apis[0].upstreams[0].url], **fields}


def test_is_asgi_app() -> None:
    """Async functions and objects with an async __call__ are apps; os.system, classes, sync callables are not."""
    import os

    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    async def fn(scope: Any, receive: Any, send: Any) -> None: ...

    assert is_asgi_app(fn) and is_asgi_app(App())
    assert not any(is_asgi_app(x) for x in (os.system, App, print, len, "x", None))


ALLOWED_LOADERS = {
    # file: why it may import by name, read files or the environment itself
    "loading.py": "the gate",
    "config/files.py": "reads the configuration file the operator named",
    "cli.py": "command line",
    "management/cli.py": "command line",
    "management/standalone.py": "reads its settings from the environment the operator set",
    "standalone.py": "reads its settings from the environment the operator set",
    "management/store.py": "the state file",
    "management/console.py": "its own static files",
    "management/__init__.py": "lazy imports of its own submodules",
    "_lazy.py": "the package's exports, from the modules a fixed table in the source names (no name from input)",
    "telemetry/providers.py": "OTEL_* environment variables",
    "telemetry/environment.py": "OTEL_* environment variables (checks the numbers providers.py passes it)",
    "telemetry/exporter_files.py": "the OTLP exporters' TLS files the OTEL_* variables name (from providers.py)",
    "telemetry/native.py": "ASGI_WS_GATEWAY_PURE_PYTHON, whether the optional C modules are left unused",
    "plugins.py": "the operator's plugins (config file or --plugin); the management API imports none",
    "server/head_deadline.py": "its request-head timeout from the environment the operator set",
    "server/startup_output.py": "a replacement worker's start-up output, in temporary files its supervisor made",
    "startup.py": "whether the standalone gateway's variables are set where nothing reads them (warned of by name)",
}
_LOADS = re.compile(
    # builtins only: a method called eval (Redis's EVAL of a Lua script) is not Python's eval
    r"import_module|__import__|read_text\(|read_bytes\(|(?<!def )(?<![.\w])open\(|environ|getenv"
    r"|(?<![.\w])exec\(|(?<![.\w])eval\("
)


def _code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a module's code, strings and comments blanked out (docstring examples are not code)."""
    lines = path.read_text().splitlines()
    with path.open("rb") as source:
        for token in tokenize.tokenize(source.readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT) and token.start[0] == token.end[0]:
                row = token.start[0] - 1
                lines[row] = (
                    lines[row][: token.start[1]] + " " * (token.end[1] - token.start[1]) + lines[row][token.end[1] :]
                )
            elif token.type == tokenize.STRING:
                for row in range(token.start[0] - 1, token.end[0]):
                    lines[row] = ""
    yield from enumerate(lines, 1)


def test_only_the_loading_module_loads_by_name() -> None:
    """No module outside the allowed ones imports by name or reads files/env: new fields must use loading."""
    root = Path(asgi_ws_gateway.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        name = path.relative_to(root).as_posix()
        if name in ALLOWED_LOADERS:
            continue
        offenders += [f"{name}:{n}: {line.strip()}" for n, line in _code_lines(path) if _LOADS.search(line)]
    assert offenders == []


def test_the_source_scan_finds_loads(tmp_path: Path) -> None:
    """The scan above sees a real import by name and ignores one in a docstring."""
    module = tmp_path / "m.py"
    module.write_text('"""importlib.import_module(x)"""\nimport importlib\nf = importlib.import_module("os")\n')
    assert [n for n, line in _code_lines(module) if _LOADS.search(line)] == [3]


def test_file_config_imports_nothing_when_invalid(bait: Path) -> None:
    """An invalid file config naming an in-process app and a transform function imports neither."""
    from asgi_ws_gateway import ConfigError, load_config

    transform = {"transform-message": {"call": f"{BAIT}:transform"}}
    config = {
        "apis": [
            {
                "name": "a",
                "path": "/a",
                "upstreams": [f"asgi:{BAIT}:app"],
                "message_policies": {"inbound": [transform]},
            },
            {"name": "b", "path": "/a", "upstreams": ["ws://h/"]},  # overlaps: only found by the cross checks
        ]
    }
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == ["apis[1].path: '/a' overlaps apis[0].path '/a'"]
    _not_imported(bait)
    config["apis"] = config["apis"][:1]
    loaded = load_config(config)  # valid: now both are imported, after validation
    assert bait.exists() and loaded.apis[0].upstreams[0].app is sys.modules[BAIT].app


_API = {"name": "a", "path": "/a", "upstreams": ["ws://h/"]}


def test_file_config_checks_the_imported_function_after_validation(tmp_path: Path) -> None:
    """A transform target that is not an async function is still a field-path error (after import)."""
    from asgi_ws_gateway import ConfigError, load_config

    policy = {"transform-message": {"call": "os.path:join"}}
    with pytest.raises(ConfigError) as info:
        load_config(
            {"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://h/"], "message_policies": {"inbound": [policy]}}]}
        )
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("apis[0].message_policies.inbound[0].transform-message.call: ")


async def test_refusal_is_logged_once_as_a_warning(
    managed: Managed, bait: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused load is one WARNING naming the field (no traceback); the request line is INFO."""
    body = {"name": "evil", "path": "/ws/evil", "upstreams": [f"asgi:{BAIT}:app"]}
    with caplog.at_level("INFO", logger="asgi_ws_gateway"):
        await _refused(managed, "POST", "apis", body, r"importing")
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("asgi_ws_gateway")]
    assert len(warnings) == 1 and "upstreams[0]: importing" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert any(r.levelname == "INFO" and "422" in r.getMessage() for r in caplog.records)


async def test_config_file_can_allow_a_module(upstream: UpstreamServer, tmp_path: Path) -> None:
    """management.allowed_asgi_upstreams in the file (for `run` users): a whole module allowed."""
    config = {"apis": [api("echo", "/ws/echo", upstream)], "management": {"allowed_asgi_upstreams": ["support.apps"]}}
    with managed_gateway(config, tmp_path / "s.json") as managed:
        async with managed.http() as http:
            ok = await http.post(
                "apis", json={"name": "in", "path": "/ws/in", "upstreams": ["asgi:support.apps:echo_app"]}
            )
            assert ok.status_code == 201, ok.text
            other = await http.post(
                "apis", json={"name": "x", "path": "/ws/x", "upstreams": ["asgi:support.upstream:x"]}
            )
            assert other.status_code == 422


def test_config_file_allowed_entries_are_validated() -> None:
    """A malformed allowed entry is a ConfigError by field path; nothing is imported to check it."""
    from asgi_ws_gateway import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config({"management": {"allowed_asgi_upstreams": ["ok.module:app", "../evil", "a:"]}})
    assert [p.split(":")[0] for p in info.value.problems] == [
        "management.allowed_asgi_upstreams[1]",
        "management.allowed_asgi_upstreams[2]",
    ]
