"""Attacks on what the gateway shows: a credential tested by a pattern or a condition's operand.

``check-header`` of ``X-Api-Key`` may accept keys by ``pattern``; a ``choose`` condition on
``header.x-api-key``, ``query.api_key`` or ``header.authorization`` names them in ``equals``, ``in``,
``matches``...; ``validate-jwt`` may test a claim named ``api_key``. The management API (``GET
/config``, ``/apis``, ``/apis/{name}``), ``export`` and ``apis show`` showed them as written while a
``set-header`` of the same header read ``REDACTED``, and ``check`` (and a 422) quoted them in its errors.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from support.management import api, managed_gateway
from support.processes import EXE, cli, cli_env
from support.upstream import UpstreamServer

SECRETS = ["SEKRIT-PAT-50", "SEKRIT-IN-52", "SEKRIT-IN-53", "SEKRIT-EQ-54", "SEKRIT-MA-55", "SEKRIT-NE-56",
           "SEKRIT-CO-57", "SEKRIT-CLAIM-58", "SEKRIT-COOKIE-59"]  # fmt: skip


def _branch(condition: Any, plan: str) -> dict[str, Any]:
    return {"if": condition, "policies": [{"set-header": {"header": "X-Plan", "value": plan}}]}


POLICIES: list[Any] = [
    {"validate-jwt": {"algorithms": ["RS256"], "jwks_url": "http://127.0.0.1:9/jwks",
                      "claims": [{"claim": "api_key", "equals": "SEKRIT-CLAIM-58"},
                                 {"claim": "plan", "equals": "free"}]}},
    {"check-header": {"header": "X-Api-Key", "pattern": "SEKRIT-PAT-50|SEKRIT-PAT-51"}},
    {"choose": {"when": [
        _branch({"ref": "header.x-api-key", "in": ["SEKRIT-IN-52", "SEKRIT-IN-53"]}, "gold"),
        _branch({"ref": "query.api_key", "equals": "SEKRIT-EQ-54"}, "silver"),
        _branch([{"ref": "header.authorization", "matches": "SEKRIT-MA-55"},
                 {"ref": "header.x-service-token", "not_equals": "SEKRIT-NE-56"}], "bronze"),
        _branch({"ref": "jwt.session_ids", "contains": "SEKRIT-CO-57"}, "tin"),
        _branch({"ref": "cookie.session", "equals": "SEKRIT-COOKIE-59"}, "lead"),
        _branch({"ref": "header.x-tenant", "equals": "acme"}, "plain"),
    ]}},
]  # fmt: skip


async def test_no_view_shows_a_credentials_pattern_or_condition_operand(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """GET /config (JSON and YAML), /apis, /apis/m1, ``export`` and ``apis show`` read REDACTED for each."""
    config = {"apis": [api("m1", "/ws/m1", upstream, policies=POLICIES)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            for path in ("config", "config?format=yaml", "apis", "apis/m1"):
                response = await http.get(path)
                assert response.status_code == 200, path
                assert not [s for s in SECRETS if s in response.text], (path, response.text)
            shown = (await http.get("apis/m1")).json()["policies"]
        for args in (["export"], ["export", "--json"], ["apis", "show", "m1"], ["apis", "show", "m1", "--json"]):
            code, out, err = await cli(*args, "--url", running.base)
            assert code == 0, (args, err)
            assert not [s for s in SECRETS if s in out + err], (args, out)
    assert shown[1]["check-header"] == {"header": "X-Api-Key", "pattern": "REDACTED"}
    when = shown[2]["choose"]["when"]
    assert [branch["if"] for branch in when] == [
        {"ref": "header.x-api-key", "in": "REDACTED"},
        {"ref": "query.api_key", "equals": "REDACTED"},
        [{"ref": "header.authorization", "matches": "REDACTED"},
         {"ref": "header.x-service-token", "not_equals": "REDACTED"}],
        {"ref": "jwt.session_ids", "contains": "REDACTED"},
        {"ref": "cookie.session", "equals": "REDACTED"},
        {"ref": "header.x-tenant", "equals": "acme"},  # no credential: shown
    ]  # fmt: skip
    assert shown[0]["validate-jwt"]["claims"] == [
        {"claim": "api_key", "equals": "REDACTED"},
        {"claim": "plan", "equals": "free"},
    ]


async def test_a_redacted_operand_sent_back_is_a_422_naming_each_field(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """PUT of what GET showed: 422 naming the pattern and every operand, instead of accepting "REDACTED"."""
    config = {"apis": [api("m1", "/ws/m1", upstream, policies=POLICIES)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/m1")
            sent_back = await http.put("apis/m1", json=got.json(), headers={"If-Match": got.headers["etag"]})
            assert sent_back.status_code == 422, sent_back.text
            assert [p.split(":")[0] for p in sent_back.json()["problems"]] == [
                "policies[0].validate-jwt.claims[0].equals",
                "policies[1].check-header.pattern",
                "policies[2].choose.when[0].if.in",
                "policies[2].choose.when[1].if.equals",
                "policies[2].choose.when[2].if[0].matches",
                "policies[2].choose.when[2].if[1].not_equals",
                "policies[2].choose.when[3].if.contains",
                "policies[2].choose.when[4].if.equals",
            ]
            assert (await http.get("apis/m1")).headers["etag"] == got.headers["etag"]


BAD = [
    {"check-header": {"header": "X-Api-Key", "pattern": "(SEKRIT-PAT-60"}},
    {"choose": {"when": [
        _branch({"ref": "header.authorization", "matches": "(?P<x>SEKRIT-MA-61"}, "a"),
        _branch({"ref": "query.api_key", "equals": ["SEKRIT-EQ-62"]}, "b"),
        _branch({"ref": "header.x-api-key", "in": "SEKRIT-IN-63"}, "c"),
        _branch({"ref": "header.x-tenant", "equals": ["acme"]}, "d"),
    ]}},
]  # fmt: skip
BAD_SECRETS = ["SEKRIT-PAT-60", "SEKRIT-MA-61", "SEKRIT-EQ-62", "SEKRIT-IN-63"]


def test_check_names_what_is_wrong_without_quoting_the_credential(tmp_path: Path) -> None:
    """``check``: a pattern RE2 refuses and an operand of the wrong type, by field path; no value quoted
    but the operand of a condition on a header that is no credential (the quote makes most errors clear)."""
    path = tmp_path / "gateway.yaml"
    apis = [{"name": "m1", "path": "/ws/m1", "upstreams": ["ws://127.0.0.1:9/x"], "policies": BAD}]
    path.write_text(yaml.safe_dump({"apis": apis}))
    for args in (["check", str(path)], ["check", "--json", str(path)]):
        done = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, env=cli_env())
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert not [s for s in BAD_SECRETS if s in output], output
        assert "apis[0].policies[0].check-header.pattern: not a regular expression RE2 accepts" in output
        assert "missing )" in output  # what is wrong, without the pattern
        assert "apis[0].policies[1].choose.when[0].if.matches: " in output
        assert "apis[0].policies[1].choose.when[1].if.equals: Input should be a valid string" in output
        assert "apis[0].policies[1].choose.when[2].if.in: Input should be a valid list" in output
        assert "apis[0].policies[1].choose.when[3].if.equals: Input should be a valid string (got ['acme'])" in output


async def test_a_management_422_does_not_quote_the_credential(tmp_path: Path, upstream: UpstreamServer) -> None:
    """POST /apis with those policies: 422 naming each field, quoting none of the values."""
    with managed_gateway({"apis": []}, tmp_path / "state.json") as running:
        async with running.http() as http:
            response = await http.post("apis", json=api("m2", "/ws/m2", upstream, policies=BAD))
            assert response.status_code == 422, response.text
            assert not [s for s in BAD_SECRETS if s in response.text], response.text
            assert "policies[0].check-header.pattern" in response.text
