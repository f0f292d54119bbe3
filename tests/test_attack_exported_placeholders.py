"""A file ``export`` (``GET /config``) wrote is refused at start-up wherever it holds ``REDACTED`` for a secret.

The management API writes ``REDACTED`` in place of every secret and refuses a document sent back with
it there; ``asgi-ws-gateway check`` and ``run`` loaded the same document from a file as it was: a
``set-header`` of ``X-Api-Key`` sent the upstream the key ``REDACTED``, a ``check-header`` or a
condition admitted every client presenting ``REDACTED``, ``validate-jwt`` checked HMACs keyed with
``REDACTED``, a plugin's ``client_secret`` was ``REDACTED``. Now loading a configuration file names
each such field and says the secret must be put back. The exported files are made by the management
API's own :func:`~asgi_ws_gateway.management.disclosure.public_document` from a configuration with real
secrets. In process for the many kinds of secret; ``check`` and ``run`` as real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.management.disclosure import public_document
from asgi_ws_gateway.policies import register_policy
from support.processes import EXE, cli_env
from support.servers import free_port

UPSTREAM = "ws://127.0.0.1:9/x"
PLACEHOLDER = "the placeholder an export writes in place of a secret: put the secret back"


@register_policy("placeholder-tenant-auth")
class TenantAuth:
    """A plugin's policy: a secret by its type (``client_secret``) and by its name (``api_key``)."""

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        client_secret: SecretStr
        api_key: str = ""
        token_url: str = ""

    def __init__(self, settings: Any, env: Any) -> None:
        self.settings = settings

    async def apply(self, context: Any) -> None:
        return None


def _api(*policies: Any, upstream: str = UPSTREAM) -> dict[str, Any]:
    return {"name": "a", "path": "/a", "upstreams": [upstream], "policies": list(policies)}


def _branch(condition: Any) -> dict[str, Any]:
    return {
        "choose": {"when": [{"if": condition, "policies": [{"set-header": {"header": "X-Plan", "value": "gold"}}]}]}
    }


KEY = "sk_live_S3CRETVALUE"
# Each: a configuration holding a real secret, and the fields its export holds REDACTED in.
SECRETS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "set-header credential value": (
        {"apis": [_api({"set-header": {"header": "X-Api-Key", "value": KEY}})]},
        ["apis[0].policies[0].set-header.value"],
    ),
    "check-header accepted keys": (
        {"apis": [_api({"check-header": {"header": "X-Api-Key", "values": [KEY, KEY + "2"]}})]},
        ["apis[0].policies[0].check-header.values"],
    ),
    "condition operand": (
        {"apis": [_api(_branch({"ref": "header.x-api-key", "equals": KEY}))]},
        ["apis[0].policies[0].choose.when[0].if.equals"],
    ),
    "validate-jwt secret": (
        {"apis": [_api({"validate-jwt": {"algorithms": ["HS256"], "secret": KEY * 2}})]},
        ["apis[0].policies[0].validate-jwt.secret"],
    ),
    "subscription key": (
        {
            "apis": [_api()],
            "products": [{"name": "gold", "apis": ["a"]}],
            "subscriptions": [{"id": "s1", "product": "gold", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
        },
        ["subscriptions[0].key_sha256"],
    ),
    "upstream URL credential": (
        {"apis": [_api(upstream=f"{UPSTREAM}?access_token={KEY}")]},
        ["apis[0].upstreams[0]"],
    ),
    "store URL password": (
        {"apis": [_api()], "store": {"type": "redis", "url": f"redis://:{KEY}@127.0.0.1:9/0"}},
        ["store.url"],
    ),
    "transform-message set field": (
        {"apis": [{**_api(), "message_policies": {"inbound": [{"transform-message": {"set": {"api_key": KEY}}}]}}]},
        ["apis[0].message_policies.inbound[0].transform-message.set.api_key"],
    ),
    "plugin secrets": (
        {
            "apis": [
                _api({"placeholder-tenant-auth": {"client_secret": KEY, "api_key": KEY, "token_url": "http://i/t"}})
            ]
        },
        [
            "apis[0].policies[0].placeholder-tenant-auth.client_secret",
            "apis[0].policies[0].placeholder-tenant-auth.api_key",
        ],
    ),
}


def _exported(tmp_path: Path, config: dict[str, Any], suffix: str = ".yaml") -> Path:
    """The file ``export`` writes for ``config``: its public document (``REDACTED`` for each secret)."""
    path = tmp_path / f"exported{suffix}"
    document = public_document(config)
    path.write_text(json.dumps(document) if suffix == ".json" else yaml.safe_dump(document, sort_keys=False))
    return path


def _problems(path: Path) -> list[str]:
    try:
        parse_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("kind", list(SECRETS))
def test_an_exported_file_is_refused_naming_each_placeholder(tmp_path: Path, kind: str, suffix: str) -> None:
    """Loading an exported file names every field holding REDACTED for a secret, and says to put it back."""
    config, fields = SECRETS[kind]
    parse_config(config)  # with its secrets, the configuration is valid
    problems = _problems(_exported(tmp_path, config, suffix))
    assert [p for p in problems if PLACEHOLDER in p] == [
        f"{field}: holds 'REDACTED', {PLACEHOLDER}" for field in fields
    ]


def test_every_placeholder_of_a_file_is_named_at_once(tmp_path: Path) -> None:
    """A file with many secrets exported: each one's field, in the order of the file."""
    kinds = [(config["apis"][0], fields) for config, fields in SECRETS.values() if fields[0].startswith("apis[0]")]
    config = {"apis": [{**api, "name": f"a{i}", "path": f"/a{i}"} for i, (api, _) in enumerate(kinds)]}
    expected = [field.replace("apis[0]", f"apis[{i}]", 1) for i, (_, fields) in enumerate(kinds) for field in fields]
    problems = [p for p in _problems(_exported(tmp_path, config)) if PLACEHOLDER in p]
    assert problems == [f"{field}: holds 'REDACTED', {PLACEHOLDER}" for field in expected]
    assert len(expected) == 8


@pytest.mark.parametrize(
    "config",
    [
        {"apis": [_api({"set-header": {"header": "X-Note", "value": "REDACTED"}})]},  # no secret there: a word
        {"apis": [_api({"placeholder-tenant-auth": {"client_secret": "s", "token_url": "http://i/REDACTED"}})]},
    ],
    ids=["a word", "a plugin's reference"],
)
def test_redacted_where_export_hides_nothing_is_loaded(tmp_path: Path, config: dict[str, Any]) -> None:
    """``REDACTED`` where no secret is hidden is an ordinary value, loaded as it is."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    assert _problems(path) == []


def test_an_export_of_secret_env_loads_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Export shows where a secret comes from (``secret_env``): its file loads unchanged."""
    monkeypatch.setenv("JWT_SECRET", KEY * 2)
    config = {"apis": [_api({"validate-jwt": {"algorithms": ["HS256"], "secret_env": "JWT_SECRET"}})]}
    assert public_document(config) == config
    assert _problems(_exported(tmp_path, config)) == []


PLUGIN = textwrap.dedent(
    """
    from typing import Any
    from pydantic import BaseModel, SecretStr
    from asgi_ws_gateway.policies import register_policy

    @register_policy("file-tenant-auth")
    class TenantAuth:
        class Settings(BaseModel):
            client_secret: SecretStr

        def __init__(self, settings: Any, env: Any) -> None:
            self.settings = settings

        async def apply(self, context: Any) -> None:
            return None
    """
)
EXPORTED = {
    "plugins": ["placeholder_plugin"],
    "apis": [
        _api(
            {"file-tenant-auth": {"client_secret": "REDACTED"}},
            {"set-header": {"header": "X-Api-Key", "value": "REDACTED"}},
            {"choose": {"when": [{"if": {"ref": "header.x-api-key", "equals": "REDACTED"}, "policies": []}]}},
        )
    ],
}
FIELDS = [
    "apis[0].policies[0].file-tenant-auth.client_secret",
    "apis[0].policies[1].set-header.value",
    "apis[0].policies[2].choose.when[0].if.equals",
]


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """An exported file (a plugin's policy, a credential header, a key a condition compares) and the plugin
    beside it: valid but for the placeholders (an HS256 secret of 8 bytes, ``REDACTED``, is refused anyway)."""
    (tmp_path / "placeholder_plugin.py").write_text(PLUGIN)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(EXPORTED))
    return path


def test_check_refuses_an_exported_file(exported: Path) -> None:
    """``asgi-ws-gateway check``: exit 2, each placeholder's field named (was: valid)."""
    done = subprocess.run(
        [str(EXE), "check", exported.name], capture_output=True, text=True, timeout=60, env=cli_env(),
        cwd=exported.parent,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert [line.strip() for line in done.stderr.splitlines() if PLACEHOLDER in line] == [
        f"{field}: holds 'REDACTED', {PLACEHOLDER}" for field in FIELDS
    ]


def test_run_refuses_an_exported_file_before_serving(exported: Path) -> None:
    """``asgi-ws-gateway run``: exit 2 before binding its port (was: served, with REDACTED for secrets)."""
    process = subprocess.Popen(
        [str(EXE), "run", exported.name, "--port", str(free_port())], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=exported.parent,
    )  # fmt: skip
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.communicate(timeout=30)
        pytest.fail("run served an exported file")
    assert process.returncode == 2, err
    assert sum(PLACEHOLDER in line for line in err.splitlines()) == len(FIELDS), err
