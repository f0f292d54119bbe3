"""A key written twice in one mapping of a configuration file is refused, wherever it is.

PyYAML and ``json`` keep the last value of a repeated key without a word: a second ``policies:``
further down an API dropped its ``validate-jwt``, ``check`` said valid and ``run`` admitted clients
without a token. Now it is one problem naming the file, the line (and column) and the field path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.json_names import DuplicateName, load_unique
from asgi_ws_gateway.management.store import StateFileInvalid, read_state
from asgi_ws_gateway.yaml_keys import DuplicateKey, safe_load
from support.processes import main_in_process
from support.servers import free_port

EXE = Path(sys.executable).parent / "asgi-ws-gateway"

API = """\
apis:
  - name: chat
    path: /ws/chat
    upstreams: ["ws://127.0.0.1:9/x"]
"""

FILES = {
    "top.yaml": (
        "trusted_proxies: [10.0.0.1]\napis: []\ntrusted_proxies: [0.0.0.0/0]\n",
        "3:1: not valid YAML: trusted_proxies: the key 'trusted_proxies' appears twice in one mapping "
        "(first on line 1)",
    ),
    "apis.yaml": (
        API + "apis: []\n",
        "5:1: not valid YAML: apis: the key 'apis' appears twice in one mapping (first on line 1)",
    ),
    "policies.yaml": (  # the finding: the second list replaced the one holding validate-jwt
        API + "    policies:\n      - validate-jwt: {secret_env: JWT_SECRET, audience: chat}\n"
        "    idle_timeout: 300\n    policies: []\n",
        "8:5: not valid YAML: apis[0].policies: the key 'policies' appears twice in one mapping (first on line 5)",
    ),
    "settings.yaml": (
        API
        + "    policies:\n      - rate-limit-by-key: {key: '{client.network}', limit: 5, window: 60, limit: 100000}\n",
        "6:76: not valid YAML: apis[0].policies[0].rate-limit-by-key.limit: the key 'limit' appears twice in one "
        "mapping (first on line 6)",
    ),
    "choose.yaml": (
        API + "    policies:\n"
        "      - choose:\n"
        "          when:\n"
        "            - if: {ref: header.x-plan, equals: free}\n"
        "              policies:\n"
        "                - rate-limit-by-key:\n"
        "                    key: '{client.network}'\n"
        "                    limit: 5\n"
        "                    window: 60\n"
        "                    limit: 100000\n",
        "14:21: not valid YAML: apis[0].policies[0].choose.when[0].policies[0].rate-limit-by-key.limit: the key "
        "'limit' appears twice in one mapping (first on line 12)",
    ),
    "schema.yaml": (  # a JSON Schema inside validate-message: the second `properties` lifted the enum
        API + "    message_policies:\n"
        "      inbound:\n"
        "        - validate-message:\n"
        "            schema:\n"
        "              type: object\n"
        "              properties: {role: {enum: [user]}}\n"
        "              properties: {}\n",
        "11:15: not valid YAML: apis[0].message_policies.inbound[0].validate-message.schema.properties: the key "
        "'properties' appears twice in one mapping (first on line 10)",
    ),
    "resolved.yaml": (  # two spellings YAML reads as one key (True)
        API + "    message_policies:\n"
        "      inbound:\n"
        "        - transform-message:\n"
        "            set:\n"
        "              on: 1\n"
        "              true: 2\n",
        "10:15: not valid YAML: apis[0].message_policies.inbound[0].transform-message.set.true: the key 'true' "
        "appears twice in one mapping (first on line 9, written 'on')",
    ),
    "merge.yaml": (  # two merge keys are one key twice (`<<: [*a, *b]` merges two)
        "defaults: &d {path: /ws/chat}\napis:\n  - <<: *d\n    <<: *d\n    name: chat\n",
        "4:5: not valid YAML: apis[0].<<: the key '<<' appears twice in one mapping (first on line 3)",
    ),
    "top.json": (
        '{"trusted_proxies": ["10.0.0.1"], "apis": [], "trusted_proxies": ["0.0.0.0/0"]}',
        "1:47: trusted_proxies: the name 'trusted_proxies' appears twice in one object (first on line 1)",
    ),
    "policies.json": (
        '{"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/x"],\n'
        '           "policies": [{"check-origin": {"allowed": ["https://app.example.com"]}}],\n'
        '           "policies": []}]}\n',
        "3:12: apis[0].policies: the name 'policies' appears twice in one object (first on line 2)",
    ),
    "settings.json": (
        '{"apis": [{"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/x"],\n'
        ' "policies": [{"rate-limit-by-key": {"key": "{client.network}", "limit": 5, "window": 60,\n'
        '                                     "\\u006cimit": 100000}}]}]}\n',
        "3:38: apis[0].policies[0].rate-limit-by-key.limit: the name 'limit' appears twice in one object "
        "(first on line 2)",
    ),
}


def _write(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text(FILES[name][0])
    return path


@pytest.mark.parametrize("name", FILES)
def test_a_key_twice_in_one_mapping_is_one_problem_by_line_and_field_path(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:{FILES[name][1]}"]


@pytest.mark.parametrize("name", ["top.yaml", "policies.yaml", "policies.json"])
def test_check_refuses_a_key_twice_with_exit_2(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name)
    if name == "top.yaml":  # by the command line
        done = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60)
    else:  # by cli.main in this process: a process's start was most of a check's time
        done = subprocess.CompletedProcess(["check", str(path)], *main_in_process("check", str(path)))
    assert done.returncode == 2, done.stdout
    assert f"{path}:{FILES[name][1]}" in done.stderr


@pytest.mark.parametrize("name", ["policies.yaml", "policies.json"])
def test_run_refuses_to_start_on_a_key_twice(tmp_path: Path, name: str) -> None:
    """The finding's ``run``: it served, and admitted a client without a token. Now it never listens."""
    path = _write(tmp_path, name)
    port = str(free_port())
    done = subprocess.run(
        [str(EXE), "run", str(path), "--port", port], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert f"{path}:{FILES[name][1]}" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout


MERGES = {
    "one anchor": (
        "apis:\n"
        "  - &chat\n"
        "    name: chat\n"
        "    path: /ws/chat\n"
        "    upstreams: [ws://127.0.0.1:9/x]\n"
        "    policies: [{check-origin: {allowed: [https://app.example.com]}}]\n"
        "  - <<: *chat\n"
        "    name: chat-v2\n"
        "    path: /ws/chat/v2\n"
        "    policies: []\n",
        [("chat", "/ws/chat", "ws://127.0.0.1:9/x", 1), ("chat-v2", "/ws/chat/v2", "ws://127.0.0.1:9/x", 0)],
    ),
    "two anchors with the same keys": (
        "apis:\n"
        "  - &a {name: a, path: /ws/a, upstreams: [ws://127.0.0.1:9/x]}\n"
        "  - &b {name: b, path: /ws/b, upstreams: [ws://127.0.0.1:9/y], policies: [{check-origin: {allowed: [https://b.example]}}]}\n"
        "  - <<: [*a, *b]\n"
        "    name: c\n"
        "    path: /ws/c\n"
        "    upstreams: [ws://127.0.0.1:9/z]\n",
        [("a", "/ws/a", "ws://127.0.0.1:9/x", 0), ("b", "/ws/b", "ws://127.0.0.1:9/y", 1),
         ("c", "/ws/c", "ws://127.0.0.1:9/z", 1)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", MERGES)
def test_keys_a_merge_brings_in_may_be_overridden(tmp_path: Path, name: str) -> None:
    """``<<: *defaults`` then the mapping's own value is what merge keys are for: not a key twice."""
    text, apis = MERGES[name]
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    config = load_config(path)
    assert [(api.name, api.path, api.upstreams[0].url, len(api.policies)) for api in config.apis] == apis


SCHEMA_FILES = {
    "schema.yaml": (
        "type: object\nproperties: {role: {enum: [user]}}\nproperties: {}\n",
        "not valid YAML: line 3, column 1: properties: the key 'properties' appears twice in one mapping "
        "(first on line 2)",
    ),
    "schema.json": (
        '{"type": "object",\n "properties": {"role": {"enum": ["user"]}},\n "properties": {}}',
        "line 3, column 2: properties: the name 'properties' appears twice in one object (first on line 2)",
    ),
}


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_a_key_twice_in_a_schema_file_is_a_problem_of_schema_file(tmp_path: Path, name: str) -> None:
    text, message = SCHEMA_FILES[name]
    (tmp_path / name).write_text(text)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        API + f"    message_policies:\n      inbound:\n        - validate-message: {{schema_file: {tmp_path / name}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"apis[0].message_policies.inbound[0].validate-message.schema_file: {message}"]


def test_a_name_twice_in_a_referenced_schema_is_refused(tmp_path: Path) -> None:
    """A ``$ref: file://...`` is read as strictly as the file that refers to it."""
    (tmp_path / "role.json").write_text('{"enum": ["user"], "enum": ["user", "admin"]}')
    path = tmp_path / "gateway.yaml"
    path.write_text(
        API + "    message_policies:\n      inbound:\n        - validate-message:\n            schema:\n"
        f"              properties: {{role: {{$ref: 'file://{tmp_path / 'role.json'}'}}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith("apis[0].message_policies.inbound[0].validate-message.schema: not a valid JSON Schema")
    assert "the name 'enum' appears twice in one object" in problem


def test_a_name_twice_in_the_state_file_makes_it_invalid() -> None:
    """The state file is the gateway's own, but one edited by hand is read as strictly as the configuration."""
    document = '{"format": 1, "revision": 1, "apis": {"chat": null}, "apis": {}}'
    with pytest.raises(StateFileInvalid, match="apis: the name 'apis' appears twice in one object"):
        read_state(document, "gateway.state.json")


def test_a_key_twice_in_a_log_config_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text("version: 1\nroot: {level: INFO}\nroot: {level: CRITICAL}\n")
    done = subprocess.run([str(EXE), "run", "missing.yaml", "--log-config", str(path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert f"argument --log-config: {path}: DuplicateKey: root: the key 'root' appears twice" in done.stderr


def test_the_management_cli_refuses_a_file_with_a_key_twice(tmp_path: Path) -> None:
    """``apis create FILE`` read the file with PyYAML, so the API received the last value and could not tell."""
    path = tmp_path / "api.yaml"
    path.write_text("name: chat\npath: /ws/chat\nupstreams: [ws://127.0.0.1:9/x]\npath: /ws/open\n")
    closed = f"http://127.0.0.1:{free_port()}"  # the file is refused before anything is sent
    done = subprocess.run([str(EXE), "apis", "create", str(path), "--url", closed], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert f"error: {path}:4:1: path: the key 'path' appears twice in one mapping (first on line 2)" in done.stderr


# The readers, on any document: written with a key twice, refused where it is; without, read as before.


def _documents(text: st.SearchStrategy[str], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


_BMP = st.characters(max_codepoint=0xFFFF)  # PyYAML reads an escaped surrogate pair as two characters
_YAML_DOCUMENTS = _documents(
    st.text(_BMP, max_size=8), st.text(_BMP, max_size=6) | st.integers(-5, 5) | st.booleans() | st.none()
)
_JSON_DOCUMENTS = _documents(st.text(max_size=8), st.text(max_size=6))


class _Twice:
    """Where the document holds a mapping with ``key`` written twice."""

    def __init__(self, key: str) -> None:
        self.key = key


def _yaml(value: Any, indent: str = "") -> str:
    """``value`` as block-style YAML after a ``key:`` or ``-`` (scalars as JSON, which YAML reads the same)."""
    if isinstance(value, _Twice):
        pairs: list[tuple[Any, Any]] = [(value.key, 1), ("x", [2]), (value.key, 3)]
    elif isinstance(value, dict) and value:
        pairs = list(value.items())
    elif isinstance(value, list) and value:
        return "\n" + "".join(f"{indent}-{_yaml(item, indent + '  ')}" for item in value)
    else:
        return f" {json.dumps(value)}\n"
    return "\n" + "".join(f"{indent}{json.dumps(key)}:{_yaml(item, indent + '  ')}" for key, item in pairs)


def _json(value: Any) -> str:
    if isinstance(value, _Twice):
        return f'{{"{value.key}": 1, "x": [2], "{value.key}": 3}}'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    return json.dumps(value)


def _place(value: Any, steps: list[int], key: str) -> tuple[Any, str]:
    """``value`` with a mapping holding ``key`` twice put where ``steps`` lead; the field path of that key
    from ``value`` (keys as written: ``1``, ``true``, ``null`` for keys that are not strings)."""
    if not steps or not isinstance(value, dict | list) or not value:
        return _Twice(key), f".{key}"
    chosen = list(value)[steps[0] % len(value)] if isinstance(value, dict) else steps[0] % len(value)
    inner, path = _place(value[chosen], steps[1:], key)
    placed = dict(value) if isinstance(value, dict) else list(value)
    placed[chosen] = inner
    if isinstance(value, list):
        return placed, f"[{chosen}]{path}"
    return placed, f".{chosen if isinstance(chosen, str) else json.dumps(chosen)}{path}"


@settings(max_examples=150, deadline=None)
@given(yaml_value=_YAML_DOCUMENTS, json_value=_JSON_DOCUMENTS)
def test_a_document_without_a_key_twice_reads_as_before(yaml_value: Any, json_value: Any) -> None:
    text = "document:" + _yaml(yaml_value, "  ")
    assert safe_load(text) == yaml.safe_load(text) == {"document": yaml_value}
    as_json = json.dumps({"document": json_value})
    assert load_unique(as_json) == json.loads(as_json) == {"document": json_value}


@settings(max_examples=150, deadline=None)
@given(
    yaml_value=_YAML_DOCUMENTS,
    json_value=_JSON_DOCUMENTS,
    steps=st.lists(st.integers(0, 7), max_size=5),
    key=st.sampled_from(["a", "role", "é", "on", "x"]),
)
def test_a_document_with_a_key_twice_is_refused_with_its_field_path(
    yaml_value: Any, json_value: Any, steps: list[int], key: str
) -> None:
    placed, path = _place(yaml_value, steps, key)
    with pytest.raises(DuplicateKey) as yaml_info:
        safe_load("document:" + _yaml(placed, "  "))
    assert (yaml_info.value.path, yaml_info.value.key) == (f"document{path}", key)
    placed, path = _place(json_value, steps, key)
    with pytest.raises(DuplicateName) as json_info:
        load_unique('{"document": ' + _json(placed) + "}")
    assert (json_info.value.path, json_info.value.name) == (f"document{path}", key)
