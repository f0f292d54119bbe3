"""Names in a configuration are checked, never assumed: an entry's name or id of the wrong type is a
problem at its path (it was a TypeError traceback), and every header, cookie and query parameter name
a policy reads is one a request can carry (``''`` or ``'a b'`` admitted nobody: 401 on every handshake).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_ws_gateway import ConfigError, load_config
from support.processes import cli_env

KEY = "0" * 64
JWT = {"algorithms": ["HS256"], "secret": "s" * 32, "audience": "chat", "issuer": "https://issuer.example"}


def _api(**fields: Any) -> dict[str, Any]:
    return {"name": "chat", "path": "/ws/chat", "upstreams": ["ws://127.0.0.1:9/"], **fields}


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config, import_plugins=False)
    return caught.value.problems


def _check(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", "check", str(path)],
        capture_output=True, text=True, timeout=60, env=cli_env(),
    )  # fmt: skip


# --- an entry's name or id that is not a string ---

_NOT_NAMES = [["chat"], {"x": "chat"}, [["chat"]], {"x": ["chat"]}, 1, 1.5, True, None]


@pytest.mark.parametrize("name", _NOT_NAMES, ids=repr)
@pytest.mark.parametrize("where", ["apis", "products", "subscriptions"])
def test_an_entry_named_by_a_list_or_a_mapping_is_a_problem_at_its_path(where: str, name: Any) -> None:
    """``name: [chat]`` (``id:`` of a subscription): one problem at that field, no TypeError."""
    entries: dict[str, Any] = {
        "apis": _api(),
        "products": {"name": "gold", "apis": ["chat"]},
        "subscriptions": {"id": "s1", "product": "gold", "key_sha256": KEY},
    }
    field = "id" if where == "subscriptions" else "name"
    config = {key: [entry] for key, entry in entries.items()}
    config[where] = [{**entries[where], field: name}]
    problems = _problems(config)
    assert [p.split(":", 1)[0] for p in problems if p.startswith(f"{where}[0].{field}")] == [f"{where}[0].{field}"]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
            max_leaves=4,
        ),
        min_size=3,
        max_size=3,
    )
)
def test_any_name_or_id_value_gives_problems_not_an_exception(names: list[Any]) -> None:
    """Whatever JSON value names an API, a product and a subscription: ConfigError or a valid config."""
    config = {
        "apis": [_api(name=names[0])],
        "products": [{"name": names[1], "apis": [names[0]]}],
        "subscriptions": [{"id": names[2], "product": names[1], "key_sha256": KEY}],
    }
    try:
        load_config(config, import_plugins=False)
    except ConfigError as exc:
        assert exc.problems


def test_check_reports_a_list_name_with_exit_2(tmp_path: Path) -> None:
    """``asgi-ws-gateway check`` on ``name: [chat]``, a product ``name: [gold]`` and a subscription ``id: [s1]``."""
    done = _check(
        tmp_path,
        {
            "apis": [_api(name=["chat"])],
            "products": [{"name": ["gold"], "apis": []}],
            "subscriptions": [{"id": ["s1"], "product": "gold", "key_sha256": KEY}],
        },
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for path in ("apis[0].name", "products[0].name", "subscriptions[0].id"):
        assert f"  {path}: Input should be a valid string" in done.stderr


# --- header, cookie and query parameter names a policy reads; the claim values validate-jwt wants ---

_BAD_HEADERS = ["", "a b", "é", "[", "a:b", "x\x00", "X-Key\n", "(x)"]
_BAD_QUERIES = ["", "key\x00", "a\nb", "\u202ekey"]
_BAD_CLAIMS = ["", " ", "\x00", "chat\n", "\u2066chat"]


def _where(kind: str, value: Any) -> tuple[dict[str, Any], str]:
    """A configuration with ``value`` at one name- or claim-reading field, and that field's path."""
    policy = "apis[0].policies[0]"
    if kind == "check-header.header":
        return {"apis": [_api(policies=[{"check-header": {"header": value}}])]}, f"{policy}.check-header.header"
    if kind in ("token.header", "token.query", "token.cookie"):
        source = {kind.split(".")[1]: value}
        jwt = {**JWT, "token": [{"header": "Authorization"}, source]}
        return {"apis": [_api(policies=[{"validate-jwt": jwt}])]}, f"{policy}.validate-jwt.token[1].{kind[6:]}"
    if kind in ("audience", "issuer"):
        return {"apis": [_api(policies=[{"validate-jwt": {**JWT, kind: value}}])]}, f"{policy}.validate-jwt.{kind}"
    if kind in ("audience[]", "issuer[]"):
        field = kind[:-2]
        jwt = {**JWT, field: ["ok", value]}
        return {"apis": [_api(policies=[{"validate-jwt": jwt}])]}, f"{policy}.validate-jwt.{field}[1]"
    if kind == "subscription_key.headers":
        return {"apis": [_api()], "subscription_key": {"headers": ["X-Key", value]}}, "subscription_key.headers[1]"
    assert kind == "subscription_key.query"
    return {"apis": [_api()], "subscription_key": {"query": value}}, "subscription_key.query"


_CASES = [
    *((kind, value) for kind in ("check-header.header", "token.header", "token.cookie") for value in _BAD_HEADERS),
    *(("subscription_key.headers", value) for value in _BAD_HEADERS),
    *((kind, value) for kind in ("token.query", "subscription_key.query") for value in _BAD_QUERIES),
    *((kind, value) for kind in ("audience", "issuer", "audience[]", "issuer[]") for value in _BAD_CLAIMS),
    ("audience", []),
    ("issuer", []),
]


@pytest.mark.parametrize(("kind", "value"), _CASES, ids=[f"{k}={v!r}" for k, v in _CASES])
def test_a_name_no_request_carries_is_a_problem_at_its_path(kind: str, value: Any) -> None:
    """'' / 'a b' / 'é' as a header name, '' or a control character in a query name, a blank or
    control-character audience or issuer: a problem at the field's path."""
    config, path = _where(kind, value)
    problems = _problems(config)
    assert any(p.startswith(f"{path}:") for p in problems), problems


_GOOD = [
    ("check-header.header", "X-Tenant"),
    ("check-header.header", "x_tenant"),  # a token; headers_with_underscores decides what reaches it
    ("token.header", "Sec-WebSocket-Protocol"),
    ("token.cookie", "__Host-session"),
    ("subscription_key.headers", "Ocp-Apim-Subscription-Key"),
    ("token.query", "access_token"),
    ("subscription_key.query", "subscription-key"),
    ("subscription_key.query", "clé"),  # any printable text: parameter names are percent-decoded
    ("audience", "api://chat"),
    ("issuer", "https://login.example.com/tenant/v2.0"),
]


@pytest.mark.parametrize(("kind", "value"), _GOOD, ids=[f"{k}={v!r}" for k, v in _GOOD])
def test_a_usable_name_is_accepted(kind: str, value: str) -> None:
    config, _ = _where(kind, value)
    load_config(config, import_plugins=False)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=6))
def test_a_header_name_is_accepted_exactly_when_it_is_a_token(name: str) -> None:
    """check-header's header: valid if and only if it is an RFC 9110 token."""
    token = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    config, _ = _where("check-header.header", name)
    try:
        load_config(config, import_plugins=False)
    except ConfigError:
        assert not name or not set(name) <= token
    else:
        assert name and set(name) <= token


def test_check_reports_names_no_request_carries_with_exit_2(tmp_path: Path) -> None:
    """``asgi-ws-gateway check``: check-header 'a b', a token query '', subscription_key header '' and
    an audience ' ' are each named by path; exit 2."""
    jwt = {**JWT, "audience": " ", "token": [{"query": ""}]}
    config = {
        "apis": [_api(policies=[{"check-header": {"header": "a b"}}, {"validate-jwt": jwt}])],
        "subscription_key": {"headers": [""]},
    }
    done = _check(tmp_path, config)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for path in (
        "apis[0].policies[0].check-header.header",
        "apis[0].policies[1].validate-jwt.token[0].query",
        "apis[0].policies[1].validate-jwt.audience",
        "subscription_key.headers[0]",
    ):
        assert f"  {path}: " in done.stderr, done.stderr
