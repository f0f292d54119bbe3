"""Every YAML and JSON example in README.md and docs/*.md parses, and every configuration in them loads.

Five full examples once had ``upstreams: [ws://chat.internal:9000/rooms/{room}]``: in a YAML flow
sequence ``{`` opens a mapping, so ``check`` refused them (``not valid YAML``). The rules, per block:

* every ```` ```yaml ```` / ```` ```json ```` block parses, as ``check`` reads a file (duplicate keys refused);
* a **configuration**: a mapping with any top-level key of the gateway's configuration (``apis``,
  ``policies``, ``store``, ``telemetry``, ...), loads as ``asgi-ws-gateway check`` loads it
  (:func:`load_policies` with a memory store: nothing connects, nothing is fetched), in a directory
  holding the files examples name (``schemas/chat-message.json``);
* a **fragment** is wrapped into the smallest configuration and loaded too: a list of handshake
  policies into an API's ``policies``, a list of message policies into ``message_policies.inbound``,
  a mapping of ``inbound``/``outbound``/``error_reply`` into ``message_policies``;
* anything else (a problem body, a log line, a collector's configuration) is parsed only;
* an example the docs show being refused (:data:`DOCUMENTED_FAILURES`) must be refused with the
  problem the docs print.

Beyond the blocks: each refused handshake's access line the docs show is written as shown for the same
refusal, the command-specific exit codes of ``asgi-ws-gateway --help`` are docs/management.md's, the
defaults the README's field tables and the blocks marked "the defaults" show are the models', every field
of the models and every option of ``run --help`` has its place in the README's tables, and the README's
Python examples start with its ``gateway.yaml``. (Links between the pages: ``test_docs_links.py``.)
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketDenialResponse

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.cli import main
from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.errors import ConfigError, HandshakeDenied
from asgi_ws_gateway.json_names import load_unique
from asgi_ws_gateway.management import GatewayManagement, ManagementClient
from asgi_ws_gateway.policies.base import REGISTRY, deny
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.policies.message_base import MESSAGE_REGISTRY
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.upstream.balancing import upstream_failed
from asgi_ws_gateway.yaml_keys import safe_load

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = frozenset(field.alias or name for name, field in GatewayConfig.model_fields.items())
MESSAGE_SET = frozenset({"inbound", "outbound", "error_reply"})
API = {"name": "example", "path": "/ws/example/{room}", "upstreams": ["ws://127.0.0.1:9/{room}"]}
JWT = {"jwks_url": "https://login.example.com/.well-known/jwks.json", "algorithms": ["RS256"]}

# Files the examples name, provided in the working directory, where ``check`` reads them from.
FILES = {
    "schemas/chat-message.json": '{"type": "object", "required": ["type"]}',
    "mypackage/__init__.py": "",
    "mypackage/transforms.py": "async def redact(message):\n    return message\n",  # transform-message's call
}

# Examples documented to be refused: the block's first line -> the problem the docs print for it.
DOCUMENTED_FAILURES = {
    # docs/policies.md, Plugins: the example's plugin module is the reader's own; without it, the
    # documented refusal of a module that cannot be imported.
    "plugins: [mycompany.gateway_policies]": (
        "plugins[0]: cannot import 'mycompany.gateway_policies': ModuleNotFoundError: No module named 'mycompany'"
    ),
}

PUBLISHED_SCHEMA = jsonschema_rs.validator_for(json.loads((ROOT / "schema" / "gateway.schema.json").read_text()))


def _as_json(data: Any) -> Any:
    """``data`` as an editor reads the YAML: an unquoted date or time is the text written."""
    return json.loads(json.dumps(data, default=lambda value: value.isoformat().replace("+00:00", "Z")))


_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)[ \t]*$")


@dataclass(frozen=True)
class Block:
    where: str  # README.md:39, the line of the block's first line
    lang: str
    text: str
    doc: Path


def _blocks() -> list[Block]:
    found: list[Block] = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            opening = _FENCE.match(lines[i])
            if opening is None:
                i += 1
                continue
            indent, lang = opening["indent"], opening["lang"]
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            if lang in ("yaml", "json"):
                body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
                found.append(Block(f"{doc.relative_to(ROOT)}:{i + 2}", lang, body, doc))
            i = end + 1
    return found


BLOCKS = _blocks()


def _parse(block: Block) -> Any:
    return load_unique(block.text) if block.lang == "json" else safe_load(block.text)


def _policy_names(data: Any) -> set[str] | None:
    """The policy types of a list of single-key mappings (``- set-header: {...}``), else None."""
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(entry, dict) and len(entry) == 1 for entry in data):
        return None
    return {str(next(iter(entry))) for entry in data}


def _around(policies: list[Any] | None = None, messages: dict[str, Any] | None = None) -> dict[str, Any]:
    """The smallest configuration a fragment reads in: a token and a subscription on every handshake."""
    api: dict[str, Any] = {**API, "policies": policies or []}
    if messages is not None:
        api["message_policies"] = messages
    names = _policy_names(policies) or set()
    return {
        "policies": [] if "validate-jwt" in names else [{"validate-jwt": JWT}],  # sets {jwt.*}
        "products": [{"name": "example", "apis": [API["name"]]}],  # sets {subscription.*}
        "subscriptions": [{"id": "example", "product": "example", "key_sha256": "0" * 64}],
        "apis": [api],
    }


def as_configuration(data: Any) -> dict[str, Any] | None:
    """The configuration a block is, or the smallest one that holds it; None for anything else."""
    if isinstance(data, dict) and TOP_LEVEL & set(data):
        if "apis" not in data and data.get("products"):  # an excerpt: the APIs its products name exist
            named = {name for product in data["products"] for name in product.get("apis", [])}
            return {**data, "apis": [{**API, "name": name, "path": f"/ws/{name}/{{room}}"} for name in sorted(named)]}
        return data
    if isinstance(data, dict) and data and set(data) <= MESSAGE_SET:
        return _around(messages=data)
    names = _policy_names(data)
    if names and names <= set(REGISTRY):
        return _around(policies=data)
    if names and names <= set(MESSAGE_REGISTRY):
        return _around(messages={"inbound": data})
    return None


def test_the_docs_have_examples_of_each_kind() -> None:
    """The rules above reach what they should: configurations, fragments of both kinds, parse-only blocks."""
    data = [_parse(block) for block in BLOCKS]
    assert len(BLOCKS) >= 25
    assert sum(isinstance(d, dict) and "apis" in d for d in data) >= 5
    assert any(_policy_names(d) and _policy_names(d) <= set(REGISTRY) for d in data)  # type: ignore[operator]
    assert any(_policy_names(d) and _policy_names(d) <= set(MESSAGE_REGISTRY) for d in data)  # type: ignore[operator]
    assert any(as_configuration(d) is None for d in data)
    for first in DOCUMENTED_FAILURES:
        assert any(block.text.startswith(first) for block in BLOCKS), f"{first!r}: no such example: update the list"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_every_example_parses(block: Block) -> None:
    """YAML as ``check`` reads it (a key twice is refused), JSON as JSON."""
    _parse(block)


def _maybe_configuration(block: Block) -> bool:
    try:
        return as_configuration(_parse(block)) is not None
    except Exception:  # not even parsed: it fails here too, by its file and line, not the collection
        return True


CONFIGS = [block for block in BLOCKS if _maybe_configuration(block)]


@pytest.mark.parametrize("block", CONFIGS, ids=[block.where for block in CONFIGS])
def test_every_configuration_example_loads_as_check_loads_it(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written to a file and loaded as ``check`` does; an example documented to fail, with its documented problem."""
    for name, content in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    monkeypatch.chdir(tmp_path)
    # As ``check`` imports from its working directory (not syspath_prepend: with pkg_resources loaded by
    # another test, it calls a function the installed pkg_resources shim lacks).
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    for name in [name for name in sys.modules if name.split(".")[0] == "mypackage"]:
        monkeypatch.delitem(sys.modules, name)  # this test's copy, imported again
    data = _parse(block)
    config = as_configuration(data)
    path = tmp_path / ("gateway.json" if block.lang == "json" and config is data else "gateway.yaml")
    path.write_text(block.text if config is data else yaml.safe_dump(config, sort_keys=False))
    expected = next((problem for first, problem in DOCUMENTED_FAILURES.items() if block.text.startswith(first)), None)
    if expected is None:
        try:
            load_policies(path, store=lambda config: MemoryState())
        finally:
            for name in [name for name in sys.modules if name.split(".")[0] == "mypackage"]:
                del sys.modules[name]
        # And an editor given the published schema (as the README's first example asks) finds nothing wrong:
        # it flagged every `upstreams: ["ws://..."]`, the shape nearly every example has.
        problems = [f"{list(e.instance_path)}: {e.message}" for e in PUBLISHED_SCHEMA.iter_errors(_as_json(config))]
        assert not problems
        return
    assert expected in block.doc.read_text(), "the documented problem is no longer in the docs"
    with pytest.raises(ConfigError) as caught:
        load_policies(path, store=lambda config: MemoryState())
    assert caught.value.problems == [expected]


# The refusal lines the docs show, as the access log writes them: the docs once showed
# ``401 chat denied (unauthorized, policy jwt)``, a reason no policy gives, under a name the example's
# policy did not have. Each documented status is produced by the policy that refuses with it.
_REFUSAL = re.compile(r'"WebSocket (?P<path>/\S*)" (?P<status>\d{3}) (?P<api>[\w-]+) denied \((?P<why>[^)]*)\)')
REFUSING_POLICIES: dict[int, dict[str, Any]] = {
    401: {"validate-jwt": JWT},  # no token sent
    403: {"ip-filter": {"allow": ["192.0.2.0/24"]}},  # the test client is not in it
}


def _documented_refusals() -> list[tuple[str, re.Match[str]]]:
    found = []
    for doc in DOCS:
        text = " ".join(doc.read_text().split())  # a line the prose wraps reads as one
        found += [(doc.name, match) for match in _REFUSAL.finditer(text)]
    return found


REFUSALS = _documented_refusals()


def test_the_docs_show_refusal_lines() -> None:
    """The rule above reaches the README's and docs/telemetry.md's examples."""
    assert {where for where, _ in REFUSALS} >= {"README.md", "telemetry.md"}


@pytest.mark.parametrize("match", [m for _, m in REFUSALS], ids=[f"{w}:{m['status']}" for w, m in REFUSALS])
def test_a_documented_refusal_line_is_what_the_access_log_writes(
    match: re.Match[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The same handshake refused in process: its access line says the documented status, reason and policy."""
    status = int(match["status"])
    api = {"name": match["api"], "path": "/ws/chat/{room}", "upstreams": ["ws://127.0.0.1:9/rooms/{room}"]}
    api["policies"] = [REFUSING_POLICIES[status]]
    client = TestClient(WebSocketGateway(Starlette(), config={"apis": [api]}))
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    with client, pytest.raises(WebSocketDenialResponse), client.websocket_connect(match["path"]):
        pass
    lines = [record.getMessage() for record in caplog.records if record.name == "asgi_ws_gateway.access"]
    written = [m.group(0) for line in lines if (m := _REFUSAL.search(line)) is not None]
    assert written == [match.group(0)]


# Codes that mean one thing for one command: ``--help`` and docs/management.md's table once each
# named one of the two commands that exit 8 (``run`` forced to stop, ``connections list`` incomplete).
COMMANDS = ("connections list", "connect", "run")


def _commands_in(text: str) -> set[str]:
    found = set()
    for command in COMMANDS:  # longest first: "connections list" before "connect"
        if command in text:
            found.add(command)
            text = text.replace(command, "")
    return found


def test_the_exit_codes_in_help_and_in_the_docs_name_the_same_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """For the command-specific codes (6, 7, 8), the commands ``asgi-ws-gateway --help`` names are the table's."""
    with pytest.raises(SystemExit):
        main(["--help"])
    epilog = " ".join(capsys.readouterr().out.split("Exit codes:", 1)[1].split())
    in_help = {int(m[1]): _commands_in(m[2]) for m in re.finditer(r"\b([0-9]) (.*?)(?=, [0-9] |$)", epilog)}
    table = (ROOT / "docs" / "management.md").read_text().split("| exit code | meaning |", 1)[1]
    rows = re.findall(r"^\| ([0-9]) \| (.*) \|$", table, re.MULTILINE)
    in_docs = {int(code): _commands_in(" ".join(re.findall(r"`([^`]+)`", meaning))) for code, meaning in rows}
    for code in (6, 7, 8):
        assert in_help[code] == in_docs[code], f"exit code {code}"
    assert in_docs[8] == {"run", "connections list"}


# The README's tables of configuration fields: each default they show is the model's. ``display_name``
# defaults to the API's ``name`` (its field is None: the name is shown); "none" is None or nothing.
NAMED_DEFAULTS = {"display_name": "name"}


def _default_of(model: type[BaseModel], dotted: str) -> Any:
    value: Any = None
    for part in dotted.split("."):
        field = model.model_fields[part]
        assert not field.is_required(), f"{dotted} is required"
        value = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            model = type(value)
    return value.model_dump() if isinstance(value, BaseModel) else value


def _is_nothing(value: Any) -> bool:
    return not value or (isinstance(value, dict) and not any(value.values()))


def _readme_rows(header: str) -> list[list[str]]:
    """The cells of each row of the README's table under ``header``."""
    lines = (ROOT / "README.md").read_text().split(header, 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def _readme_table(header: str) -> list[tuple[list[str], str]]:
    """Each row's fields (``store``, ``management.allowed_hosts``) and its default."""
    return [(re.findall(r"`([\w.]+)`", cells[0]), cells[1]) for cells in _readme_rows(header)]


TABLES = [
    (ApiConfig, "| field (per API) | default | meaning |"),
    (GatewayConfig, "| field (top level) | default | meaning |"),
]
ROWS = [(model, fields, default) for model, header in TABLES for fields, default in _readme_table(header)]


@pytest.mark.parametrize(("model", "fields", "shown"), ROWS, ids=["/".join(fields) for _, fields, _ in ROWS])
def test_the_readme_tables_show_the_models_defaults(model: type[BaseModel], fields: list[str], shown: str) -> None:
    """`10` s, `[]`, none, `{type: memory}`, `name: value` pairs (all of them): what the model defaults to."""
    if shown == "required":
        assert all(model.model_fields[field].is_required() for field in fields)
        return
    defaults = [_default_of(model, field) for field in fields]
    literals = re.findall(r"`([^`]+)`", shown.split("(", 1)[0])
    if shown.startswith("none"):
        assert all(_is_nothing(default) for default in defaults), defaults
    elif len(literals) > 1 and all(": " in literal for literal in literals):  # every field of a section
        assert {k: v for literal in literals for k, v in yaml.safe_load(literal).items()} == defaults[0]
    elif len(fields) == 1 and fields[0] in NAMED_DEFAULTS:
        assert literals == [NAMED_DEFAULTS[fields[0]]] and defaults == [None]
    elif literals:
        values = [yaml.safe_load(literal) for literal in literals]
        values = values * len(fields) if len(values) == 1 else values
        for field, value, default in zip(fields, values, defaults, strict=True):
            expected = {**default, **value} if isinstance(value, dict) else value  # `{type: memory}`: those keys
            assert expected == default, field


def test_the_yaml_blocks_that_say_they_show_the_defaults_do() -> None:
    """``# all optional; the defaults are shown`` / ``(these are the defaults)``: each value is the model's."""
    checked = 0
    for block in BLOCKS:
        first = block.text.splitlines()[0]
        if "the defaults" not in first:
            continue
        section = first.split(":", 1)[0]  # the section the comment is on; what follows may be an example
        default = _default_of(GatewayConfig, section)
        assert {**default, **_parse(block)[section]} == default, f"{block.where}: {section}"
        checked += 1
    assert checked >= 2


# Public constructors whose keyword arguments the docs spell out: every argument shown, none missing, and
# each default written as a literal (`10`, `None`, `False`, `"denied"`) the signature's.
def _parameters(call: Any) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(call).parameters.items() if name != "self"}


def _spelled_call(doc: str, start: str) -> str:
    """The call written in ``doc`` from ``start`` (``ManagementClient(``) to its closing ``)` ``, on one line."""
    return " ".join((ROOT / "docs" / doc).read_text().split(start, 1)[1].split(")`", 1)[0].split())


SPELLED_CALLS = [
    (WebSocketGateway, "telemetry.md", "`WebSocketGateway("),
    (ManagementClient, "management.md", "`ManagementClient("),
    (HandshakeDenied, "policies.md", "`HandshakeDenied("),
    (deny, "policies.md", "`deny("),
]


@pytest.mark.parametrize(("call", "doc", "start"), SPELLED_CALLS, ids=[start[1:-1] for _, _, start in SPELLED_CALLS])
def test_a_constructor_spelled_in_the_docs_is_the_signature(call: Any, doc: str, start: str) -> None:
    """``ManagementClient``'s ``transport=`` was left out of its one line in docs/management.md."""
    parameters = _parameters(call)
    shown: dict[str, str] = {}  # "" for a positional argument
    for piece in _spelled_call(doc, start).split(","):
        name, _, default = piece.strip().partition("=")
        if name.isidentifier():
            shown[name] = default
    assert list(shown) == list(parameters)
    for name, default in shown.items():
        try:
            literal = ast.literal_eval(default) if default else inspect.Parameter.empty
        except (ValueError, SyntaxError):  # `64 MiB`: words, not checked
            continue
        assert literal in (..., parameters[name]), name  # `...`: whatever you pass


def _management_arguments() -> list[tuple[list[str], str]]:
    lines = (ROOT / "docs" / "management.md").read_text().split("| argument | default | meaning |", 1)[1]
    rows = []
    for line in lines.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append((re.findall(r"`(\w+)`", cells[0]), cells[1]))
    return rows


def test_the_management_arguments_table_is_gateway_managements_signature() -> None:
    """``bus=`` and ``gateway=`` were missing from the table; each default shown is the signature's (a word
    such as "none" or "in memory" is ``None`` or nothing)."""
    parameters = _parameters(GatewayManagement)
    rows = _management_arguments()
    assert sorted(name for names, _ in rows for name in names) == sorted(set(parameters) - {"app"})
    for names, shown in rows:
        cells = shown.split(", ") if len(names) > 1 else [shown]
        for name, cell in zip(names, cells, strict=True):
            literal = re.match(r"`([^`]+)`", cell)
            if literal is None:
                assert not parameters[name], f"{name}: {cell!r}, but the default is {parameters[name]!r}"
            else:
                assert yaml.safe_load(literal.group(1)) == parameters[name], name


# Every field of the models is in the README's tables: the top level and an API's by row, each section
# (``store``, ``management``, ...) field by field in its row or in the README's block of that section.
# The ``store`` row left out ``max_keys``, the ``management`` row two of its three lists.
@pytest.mark.parametrize(("model", "header"), TABLES, ids=[model.__name__ for model, _ in TABLES])
def test_every_field_of_the_model_has_a_row_in_the_readme_table(model: type[BaseModel], header: str) -> None:
    """No field without a row, no row without a field (a row names a section's field as ``section.field``)."""
    shown = {name.split(".")[0] for fields, _ in _readme_table(header) for name in fields}
    public = {field.alias or name for name, field in model.model_fields.items() if not field.exclude}
    assert shown == public


def _section(name: str) -> type[BaseModel] | None:
    default = GatewayConfig.model_fields[name].get_default(call_default_factory=True)
    return type(default) if isinstance(default, BaseModel) else None


SECTIONS = sorted(name for name in GatewayConfig.model_fields if _section(name) and name != "message_policies")


def _section_text(section: str) -> str:
    """The README's words on ``section``: its row of the top-level table, and a block that sets it."""
    rows = [
        " ".join(cells)
        for cells in _readme_rows("| field (top level) | default | meaning |")
        if any(name.split(".")[0] == section for name in re.findall(r"`([\w.]+)`", cells[0]))
    ]
    blocks = [block.text for block in BLOCKS if block.doc.name == "README.md" and block.text.startswith(f"{section}:")]
    return " ".join([*rows, *blocks])


def _shown_names(text: str) -> set[str]:
    """The words in ``text``'s code spans, and the keys its YAML lines set."""
    spans = " ".join(re.findall(r"`([^`]+)`", text))
    return set(re.findall(r"\w+", spans)) | set(re.findall(r"^\s*(\w+):", text, re.MULTILINE))


@pytest.mark.parametrize("section", SECTIONS)
def test_every_field_of_a_section_is_named_in_the_readme(section: str) -> None:
    """``store``'s ``max_keys``, ``management``'s ``allowed_hosts``: named in the row or the section's block."""
    model = _section(section)
    assert model is not None
    missing = set(model.model_fields) - _shown_names(_section_text(section))
    assert not missing, f"{section}: {sorted(missing)} not in the README"


def test_every_run_option_has_a_row_in_the_readme_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The options ``run --help`` lists are the README's ``run`` option table's (``--plugin`` had no row)."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    usage = capsys.readouterr().out.split("positional arguments:", 1)[0]
    options = set(re.findall(r"\[(--[a-z-]+)", usage)) - {"--help"}
    shown = {
        option
        for cells in _readme_rows("| `run` option | default | |")
        for option in re.findall(r"--[a-z-]+", cells[0])
    }
    assert shown == options


# The README's Python: executed as written, next to the README's own ``gateway.yaml``, each builds an app
# that starts (an invalid configuration fails the lifespan start-up) and leaves other requests to FastAPI.
GATEWAY_YAML = next(
    block for block in BLOCKS if block.doc.name == "README.md" and block.text.startswith("# gateway.yaml")
)
PYTHON = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("snippet", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_a_readme_python_example_starts_with_the_readmes_gateway_yaml(
    snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``app.add_middleware(WebSocketGateway, config="gateway.yaml")`` and the management one, as written."""
    (tmp_path / "gateway.yaml").write_text(GATEWAY_YAML.text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASGI_WS_GATEWAY_ADMIN_TOKEN", "a-long-enough-admin-token-for-the-example")
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:  # the lifespan start-up validates gateway.yaml
        assert client.get("/not-an-api").status_code == 404


def test_the_readme_has_its_python_examples() -> None:
    """The rule above reaches the middleware example and the management one."""
    assert len(PYTHON) >= 2
    assert any("GatewayManagement" in snippet for snippet in PYTHON)


# How a connection's first seconds speak of its backend, as the README's "What the gateway does with a
# connection" says it: the README still called an upstream's 1001 a success after 1001 and 1012 right
# after the handshake became failures (a backend that accepts and at once goes away served no one).
@dataclass(frozen=True)
class _End:
    close_code: int
    messages_in_at_close: int
    closed_by: str = "upstream"
    close_reason: str = ""


def _codes(pattern: str, text: str) -> set[int]:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return {int(code.replace("xxx", "000")) for code in re.findall(r"\b(\d{4}|\dxxx)\b", found.group(1))}


def test_the_readme_says_which_upstream_closes_count_against_a_backend() -> None:
    """Each code the README lists is classified as it says; every code that fails a backend is listed."""
    text = " ".join((ROOT / "README.md").read_text().split("3. **Connect upstream", 1)[1].split("   - ", 1)[0].split())
    always = _codes(r"a close with (.*?), or with", text)
    before_a_message = _codes(r", or with (.*?) before the client sent a message", text)
    served = _codes(r"the upstream closes with (.*?) is a success", text)
    assert _codes(r"an upstream's (.*?) after the client had sent a message", text) == before_a_message
    for code in always:
        assert (upstream_failed(_End(code, 0)), upstream_failed(_End(code, 1))) == (True, True), code
    for code in before_a_message:
        assert (upstream_failed(_End(code, 0)), upstream_failed(_End(code, 1))) == (True, None), code
    for code in served:
        assert (upstream_failed(_End(code, 0)), upstream_failed(_End(code, 1))) == (False, False), code
    sent_on_the_wire = [*range(1000, 1005), *range(1007, 1015), 3000, 4000]  # 1006: no close frame
    failing = {code for code in sent_on_the_wire if upstream_failed(_End(code, 0))}
    assert failing == always | before_a_message
