"""validate-jwt settings that are valid but accept tokens not meant for this gateway are warned about.

An issuer's keys sign every application's tokens (and a JWKS such as Azure AD's every tenant's):
without ``audience`` (and, with a JWKS, ``issuer``) a token made for another application or tenant
is accepted. A JWKS fetched over plain http from another host can be replaced on the way. Each is a
warning by field path: logged when the gateway starts or takes a new configuration, printed by
``asgi-ws-gateway check`` (the real command line below).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.jwts import HS_SECRET, signing_key

EXE = Path(sys.executable).parent / "asgi-ws-gateway"
PEM = signing_key("RS256").public_pem
WHERE = "apis[0].policies[0].validate-jwt"
CHECKED = {"jwks_url": "https://idp.example.com/jwks.json", "audience": "a", "issuer": "i"}


def _config(**settings: Any) -> dict[str, Any]:
    return {"apis": [api_entry(policies=[{"validate-jwt": {"algorithms": ["RS256"], **settings}}])]}


def _warned_fields(**settings: Any) -> list[str]:
    warnings = load_policies(_config(**settings)).warnings
    return sorted(warning.split(": ", 1)[0].removeprefix(WHERE + ".") for warning in warnings)


@pytest.mark.parametrize(
    ("settings", "fields"),
    [
        ({"jwks_url": "https://idp.example.com/jwks.json"}, ["audience", "issuer"]),
        ({"jwks_url": "https://idp.example.com/jwks.json", "audience": "chat"}, ["issuer"]),
        ({"jwks_url": "https://idp.example.com/jwks.json", "issuer": "https://idp.example.com/"}, ["audience"]),
        ({"jwks_url": "https://idp.example.com/jwks.json", "audience": ["a", "b"], "issuer": "i"}, []),
        ({"jwks_url": "http://idp.example.com/jwks.json", "audience": "chat", "issuer": "i"}, ["jwks_url"]),
        ({"jwks_url": "http://10.0.0.5/jwks.json", "audience": "chat", "issuer": "i"}, ["jwks_url"]),
        ({"jwks_url": "http://127.0.0.1:8080/jwks.json", "audience": "chat", "issuer": "i"}, []),
        ({"jwks_url": "http://localhost/jwks.json", "audience": "chat", "issuer": "i"}, []),
        ({"jwks_url": "http://[::1]:8080/jwks.json", "audience": "chat", "issuer": "i"}, []),
        ({"public_keys": [PEM]}, ["audience"]),  # the issuer of a pinned key is known: no issuer warning
        ({"public_keys": [PEM], "audience": "chat"}, []),
        # A key set refreshed every few seconds: a fetch storm toward the identity provider.
        ({**CHECKED, "jwks_refresh_interval": 0.1}, ["jwks_refresh_interval"]),
        ({**CHECKED, "jwks_refresh_interval": 59}, ["jwks_refresh_interval"]),
        ({**CHECKED, "jwks_refresh_interval": 60}, []),
        ({"public_keys": [PEM], "audience": "chat", "jwks_refresh_interval": 0.1}, []),  # nothing fetched
    ],
)
def test_what_is_warned(settings: dict[str, Any], fields: list[str]) -> None:
    assert _warned_fields(**settings) == fields


def test_a_frequent_refresh_says_how_often_it_fetches() -> None:
    (warning,) = load_policies(_config(**CHECKED, jwks_refresh_interval=0.5)).warnings
    assert warning.startswith(f"{WHERE}.jwks_refresh_interval: 0.5 s fetches the key set up to 120 times a minute")


def test_a_shared_secret_is_not_warned_about() -> None:
    """A shared secret is this gateway's and its issuer's alone: nobody else's tokens verify with it."""
    config = {"apis": [api_entry(policies=[{"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}])]}
    assert load_policies(config).warnings == []


def test_the_gateway_logs_them_at_start_and_on_a_new_configuration(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        gateway = WebSocketGateway(not_found, config=_config(jwks_url="https://idp.example.com/jwks.json"))
    assert f"{WHERE}.audience: not set: a token its issuer signed for any other application" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asgi_ws_gateway"):
        asyncio.run(gateway.apply_config(_config(public_keys=[PEM])))
    assert f"{WHERE}.audience: not set" in caplog.text
    assert f"{WHERE}.issuer" not in caplog.text


def test_check_prints_them(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(_config(jwks_url="http://idp.example.com/jwks.json", audience="chat", issuer="i")))
    result = subprocess.run([str(EXE), "check", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"warning: {WHERE}.jwks_url: fetched over plain http: anyone on the network path can replace the keys "
        "and sign tokens the gateway accepts (use https://)"
    ]
    as_json = subprocess.run([str(EXE), "check", "--json", str(path)], capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["warnings"] == [result.stderr.removeprefix("warning: ").strip()]
