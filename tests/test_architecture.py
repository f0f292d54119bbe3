"""The package's structure, as docs/architecture.md states it: checked on the source, not assumed.

The layer contracts themselves are import-linter's (``lint-imports``, in ``make test`` and here).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import grimp
import pytest

import asgi_ws_gateway.policies as extension_api
from asgi_ws_gateway import ConfigError, WebSocketGateway
from asgi_ws_gateway.policies import REGISTRY, PolicyEnv, PolicySettings, register_policy
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.state.memory import MemoryState

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "asgi_ws_gateway"


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _is_own(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "asgi_ws_gateway"
    return any(alias.name.split(".")[0] == "asgi_ws_gateway" for alias in node.names)


def test_extension_api_is_exactly_what_all_says() -> None:
    """What a custom policy imports: one place, pinned (docs/policies.md, docs/message-policies.md)."""
    assert sorted(extension_api.__all__) == [
        "ClientAddress", "CloseConnection", "ConnectionContext", "Decision", "Direction", "DropMessage",
        "GatewayPolicies", "HandshakeContext", "HandshakeDenied", "MESSAGE_REGISTRY", "MatchSettings",
        "MessageHandler", "MessagePolicy", "Policy", "PolicyEnv", "PolicyProblem", "PolicySettings", "REGISTRY",
        "RequestView", "Store", "StoreErrorSettings", "StoreUnavailable", "Subscription", "WsMessage",
        "current_connection", "current_handshake", "deny", "hash_key", "register_message_policy",
        "register_policy", "template",
    ]  # fmt: skip
    for name in extension_api.__all__:
        assert getattr(extension_api, name) is not None


def test_no_two_public_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for name, tree in _modules():
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                homes[node.name].append(name)
    assert {cls: where for cls, where in homes.items() if len(where) > 1} == {}


# The exceptions, and why: the gateway's OTLP exporters, lean spans and own histograms subclass the SDK's, and the
# SDK loads only when telemetry is on (docs/telemetry.md: "Nothing is imported from the SDK" when it is off); the
# bounded reading of a collector's answers imports requests, only for an OTLP/HTTP exporter; the
# command line imports the gateway in the commands that serve or check it (the management commands and --help do not
# need pydantic, OpenTelemetry, Redis or the relay: they start in a third of the time).
LAZY_OWN_MODULES = {"cli.py"}
LAZY_OWN_IMPORTS = {
    ("telemetry/providers.py", ".otlp_export"),
    ("telemetry/providers.py", ".lean_provider"),
    ("telemetry/providers.py", ".histograms"),
    ("telemetry/providers.py", ".otlp_responses"),
    ("telemetry/providers.py", ".counted_exporters"),
    ("telemetry/otlp_wire.py", "._span_wire"),  # the optional C extensions (no imports of their own), maybe not built
    ("telemetry/metric_totals.py", "._metric_add"),
    ("management/cli.py", ".connect"),  # websockets' client and the event loop: connect's, not --help's nor the others'
    # What a configuration may not use, imported by the runs whose configuration does (docs/performance.md,
    # "Start-up"): the management API (Starlette, redis-py) by run --management's processes alone; PyJWT,
    # cryptography and httpx2 by the first validate-jwt built; jsonschema-rs by the first validate-message.
    ("server/serving.py", "..management.standalone"),
    ("standalone.py", ".middleware"),  # the gateway itself: run --workers N's supervisor reads the module's checks
    ("policies/auth.py", ".jwks"),
    ("policies/auth.py", ".jwt_keys"),
    ("policies/build_entries.py", ".jwks"),
    ("policies/build_entries.py", ".jwks_fetch"),
    ("policies/message_checks.py", ".unique_items"),
}


def test_no_package_import_inside_a_function() -> None:
    """Imports of the package's own modules are at module level: the import graph is what it looks like."""
    found = []
    for name, tree in _modules():
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) and name not in LAZY_OWN_MODULES:
                found += [
                    f"{name}:{node.lineno}"
                    for node in ast.walk(function)
                    if isinstance(node, ast.Import | ast.ImportFrom)
                    and _is_own(node)
                    and (name, "." * getattr(node, "level", 0) + (getattr(node, "module", "") or ""))
                    not in LAZY_OWN_IMPORTS
                ]
    assert found == []


def test_type_checking_imports_are_for_annotations_only() -> None:
    """A name imported under ``TYPE_CHECKING`` appears in annotations (or strings), never in code that runs."""
    misused = []
    for name, tree in _modules():
        guarded: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        guarded |= {(alias.asname or alias.name).split(".")[0] for alias in sub.names}
        guarded -= {  # rebound at run time by an import of its own (an SDK class imported on first use)
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and node.col_offset > 0
            for alias in node.names
        }
        if not guarded:
            continue
        annotations: set[int] = set()
        for node in ast.walk(tree):
            for annotation in _annotations(node):
                annotations |= {id(sub) for sub in ast.walk(annotation)}
        misused += [
            f"{name}:{node.lineno}: {node.id}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and node.id in guarded and id(node) not in annotations
        ]
    assert misused == []


def _annotations(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
        return [node.annotation]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
        return [node.returns]
    if isinstance(node, ast.Call) and ast.unparse(node.func) in {"cast", "typing.cast", "TypeVar"}:
        return node.args[:1] if ast.unparse(node.func) != "TypeVar" else [kw.value for kw in node.keywords]
    return []


def test_import_contracts_hold() -> None:
    """The layers of pyproject's ``[tool.importlinter]`` (docs/architecture.md): no import runs back up."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a dev dependency"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_is_part_of_an_import_circle() -> None:
    """Zero circles among the modules themselves (imports that run when the module loads)."""
    graph = grimp.build_graph("asgi_ws_gateway", exclude_type_checking_imports=True)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert [sorted(c) for c in _circles(imports)] == []


def _circles(imports: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in imports.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in imports:
        if module not in index:
            visit(module)
    return found


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


builds: list[str] = []


async def _app(scope: Any, receive: Any, send: Any) -> None:
    return None


@register_policy("count-builds")
class _CountBuilds:
    """A policy type that records each time it is built."""

    class Settings(PolicySettings):
        pass

    def __init__(self, settings: Settings, env: PolicyEnv) -> None:
        builds.append(env.counter)
        self.name = "count-builds"

    async def apply(self, context: Any) -> None:
        return None


@pytest.fixture
def counting() -> Any:
    builds.clear()
    yield builds
    REGISTRY.pop("count-builds", None)
    register_policy("count-builds")(_CountBuilds)


def _config(*policies: dict[str, Any]) -> dict[str, Any]:
    return {"apis": [{"name": "echo", "path": "/ws", "upstreams": [{"url": "ws://127.0.0.1:9/"}],
                      "policies": list(policies)}]}  # fmt: skip


def test_a_configuration_s_policies_are_built_once(counting: list[str]) -> None:
    """Validating and serving share one build (secrets read and caches made once, not twice)."""
    gateway = WebSocketGateway(_app, config=_config({"count-builds": {}}, {"count-builds": {}}))
    assert builds == ["api:echo.count-builds.0", "api:echo.count-builds.1"]
    policies = load_policies(_config({"count-builds": {}}), store=lambda config: MemoryState())
    assert builds[2:] == ["api:echo.count-builds.0"] and policies.pipelines["echo"] is not None
    assert gateway.config.apis[0].name == "echo"


def test_policy_problems_come_with_the_data_problems(counting: list[str]) -> None:
    """The policies' checks still report beside the configuration's own, by field path."""
    config = _config({"count-builds": {"unknown": 1}})
    config["apis"].append({"name": "echo", "path": "/other", "upstreams": [{"url": "ws://127.0.0.1:9/"}]})
    with pytest.raises(ConfigError) as caught:
        load_policies(config)
    assert caught.value.problems == [
        "apis[1].name: duplicate API name 'echo' (also apis[0])",
        "apis[0].policies[0].count-builds.unknown: unknown field",
    ]
