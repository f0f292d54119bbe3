"""Attacks on what the management API shows: a plugin policy's secrets and subscriptions' key hashes.

A plugin registered ``tenant-auth`` with ``client_secret: SecretStr``, ``api_key``, ``password`` and a
``headers`` mapping (``Authorization: Basic ...``): ``GET /config``, ``GET /apis/{name}`` and ``export``
returned all of them as written, the redaction knowing only ``secret`` and a credential header's
``value``. And ``GET /config`` showed each subscription's ``key_sha256``, an unsalted SHA-256 of a key
an operator may have chosen: a holder could test guesses offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Secret, SecretStr

from asgi_ws_gateway.management.disclosure import public_document, redacted_values
from asgi_ws_gateway.policies import MESSAGE_REGISTRY, REGISTRY, register_policy
from asgi_ws_gateway.policies.message_base import register_message_policy
from asgi_ws_gateway.redact import REDACTED, is_credential_header
from support.management import api, managed_gateway
from support.processes import cli_env
from support.upstream import UpstreamServer

CLIENT_SECRET = "SEKRIT-client-secret-0123"
API_KEY = "SEKRIT-api-key-0123"
PASSWORD = "SEKRIT-password-0123"
BASIC = "Basic U0VLUklULWJhc2ljLTAxMjM="
HEADER_KEY = "SEKRIT-header-key-0123"
MATERIAL = "SEKRIT-signing-material-0123"
FALLBACK = "SEKRIT-fallback-0123"
PIN = "SEKRIT-pin-0123"
PRIVATE_KEY = "SEKRIT-private-key-0123"
GLOBAL_SECRET = "SEKRIT-global-0123"
SECRETS = [CLIENT_SECRET, API_KEY, PASSWORD, BASIC, HEADER_KEY, MATERIAL, FALLBACK, PIN, PRIVATE_KEY, GLOBAL_SECRET]
REFERENCE_SUFFIXES = ("_url", "_uri", "_env", "_file", "_files", "_path")  # disclosure's: names of where a secret is
SUBSCRIPTION_KEY = "pin-4821"
KEY_SHA256 = hashlib.sha256(SUBSCRIPTION_KEY.encode()).hexdigest()


class Envelope(BaseModel):
    material: SecretStr  # a secret by its type alone: "material" names no credential (nor "envelope")
    algorithm: str = "HS256"


@register_policy("disclosure-tenant-auth")
class TenantAuth:
    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        client_id: str = "gw"
        client_secret: SecretStr
        api_key: str = ""
        password: str = ""
        token_url: str = ""
        headers: dict[str, str] = {}
        envelope: Envelope | None = None
        fallbacks: list[Secret[str]] = []
        token_ttl: int = 300

    def __init__(self, settings: Any, env: Any) -> None:
        self.settings = settings

    async def apply(self, context: Any) -> None:
        return None


@register_message_policy("disclosure-sign-messages")
class SignMessages:
    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        private_key: str
        pin: SecretStr
        key_file: str = ""

    def __init__(self, settings: Any, env: Any) -> None:
        self.settings = settings

    def attach(self, connection: Any, direction: Any) -> Any:
        async def handle(message: Any) -> None:
            return None

        return handle


def _tenant_auth(client_secret: str = CLIENT_SECRET) -> dict[str, Any]:
    return {
        "disclosure-tenant-auth": {
            "client_secret": client_secret,
            "api_key": API_KEY,
            "password": PASSWORD,
            "token_url": "https://idp.example/token",
            "headers": {"Authorization": BASIC, "X-Api-Key": HEADER_KEY, "X-Tenant": "acme"},
            "envelope": {"material": MATERIAL, "algorithm": "HS512"},
            "fallbacks": [FALLBACK],
            "token_ttl": 60,
        }
    }


def _config(upstream: UpstreamServer) -> dict[str, Any]:
    inbound = [{"disclosure-sign-messages": {"private_key": PRIVATE_KEY, "pin": PIN, "key_file": "/etc/k.pem"}}]
    return {
        "policies": [{"disclosure-tenant-auth": {"client_secret": GLOBAL_SECRET}}],
        "apis": [api("chat", "/chat", upstream, policies=[_tenant_auth()], message_policies={"inbound": inbound})],
        "products": [{"name": "gold", "apis": ["chat"], "policies": [_tenant_auth()]}],
        "subscriptions": [{"id": "file-sub", "product": "gold", "key_sha256": KEY_SHA256}],
    }


TENANT_SHOWN = {
    "client_secret": REDACTED,
    "api_key": REDACTED,
    "password": REDACTED,
    "token_url": "https://idp.example/token",
    "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "X-Tenant": "acme"},
    "envelope": {"material": REDACTED, "algorithm": "HS512"},
    "fallbacks": [REDACTED],
    "token_ttl": 60,
}
TENANT_FIELDS = ["client_secret", "api_key", "password", "headers.Authorization", "headers.X-Api-Key",
                 "envelope.material", "fallbacks[0]"]  # fmt: skip


async def test_no_view_shows_a_plugins_secrets_or_a_key_hash(tmp_path: Path, upstream: UpstreamServer) -> None:
    """GET /apis, /apis/chat, /config (JSON, YAML), /products, /products/gold, /subscriptions: REDACTED
    in place of each secret the plugin's model types or names, and of each key_sha256; the rest as written."""
    with managed_gateway(_config(upstream), tmp_path / "state.json") as running:
        async with running.http() as http:
            created = await http.post("subscriptions", json={"product": "gold", "id": "api-sub"})
            assert created.status_code == 201, created.text
            created_hash = hashlib.sha256(created.json()["key"].encode()).hexdigest()
            for path in ("apis", "apis/chat", "config", "config?format=yaml", "products", "products/gold",
                         "subscriptions", "subscriptions/file-sub", "subscriptions/api-sub"):  # fmt: skip
                response = await http.get(path)
                assert response.status_code == 200, path
                shown = response.text + json.dumps(dict(response.headers))
                assert not [s for s in SECRETS if s in shown], (path, response.text)
                assert KEY_SHA256 not in shown and created_hash not in shown, path
            config = (await http.get("config")).json()
            chat = (await http.get("apis/chat")).json()
    assert chat["policies"] == [{"disclosure-tenant-auth": TENANT_SHOWN}]
    assert chat["message_policies"]["inbound"] == [
        {"disclosure-sign-messages": {"private_key": REDACTED, "pin": REDACTED, "key_file": "/etc/k.pem"}}
    ]
    assert config["policies"] == [{"disclosure-tenant-auth": {"client_secret": REDACTED}}]
    assert config["products"][0]["policies"] == [{"disclosure-tenant-auth": TENANT_SHOWN}]
    assert {s["id"]: s["key_sha256"] for s in config["subscriptions"]} == {"file-sub": REDACTED, "api-sub": REDACTED}


async def test_a_plugins_redacted_secrets_sent_back_are_a_422_naming_each(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """PUT of what GET showed: 422 naming every redacted field (the plugin would have run with "REDACTED"),
    the API unchanged; the same document with the values themselves is taken."""
    with managed_gateway(_config(upstream), tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            sent_back = await http.put("apis/chat", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422, sent_back.text
            assert [p.split(":")[0] for p in sent_back.json()["problems"]] == [
                *(f"policies[0].disclosure-tenant-auth.{field}" for field in TENANT_FIELDS),
                "message_policies.inbound[0].disclosure-sign-messages.private_key",
                "message_policies.inbound[0].disclosure-sign-messages.pin",
            ]
            assert not [s for s in SECRETS if s in sent_back.text]
            assert (await http.get("apis/chat")).headers["etag"] == got.headers["etag"]
            document = got.json()
            document["policies"] = [_tenant_auth("new-client-secret")]
            document["message_policies"]["inbound"][0]["disclosure-sign-messages"].update(private_key="k2", pin="p2")
            replaced = await http.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert replaced.status_code == 200, replaced.text
            product = (await http.get("products/gold")).json()
            product["name"] = "silver"
            copied = await http.post("products", json=product)
            assert copied.status_code == 422, copied.text
            assert "policies[0].disclosure-tenant-auth.client_secret: REDACTED is what" in copied.text


async def test_an_exported_subscription_sent_back_is_refused_naming_its_key_hash(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """The exported file's key_sha256 is REDACTED: ``check`` refuses it by field path (as an inline secret
    shown REDACTED is refused), and POST /subscriptions takes no hash at all: neither installs the word."""
    config = {"apis": [api("chat", "/chat", upstream)], "products": [{"name": "gold", "apis": ["chat"]}],
              "subscriptions": [{"id": "file-sub", "product": "gold", "key_sha256": KEY_SHA256}]}  # fmt: skip
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            exported = (await http.get("config?format=yaml")).text
            (subscription,) = yaml.safe_load(exported)["subscriptions"]
            posted = await http.post("subscriptions", json={**subscription, "id": "copy"})
            assert posted.status_code == 422 and "key_sha256" in posted.text
            assert (await http.get("subscriptions/copy")).status_code == 404
    (tmp_path / "exported.yaml").write_text(exported)
    env = {k: v for k, v in cli_env().items() if not k.startswith("ASGI_WS_GATEWAY_")}  # this checkout's
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asgi_ws_gateway", "check", "exported.yaml", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert "subscriptions[0].key_sha256:" in err.decode()


# --- the rules, one document at a time ----------------------------------------------------------------


def test_built_in_settings_named_as_credentials_are_typed_secret_or_name_no_value() -> None:
    """The name rule is a plugin's only: a built-in setting named as a credential is a ``SecretStr`` or one of
    these, which hold no secret (a new ``client_secret: str`` in a built-in fails here, not in production)."""
    not_secrets = {"key", "token", "cookie", "public_keys", "jwks_keys_without_kid", "secret_base64", "token_field"}
    found = set()
    for registry in (REGISTRY, MESSAGE_REGISTRY):
        for kind in registry.values():
            if kind.__module__.startswith("asgi_ws_gateway."):
                found |= _credential_fields(kind.Settings)
    assert found <= not_secrets, found - not_secrets


def _credential_fields(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        secret = "Secret" in str(field.annotation)
        if is_credential_header(name) and not name.endswith(REFERENCE_SUFFIXES) and not secret:
            names.add(name)
        for nested in _models(field.annotation):
            if nested not in seen:
                names |= _credential_fields(nested, seen | {model})
    return names


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for argument in get_args(annotation) for m in _models(argument)] if get_origin(annotation) else []


def test_built_in_settings_named_as_credentials_stay_shown() -> None:
    """``rate-limit-by-key``'s key template, ``validate-jwt``'s cookie source and public keys: no secrets."""
    document = {"policies": [
        {"rate-limit-by-key": {"key": "{client_ip}", "limit": 3, "window": 60}},
        {"validate-jwt": {"token": [{"cookie": "session"}], "public_keys": ["-----BEGIN PUBLIC KEY-----"],
                          "secret_env": "JWT_SECRET"}},
    ]}  # fmt: skip
    assert public_document(document) == document
    assert redacted_values(document) == []


_NAMES = st.sampled_from(["api_key", "client_secret", "Authorization", "X-Api-Key", "session_token", "passphrase",
                          "room", "region", "token_url", "secret_env", "mode"])  # fmt: skip
_SECRET = "SEKRIT-prop"
_VALUES = st.recursive(
    st.sampled_from([_SECRET, "", 7, True, None]) | st.lists(st.just(_SECRET), min_size=1, max_size=2),
    lambda inner: st.dictionaries(_NAMES, inner, max_size=3) | st.lists(inner, max_size=2),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=4))
def test_a_plugins_settings_show_no_credential_and_every_hidden_one_sent_back_is_named(
    plugin_settings: dict[str, Any],
) -> None:
    """Any nesting of a plugin's settings: nothing under a credential's name is shown (a name that says where
    one is, ``token_url``, excepted), and what GET shows, sent back, names every place it hid."""
    public = public_document({"disclosure-tenant-auth": plugin_settings})
    assert _shown_under_credentials(public["disclosure-tenant-auth"]) == []
    hidden = [path for path, value in _leaves(public) if value == REDACTED]
    assert sorted(redacted_values(public)) == sorted(hidden)


def _shown_under_credentials(value: Any, named: bool = False) -> list[Any]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in _shown_under_credentials(item, _credential(key) or named)]
    if isinstance(value, list):
        return [s for item in value for s in _shown_under_credentials(item, named)]
    return [value] if named and value == _SECRET else []


def _credential(key: str) -> bool:
    return is_credential_header(key) and not key.endswith(REFERENCE_SUFFIXES)


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")]
    return [(path, value)]


@pytest.mark.parametrize("name", ["token_url", "secret_env", "private_key_file", "key_path"])
def test_a_plugin_setting_naming_where_a_secret_is_is_shown(name: str) -> None:
    """A URL, a variable's name or a file's path is shown (a URL's own credentials hidden as every URL's)."""
    entry = {"disclosure-sign-messages": {"private_key": "k", "pin": "p", name: "/etc/secret/where"}}
    assert public_document(entry)["disclosure-sign-messages"][name] == "/etc/secret/where"
