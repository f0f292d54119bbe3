"""Plugins in this process: imported before validation, once, errors by name; never by the management API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette

from asgi_ws_gateway import ConfigError, WebSocketGateway, json_schema, load_config
from asgi_ws_gateway import plugins as plugins_module
from asgi_ws_gateway.plugins import MAX_MODULE, MAX_PLUGINS, PLUGINS_ENV, load_plugins, plugins_from_env
from asgi_ws_gateway.policies.base import REGISTRY
from asgi_ws_gateway.policies.message_base import MESSAGE_REGISTRY
from asgi_ws_gateway.standalone import CONFIG_ENV
from asgi_ws_gateway.standalone import create_app as create_standalone
from example_app.main import create_app as create_example_app
from support.clients import connect, expect_close, expect_status
from support.management import TOKEN, managed_gateway
from support.plugins import PREFIX, assert_example_plugin_works, imports_of, write_plugin
from support.servers import UvicornServer
from support.syspath import prepend_sys_path
from support.upstream import UpstreamServer


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for plugin modules; registries and loaded modules restored afterwards."""
    prepend_sys_path(monkeypatch, str(tmp_path))
    registries = dict(REGISTRY), dict(MESSAGE_REGISTRY)
    loaded = set(plugins_module._loaded)
    yield tmp_path
    for registry, saved in zip((REGISTRY, MESSAGE_REGISTRY), registries, strict=True):
        registry.clear()
        registry.update(saved)
    for name in [name for name in sys.modules if name.startswith(PREFIX)]:
        del sys.modules[name]
    plugins_module._loaded.intersection_update(loaded)


def _gated(plugin: str | None, upstream: str = "ws://127.0.0.1:9/", **settings: Any) -> dict[str, Any]:
    return {
        **({"plugins": [plugin]} if plugin else {}),
        "apis": [{"name": "gated", "path": "/ws/gated", "upstreams": [upstream],
                  "policies": [{"tenant-gate": settings}],
                  "message_policies": {"inbound": [{"teapot": {}}]}}],
    }  # fmt: skip


def _problems(config: Any, **options: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config, **options)
    return info.value.problems


def test_a_plugin_in_the_config_is_imported_before_its_policy_types_are_checked(plugin_dir: Path) -> None:
    """Without the plugin its types are unknown (the issue's failure); with it the config is valid."""
    problems = _problems(_gated(None))
    assert sorted(p.split(" (known: ")[0] for p in problems) == [
        "apis[0].message_policies.inbound[0]: unknown message policy type 'teapot'",
        "apis[0].policies[0]: unknown policy type 'tenant-gate'",
    ]
    name = write_plugin(plugin_dir)
    config = load_config(_gated(name))
    assert config.plugins == [name]
    assert "tenant-gate" in REGISTRY and "teapot" in MESSAGE_REGISTRY


def test_a_plugin_is_imported_once_per_process(plugin_dir: Path) -> None:
    name = write_plugin(plugin_dir)
    for _ in range(3):
        load_config(_gated(name))
    load_plugins([name, name], field="--plugin")
    assert imports_of(plugin_dir, name) == 1


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (_gated("{p}", status=200),
         "apis[0].policies[0].tenant-gate.status: Input should be greater than or equal to 400 (got 200)"),
        (_gated("{p}", status="loud"),
         "apis[0].policies[0].tenant-gate.status: Input should be a valid integer, unable to parse string as an "
         "integer (got 'loud')"),
        (_gated("{p}", hedaer="x-tenant"), "apis[0].policies[0].tenant-gate.hedaer: unknown field"),
        ({"plugins": ["{p}"], "policies": [{"tenant-gate": {"header": ["x"]}}]},
         "policies[0].tenant-gate.header: Input should be a valid string (got ['x'])"),
        ({"plugins": ["{p}"], "products": [{"name": "p", "policies": [{"tenant-gate": {"status": 600}}]}]},
         "products[0].policies[0].tenant-gate.status: Input should be less than or equal to 599 (got 600)"),
        ({"plugins": ["{p}"], "message_policies": {"outbound": [{"teapot": {"word": ""}}]}},
         "message_policies.outbound[0].teapot.word: String should have at least 1 character (got '')"),
    ],
    ids=["range", "type", "unknown-field", "global", "product", "message-policy"],
)  # fmt: skip
def test_a_custom_policys_settings_get_field_path_errors(plugin_dir: Path, config: Any, problem: str) -> None:
    name = write_plugin(plugin_dir)
    config = yaml.safe_load(yaml.safe_dump(config).replace("'{p}'", name))
    assert _problems(config) == [problem]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("raise RuntimeError('no licence file')\n", "RuntimeError: no licence file"),
        ("def broken(:\n", "SyntaxError: "),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("import not_a_module_anywhere_42\n", "ModuleNotFoundError: No module named 'not_a_module_anywhere_42'"),
        ("from asgi_ws_gateway.policies import register_policy\n@register_policy('x')\nclass X:\n    pass\n",
         "TypeError: policy type X needs a Settings pydantic model"),
    ],
    ids=["raises", "syntax", "exits", "imports-a-missing-module", "bad-registration"],
)  # fmt: skip
def test_a_plugin_that_fails_to_import_is_named_with_its_error(plugin_dir: Path, source: str, error: str) -> None:
    """The file's own error, by field path and module name; validation stops there (no cascade)."""
    name = write_plugin(plugin_dir, source)
    path = plugin_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(_gated(name)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"plugins[0]: cannot import '{name}': {error}")
    assert info.value.source == str(path)
    assert name not in plugins_module.loaded_plugins()


def test_every_missing_plugin_is_listed_by_index(plugin_dir: Path) -> None:
    good = write_plugin(plugin_dir)
    assert _problems({"plugins": ["nope_one", good, "example_app.nope_two"]}) == [
        "plugins[0]: cannot import 'nope_one': ModuleNotFoundError: No module named 'nope_one'",
        "plugins[2]: cannot import 'example_app.nope_two': ModuleNotFoundError: No module named 'example_app.nope_two'",
    ]


@pytest.mark.parametrize("name", ["a:b", "./plugin.py", ".relative", "", "two words", "x.", "1st", "os\n", "os\nsys"])
def test_a_plugin_must_be_an_absolute_module_name(name: str) -> None:
    (problem,) = _problems({"plugins": [name]})
    assert problem.startswith("plugins[0]: String should match pattern")
    with pytest.raises(ConfigError) as info:
        load_plugins([name], field="--plugin")
    assert info.value.problems == [f"--plugin {name}: '{name}' is not a module name (package.module)"]


@pytest.mark.parametrize(
    "value", ["example_app.plugins", {"module": "x"}, [["x"]]], ids=["string", "mapping", "nested"]
)
def test_plugins_must_be_a_list_of_names(value: Any) -> None:
    assert _problems({"plugins": value})[0].startswith("plugins")


def test_without_import_permission_nothing_is_imported(plugin_dir: Path) -> None:
    """import_plugins=False (the management API) refuses a module not loaded yet, and does not import it."""
    name = write_plugin(plugin_dir)
    assert _problems(_gated(name), import_plugins=False) == [
        f"plugins[0]: '{name}' is not loaded: plugins come only from the configuration file or --plugin at start-up"
    ]
    assert imports_of(plugin_dir, name) == 0 and name not in sys.modules
    load_config(_gated(name))
    assert load_config(_gated(name), import_plugins=False).plugins == [name]
    assert imports_of(plugin_dir, name) == 1


def test_the_schema_has_a_plugins_settings_and_only_once_loaded(plugin_dir: Path) -> None:
    before = json_schema()
    assert "TenantGatePolicySettings" not in before["$defs"]
    assert before["properties"]["plugins"]["items"]["pattern"] == plugins_module.MODULE_NAME
    load_plugins([write_plugin(plugin_dir)])
    defs = json_schema()["$defs"]
    assert defs["TenantGatePolicySettings"]["properties"]["status"] == {
        "default": 451, "maximum": 599, "minimum": 400, "title": "Status", "type": "integer"
    }  # fmt: skip
    assert defs["TenantGatePolicySettings"]["additionalProperties"] is False
    assert {"$ref": "#/$defs/TenantGatePolicySettings"} in [c["properties"].get("tenant-gate") for c in
                                                              defs["Policy"]["oneOf"]]  # fmt: skip
    assert "teapot" in [next(iter(c["properties"])) for c in defs["MessagePolicy"]["oneOf"]]
    assert "teapot" not in [next(iter(c["properties"])) for c in defs["Policy"]["oneOf"]]


def test_plugins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, " a.b, c,,d ")
    assert plugins_from_env() == ["a.b", "c", "d"]
    monkeypatch.delenv(PLUGINS_ENV)
    assert plugins_from_env() == []


def test_the_standalone_worker_imports_the_command_lines_plugins(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each ``run`` worker does: $ASGI_WS_GATEWAY_PLUGINS first, then the config that uses them."""
    name = write_plugin(plugin_dir)
    path = plugin_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(_gated(None)))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    with pytest.raises(ConfigError, match="unknown policy type 'tenant-gate'"):
        create_standalone()
    monkeypatch.setenv(PLUGINS_ENV, name)
    assert create_standalone().config.apis[0].name == "gated"
    monkeypatch.setenv(PLUGINS_ENV, "no_such_plugin_here")
    with pytest.raises(ConfigError, match="--plugin no_such_plugin_here: cannot import 'no_such_plugin_here'"):
        create_standalone()


def test_the_managed_standalone_worker_imports_the_command_lines_plugins(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --management``'s workers build the gateway the same way: the --plugin modules first."""
    from asgi_ws_gateway.management import standalone as managed

    path = plugin_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(_gated(None)))
    settings = {CONFIG_ENV: str(path), PLUGINS_ENV: write_plugin(plugin_dir), "ASGI_WS_GATEWAY_ADMIN_TOKEN": TOKEN,
                managed.STATE_ENV: str(plugin_dir / "state.json")}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in (managed.REDIS_ENV, managed.PORT_ENV, managed.PATH_ENV):
        monkeypatch.delenv(name, raising=False)
    assert managed.create_app().manager.gateway.config.apis[0].name == "gated"


async def test_the_same_plugin_policy_in_an_app(plugin_dir: Path, upstream: UpstreamServer) -> None:
    """A user's Starlette app naming the plugin in its config: 451 without a tenant, 4418 from the teapot."""
    app = Starlette()
    app.add_middleware(WebSocketGateway, config=_gated(write_plugin(plugin_dir), upstream.url("/echo")))
    with UvicornServer(app) as server:
        status, _, _ = await expect_status(server.url("/ws/gated"))
        assert status == 451
        async with await connect(server.url("/ws/gated"), additional_headers={"X-Tenant": "acme"}) as ws:
            await ws.send("coffee")
            assert await ws.recv() == "coffee"
            await ws.send("tea please")
            assert await expect_close(ws) == (4418, "I am a teapot")


async def test_the_example_plugin_in_the_example_app() -> None:
    """example_app's FastAPI app: its gateway.yaml names the plugin; the app itself imports nothing."""
    with UvicornServer(create_example_app()) as server:
        await assert_example_plugin_works(server.url("/ws/chat/plugins"))


async def test_the_management_api_never_imports_a_plugin(
    plugin_dir: Path, tmp_path: Path, upstream: UpstreamServer
) -> None:
    """A body naming plugins is refused (422) and nothing is imported; the file's plugin types stay usable."""
    loaded = write_plugin(plugin_dir)
    bait = write_plugin(plugin_dir)
    with managed_gateway(_gated(loaded, upstream.url("/echo")), tmp_path / "state.json") as managed:
        async with managed.http() as http:
            new = {"name": "more", "path": "/ws/more", "upstreams": [upstream.url("/echo")]}
            for method, target, body in [
                ("POST", "apis", {**new, "plugins": [bait]}),
                ("PUT", "apis/gated", {**_gated(None, upstream.url("/echo"))["apis"][0], "plugins": [bait]}),
                ("POST", "products", {"name": "p", "apis": ["gated"], "plugins": [bait]}),
            ]:
                response = await http.request(method, target, json=body)
                assert response.status_code == 422, (target, response.text)
                assert response.json()["problems"] == ["plugins: unknown field"]
            evil = await http.post("apis", json={**new, "policies": [{f"{bait}:TenantGate": {}}]})
            assert evil.status_code == 422
            assert evil.json()["problems"][0].startswith(f"policies[0]: unknown policy type '{bait}:TenantGate'")
            assert imports_of(plugin_dir, bait) == 0 and bait not in sys.modules
            created = await http.post("apis", json={**new, "policies": [{"tenant-gate": {"status": 418}}]})
            assert created.status_code == 201, created.text
            assert (await http.get("apis/more", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        status, _, _ = await expect_status(managed.url("/ws/more"))
        assert status == 418
    assert imports_of(plugin_dir, loaded) == 1


_USURPER = (
    "from pydantic import BaseModel\nfrom {module} import {register}\n"
    "@{register}({name!r})\nclass Fake:\n    Settings = BaseModel\n"
)
_HANDSHAKE = {"module": "asgi_ws_gateway.policies", "register": "register_policy"}
_MESSAGE = {"module": "asgi_ws_gateway.policies.message_base", "register": "register_message_policy"}


@pytest.mark.parametrize(
    ("kind", "name", "owner"),
    [(_HANDSHAKE, "validate-jwt", "asgi_ws_gateway.policies.auth."),
     (_MESSAGE, "limit-message-size", "asgi_ws_gateway.policies.message_checks."),
     (_HANDSHAKE, "tenant-gate", "gate_plugin_"),
     (_MESSAGE, "teapot", "gate_plugin_")],
    ids=["built-in", "built-in-message-type", "another-plugins", "another-plugins-message-type"],
)  # fmt: skip
def test_a_plugin_cannot_replace_a_registered_type(
    plugin_dir: Path, kind: dict[str, str], name: str, owner: str
) -> None:
    first = write_plugin(plugin_dir)
    load_plugins([first])
    before = dict(REGISTRY), dict(MESSAGE_REGISTRY)
    usurper = write_plugin(plugin_dir, _USURPER.format(name=name, **kind))
    (problem,) = _problems({"plugins": [first, usurper]})
    error = f"ValueError: policy type '{name}' is already registered by {owner}"
    assert problem.startswith(f"plugins[1]: cannot import '{usurper}': {error}")
    assert (dict(REGISTRY), dict(MESSAGE_REGISTRY)) == before


def test_re_importing_a_plugin_keeps_its_types(plugin_dir: Path) -> None:
    """importlib.reload (a development server) registers the same classes again: allowed."""
    import importlib

    name = write_plugin(plugin_dir)
    load_plugins([name])
    importlib.reload(sys.modules[name])
    assert REGISTRY["tenant-gate"].__module__ == name


def test_plugins_from_the_environment_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``$ASGI_WS_GATEWAY_PLUGINS`` set directly (outside ``run``): as many modules, and as long names, as
    the configuration's ``plugins`` takes; a longer name is never quoted."""
    from asgi_ws_gateway.config import limits

    assert (MAX_PLUGINS, MAX_MODULE) == (limits.MAX_PLUGINS, limits.MAX_MODULE)
    monkeypatch.setenv(PLUGINS_ENV, ",".join(f"m{i}" for i in range(MAX_PLUGINS + 1)))
    with pytest.raises(ConfigError, match=f"65 modules: at most {MAX_PLUGINS}"):
        load_plugins(plugins_from_env(), field="--plugin")
    long_name = "a" * 100_000
    monkeypatch.setenv(PLUGINS_ENV, long_name)
    with pytest.raises(ConfigError) as caught:
        load_plugins(plugins_from_env(), field="--plugin")
    assert "100,000 characters: at most 256" in str(caught.value)
    assert long_name[:300] not in str(caught.value)
