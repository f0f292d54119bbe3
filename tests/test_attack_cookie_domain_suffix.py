"""``response_cookie_domains`` refuses a top-level domain and a public suffix.

Listing ``com`` (or ``co.uk``, ``github.io``) let an upstream set a cookie for every site under it:
``Domain=bank.com`` passed as "under an allowed domain", and so did ``Domain=com`` itself. Such an
entry is a problem by field path, at start-up, in ``check`` and as the management API's 422. The
suffixes known are every single label, a short table, and the system's Public Suffix List when it is
installed (``publicsuffix``); check-origin's wildcards are judged by the same list.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.config.public_suffixes import SYSTEM_LIST, is_public_suffix, parse_rules
from support.management import Managed, api, managed_gateway
from support.policies import problems
from support.processes import cli
from support.upstream import UpstreamServer

REFUSED = ["com", ".COM", "localhost", "uk", "co.uk", ".Co.Uk", "github.io", "com.au", "herokuapp.com"]
"""Suffixes refused on any machine: single labels and the built-in table."""
ALLOWED = ["example.com", ".Example.com", "example.co.uk", "alice.github.io", "eu.example.com", "home.arpa"]
HAS_LIST = os.access(SYSTEM_LIST, os.R_OK)
LISTED_ONLY = ["ac.at", "gov.ck", "x.kawasaki.jp", "in-addr.arpa"]
"""In the Public Suffix List, not in the built-in table (exact, wildcard and an ICANN infrastructure rule)."""


def _config(domains: list[str]) -> dict[str, object]:
    api_entry = {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/"], "response_cookie_domains": domains}
    return {"apis": [api_entry]}


def _problems(domains: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_config(domains))
    return info.value.problems


@pytest.mark.parametrize("domain", REFUSED)
def test_a_public_suffix_is_no_cookie_domain(domain: str) -> None:
    (problem,) = _problems(["example.com", domain])
    what = "a public suffix" if "." in domain.removeprefix(".") else "a top-level domain"
    assert problem.startswith(f"apis[0].response_cookie_domains[1]: {what}")


def test_a_registrable_domain_is_one() -> None:
    config = load_config(_config(ALLOWED))
    assert config.apis[0].response_cookie_domains == [domain.removeprefix(".").lower() for domain in ALLOWED]


@pytest.mark.skipif(not HAS_LIST, reason=f"no Public Suffix List at {SYSTEM_LIST}")
def test_the_systems_list_refuses_what_the_table_does_not_know() -> None:
    assert [problem.partition(": ")[0] for problem in _problems(LISTED_ONLY)] == [
        f"apis[0].response_cookie_domains[{i}]" for i in range(len(LISTED_ONLY))
    ]
    load_config(_config(["city.kawasaki.jp", "www.ck"]))  # its exceptions: registrable


def test_list_rules_exact_wildcard_exception_and_idn() -> None:
    rules = parse_rules(
        "// a comment\n\nexample\nco.example\n*.wild.example\n!www.wild.example\n\u043e\u0440\u0433.example junk\n"
    )
    assert [is_public_suffix(domain, rules) for domain in ("co.example", "x.wild.example", "xn--c1avg.example")] == [
        True, True, True,
    ]  # fmt: skip
    assert [is_public_suffix(domain, rules) for domain in ("www.wild.example", "wild.example", "a.co.example")] == [
        False, False, False,
    ]  # fmt: skip


def test_check_origin_wildcards_use_the_same_suffixes() -> None:
    """check-origin's wildcard over a suffix; the list's own when installed."""
    for origin in ["https://*.co.uk", "https://*.github.io", *(["https://*.ac.at"] if HAS_LIST else [])]:
        assert problems({"check-origin": {"allowed": [origin]}}), origin
    assert not problems({"check-origin": {"allowed": ["https://*.example.co.uk", "https://*.localhost"]}})


@pytest.mark.parametrize("command", ["check", "run"])
async def test_the_command_line_refuses_it_by_field_path(command: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config(["co.uk"])))
    code, _, err = await cli(command, str(path))
    assert code == 2, err
    assert "apis[0].response_cookie_domains[0]: a public suffix, under which anyone registers a site" in err
    assert "Traceback" not in err


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> object:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def test_the_management_api_answers_422(managed: Managed, upstream: UpstreamServer) -> None:
    body = api("echo", "/ws/echo", upstream, response_cookie_domains=["example.com", "com"])
    body.pop("name")
    async with managed.http() as http:
        refused = await http.put("apis/echo", json=body)
        kept = (await http.get("apis/echo")).json()
    assert refused.status_code == 422
    assert [p.partition(": ")[0] for p in refused.json()["problems"]] == ["response_cookie_domains[1]"]
    assert kept.get("response_cookie_domains", []) == []
