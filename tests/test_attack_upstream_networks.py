"""``upstream_networks``: the addresses an upstream connection may reach, checked on the address connected.

The gateway connected to whatever its resolver answered: a backend name whose DNS an attacker controls
(rebinding) reached what it pointed to, and a ``set-backend-service`` template whose whole host is a
claim (``ws://{jwt.host}:...``) let the token's issuer send the gateway to ``127.0.0.1`` or the cloud
metadata service at ``169.254.169.254``. Now each address a connect is about to use is compared with
the file's ``upstream_networks`` (link-local and metadata addresses denied by default) and the API's
own: a denied one is skipped (the name's others are used), counted (``network_denied``) and logged;
with none left the handshake is a 502.

End to end: real uvicorn on 127.0.0.1, every connector, real listeners (the real upstream on 127.0.0.1,
counting TCP listeners on 127.0.0.2 and ::1), the test's names answered by ``socket.getaddrinfo`` (the
resolver's lookup threads call it). Then the configuration's checks, the management API's 422, and the
comparison's pure logic.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.checks import config_warnings
from asgi_ws_gateway.config.upstream_networks import METADATA_NETWORKS
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.address_guard import DENIED, AddressGuard
from asgi_ws_gateway.upstream.resolver import RESOLVER
from support.clients import echo_status
from support.configs import api_entry, write_config
from support.dns import GUARD_LOG, fake_dns, guard_warnings
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.jwts import HS_SECRET, token
from support.management import Managed, api, managed_gateway
from support.processes import GatewayProcess
from support.servers import CountingListener, UvicornFactory
from support.telemetry import address_failures
from support.upstream import UpstreamServer

_JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}


@pytest.fixture
def dns() -> Iterator[dict[str, list[str]]]:
    """Names the test gives addresses to (``dns[name] = [...]``), as ``socket.getaddrinfo`` answers them."""
    with fake_dns() as names:
        yield names


def _name() -> str:
    return f"backend-{uuid.uuid4().hex[:8]}.networks-test"


def _gateway(
    uvicorn_server: UvicornFactory,
    connector: str,
    url: str,
    top: dict[str, Any] | None = None,
    *,
    meter_provider: MeterProvider | None = None,
    **fields: Any,
) -> str:
    entry = {**api_entry(url, name="n", path="/n", connect_timeout=3, **CONNECTORS[connector]), **fields}
    app = WebSocketGateway(not_found, config={"apis": [entry], **(top or {})}, meter_provider=meter_provider)
    return uvicorn_server(app, ws=PASSTHROUGH, loop="asyncio").url("/n")


def _failures_since(before: Counter[str]) -> Counter[str]:
    return RESOLVER.address_failures - before


# (host as the upstream URL writes it, the listener's address, the names the test's DNS answers, the rule)
DENIED_VARIANTS = {
    "127.0.0.2": ("127.0.0.2", "127.0.0.2", None, {"deny": ["127.0.0.2"]}),
    "0.0.0.0 (reaches 127.0.0.1)": ("0.0.0.0", "127.0.0.1", None, {"deny": ["127.0.0.0/8"]}),
    "[::1]": ("[::1]", "::1", None, {"deny": ["::1/128"]}),
    "[::ffff:127.0.0.1]": ("[::ffff:127.0.0.1]", "127.0.0.1", None, {"deny": ["127.0.0.0/8"]}),
    "a name to 127.0.0.2": ("{name}", "127.0.0.2", ["127.0.0.2"], {"deny": ["127.0.0.0/8"]}),
    "a name to ::ffff:127.0.0.1": ("{name}", "127.0.0.1", ["::ffff:127.0.0.1"], {"deny": ["127.0.0.1/32"]}),
    "a name to ::1, outside allow": ("{name}", "::1", ["::1"], {"allow": ["10.0.0.0/8", "fd00::/8"]}),
    "127.0.0.2, outside allow": ("127.0.0.2", "127.0.0.2", None, {"allow": ["10.0.0.0/8"]}),
}


@pytest.mark.parametrize(
    ("variant", "where"),
    [
        *((variant, "file") for variant in DENIED_VARIANTS),
        ("a name to 127.0.0.2", "api"),
        ("127.0.0.2, outside allow", "api"),
    ],
)
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_denied_address_is_never_connected_to(
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    connector: str,
    variant: str,
    where: str,
) -> None:
    """A literal IP host or a name's address in the rule's deny (or outside its allow), the file's or the
    API's: a 502, nothing reached, one WARNING naming the API, host and address, counted."""
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    host, listen, addresses, rule = DENIED_VARIANTS[variant]
    name = _name()
    if addresses is not None:
        dns[name] = addresses
        host = name
    listener = CountingListener(listen)
    try:
        top = {"upstream_networks": rule} if where == "file" else None
        own = rule if where == "api" else {}
        url = _gateway(uvicorn_server, connector, f"ws://{host}:{listener.port}/echo", top, upstream_networks=own)
        before = RESOLVER.address_failures.copy()
        statuses = [await echo_status(url) for _ in range(3)]
    finally:
        listener.close()
    assert listener.accepted == 0
    assert statuses == [502] * 3
    assert _failures_since(before) == Counter({DENIED: 3})
    (line,) = guard_warnings(caplog)  # one line for three refusals: throttled
    assert "API n: upstream " + host.strip("[]") in line and f"address {(addresses or [host.strip('[]')])[0]}" in line


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_name_with_denied_and_allowed_addresses_connects_to_the_allowed_ones_only(
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    reader: tuple[MeterProvider, InMemoryMetricReader],
    connector: str,
) -> None:
    """Rebinding's usual answer: a good address beside a bad one. Every handshake goes to the good one;
    each refusal is in the metric users query."""
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    name = _name()
    with UpstreamServer() as upstream:
        denied = CountingListener("127.0.0.2", upstream.port)
        try:
            dns[name] = ["127.0.0.2", "127.0.0.1", "169.254.169.254"]
            top = {"upstream_networks": {"deny": ["127.0.0.2", *METADATA_NETWORKS]}}
            url = _gateway(
                uvicorn_server, connector, f"ws://{name}:{upstream.port}/echo", top, meter_provider=reader[0]
            )
            before = RESOLVER.address_failures.copy()
            statuses = [await echo_status(url) for _ in range(6)]
        finally:
            denied.close()
        assert len(upstream.handshakes) == 6
    assert statuses == [101] * 6
    assert denied.accepted == 0
    lines = guard_warnings(caplog)
    assert len(lines) == 2  # one per address, not per handshake
    assert any("address 127.0.0.2 is in upstream_networks.deny" in line for line in lines)
    assert any("address 169.254.169.254 is in upstream_networks.deny" in line for line in lines)
    assert _failures_since(before) == Counter({DENIED: 12})  # two addresses skipped per handshake
    counted = address_failures(reader[1])
    assert counted[DENIED] == RESOLVER.address_failures[DENIED]


async def test_under_run_a_name_the_system_resolver_answers_is_checked(tmp_path: Path) -> None:
    """``asgi-ws-gateway run``, ``localhost`` from the system resolver: the API that denies loopback reaches
    nothing (502, its WARNING in the log), the one beside it with the defaults connects as before."""
    log = tmp_path / "gateway.log"
    with UpstreamServer() as upstream:
        fenced = {"deny": ["127.0.0.0/8", "::1/128"]}
        config = write_config(tmp_path, {"apis": [
            api_entry(upstream, name="open", path="/open"),
            api_entry(f"ws://localhost:{upstream.port}/echo", name="fenced", path="/fenced", upstream_networks=fenced),
        ]})  # fmt: skip
        gateway = GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log)
        async with gateway:
            assert await echo_status(gateway.url("/open")) == 101
            assert await echo_status(gateway.url("/fenced")) == 502
        assert len(upstream.handshakes) == 1
    text = log.read_text()
    assert f"API fenced: upstream localhost port {upstream.port}: address " in text
    assert "is in upstream_networks.deny: not connected to" in text


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_default_keeps_loopback_and_private_upstreams_working(
    uvicorn_server: UvicornFactory, dns: dict[str, list[str]], connector: str
) -> None:
    """No rule written: 127.0.0.1 by address, by a name, and as 0.0.0.0 are reached as before."""
    name = _name()
    dns[name] = ["::ffff:127.0.0.1"]
    before = RESOLVER.address_failures.copy()
    with UpstreamServer() as upstream:
        for host in ("127.0.0.1", name, "0.0.0.0"):
            url = _gateway(uvicorn_server, connector, f"ws://{host}:{upstream.port}/echo")
            assert await echo_status(url) == 101, host
    assert not _failures_since(before)


# A claim the issuer chose as the whole host: the metadata service by address, by a name, over IPv6.
METADATA_CLAIMS = {
    "169.254.169.254": ("169.254.169.254", None),
    "a name to 169.254.169.254": ("{name}", ["169.254.169.254"]),
    "a name to fd00:ec2::254": ("{name}", ["fd00:ec2::254"]),
    "a name to ::ffff:169.254.169.254": ("{name}", ["::ffff:169.254.169.254"]),
    "a name to 100.100.100.200": ("{name}", ["100.100.100.200"]),
}


@pytest.mark.parametrize("claim", list(METADATA_CLAIMS))
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_claim_cannot_send_the_gateway_to_the_metadata_service_by_default(
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    connector: str,
    claim: str,
) -> None:
    """``set-backend-service: ws://{jwt.host}:80/``, no rule written: never connected (a 502 at once, not a
    connect that times out or is refused), counted and logged."""
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    host, addresses = METADATA_CLAIMS[claim]
    if addresses is not None:
        host = _name()
        dns[host] = addresses
    with UpstreamServer() as upstream:
        policies = [_JWT, {"set-backend-service": {"base_url": "ws://{jwt.host}:80/latest/meta-data/"}}]
        url = _gateway(uvicorn_server, connector, upstream.url("/echo"), policies=policies)
        before = RESOLVER.address_failures.copy()
        status = await echo_status(url, additional_headers={"Authorization": f"Bearer {token(host=host)}"})
        assert not upstream.handshakes
    assert status == 502
    assert _failures_since(before) == Counter({DENIED: 1})
    (line,) = guard_warnings(caplog)
    assert f"API n: upstream {host} port 80: address {(addresses or [host])[0]} is in upstream_networks.deny" in line


@pytest.mark.parametrize("claim", ["127.0.0.1", "0.0.0.0", "{name}"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_api_s_allow_list_keeps_a_claim_s_host_off_loopback(
    uvicorn_server: UvicornFactory, dns: dict[str, list[str]], connector: str, claim: str
) -> None:
    """The API whose template takes the whole host from a claim allows only its backends' network: the
    issuer's ``127.0.0.1`` (or ``0.0.0.0``, or a name rebound to ``::ffff:127.0.0.1``) reaches nothing."""
    if claim == "{name}":
        claim = _name()
        dns[claim] = ["::ffff:127.0.0.1"]
    with UpstreamServer() as upstream:
        base_url = f"ws://{{jwt.host}}:{upstream.port}/echo"
        policies = [_JWT, {"set-backend-service": {"base_url": base_url}}]
        rule = {"allow": ["10.0.0.0/8"]}
        url = _gateway(uvicorn_server, connector, upstream.url("/echo"), policies=policies, upstream_networks=rule)
        status = await echo_status(url, additional_headers={"Authorization": f"Bearer {token(host=claim)}"})
        assert not upstream.handshakes
    assert status == 502


# -- the configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"upstream_networks": {"deny": ["10.0.0.0/33"]}}, "upstream_networks.deny[0]: '10.0.0.0/33' is not an IP"),
        ({"upstream_networks": {"allow": ["example.com"]}}, "upstream_networks.allow[0]: 'example.com' is not an IP"),
        ({"upstream_networks": {"deny": "10.0.0.0/8"}}, "upstream_networks.deny: Input should be a valid list"),
        ({"upstream_networks": {"block": []}}, "upstream_networks.block: unknown field"),
        ({"apis": [{"name": "a", "path": "/a", "upstreams": ["ws://x/"], "upstream_networks": {"allow": ["::1/129"]}}]},
         "apis[0].upstream_networks.allow[0]: '::1/129' is not an IP"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_refused_at_start_up_by_its_field_path(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert any(line.startswith(problem) for line in refused.value.problems), refused.value.problems


def test_check_names_a_bad_rule_by_its_field_path(tmp_path: Path) -> None:
    """``asgi-ws-gateway check``, through its real entry point: exit 2, the problem by field path."""
    config = write_config(tmp_path, {"apis": [], "upstream_networks": {"allow": ["10.0.0.0/8", "10.0.0.300"]}})
    exe = Path(sys.executable).parent / "asgi-ws-gateway"
    result = subprocess.run([str(exe), "check", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "upstream_networks.allow[1]: '10.0.0.300' is not an IP address or network" in result.stderr


@pytest.mark.parametrize(
    ("base_url", "file_allow", "api_allow", "warned"),
    [
        ("ws://{jwt.host}:80/x", [], [], True),
        ("wss://{jwt.host}/x", [], [], True),
        ("ws://{jwt.sub}.{jwt.zone}:9000/x", [], [], True),  # the issuer picks the domain too
        ("ws://chat-{jwt.region}.internal:9000/x", [], [], False),  # the operator's domain
        ("ws://{api.name}.internal:9000/x", [], [], False),  # not a claim
        ("ws://{jwt.host}:80/x", ["10.0.0.0/8"], [], False),
        ("ws://{jwt.host}:80/x", [], ["10.0.0.0/8"], False),
        ("ws://{jwt.host}.:80/x", [], [], True),  # a root dot is no domain: evil.example. is any name
        ("wss://{jwt.host}./x", [], [], True),
        ("ws://chat-{jwt.region}.:9000/x", [], [], True),
        ("ws://chat-{jwt.region}.internal./x", [], [], False),  # the operator's domain, written absolute
        ("ws://chat.internal:{jwt.port}/x", [], [], False),  # a claim picks the port only
        ("ws://gw-{jwt.host}:{jwt.port}/x", [], [], True),
    ],
)  # fmt: skip
def test_a_claim_that_picks_the_whole_host_without_an_allow_list_is_warned_about(
    base_url: str, file_allow: list[str], api_allow: list[str], warned: bool
) -> None:
    """At start-up, in ``check`` and in a management change's answer (all read ``config_warnings``)."""
    policies = [_JWT, {"set-backend-service": {"base_url": base_url}}]
    entry = api_entry("ws://x:1/", name="c", path="/c", policies=policies, upstream_networks={"allow": api_allow})
    config = load_config({"apis": [entry], "upstream_networks": {"allow": file_allow}})
    found = [w for w in config_warnings(config) if "takes the whole upstream host from a token's claim" in w]
    expected = (
        "API c: apis[0].policies[1].set-backend-service.base_url takes the whole upstream host from a token's claim"
    )
    assert [w.startswith(expected) and "apis[0].upstream_networks.allow" in w for w in found] == [True] * warned


def test_the_defaults_deny_link_local_and_metadata_addresses_only() -> None:
    config = load_config({"apis": []})
    assert config.upstream_networks.allow == []
    assert set(config.upstream_networks.deny) == set(METADATA_NETWORKS)


@pytest.fixture
def managed(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        yield running


async def test_the_management_api_refuses_a_bad_rule_with_422_and_applies_a_good_one(
    managed: Managed, upstream: UpstreamServer
) -> None:
    """An API's own rule through the management API: checked as the file's; it narrows, so a change may set it."""
    async with managed.http() as http:
        bad = await http.post("apis", json=api("x", "/ws/x", upstream, upstream_networks={"deny": ["300.0.0.1"]}))
        assert bad.status_code == 422
        assert bad.json()["problems"] == ["upstream_networks.deny[0]: '300.0.0.1' is not an IP address or network"]
        good = api("x", "/ws/x", upstream, upstream_networks={"deny": ["127.0.0.0/8"]})
        assert (await http.post("apis", json=good)).status_code == 201
    assert await echo_status(managed.url("/ws/echo")) == 101
    reached = len(upstream.handshakes)
    assert await echo_status(managed.url("/ws/x")) == 502
    assert len(upstream.handshakes) == reached


# -- the comparison -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "denied"),
    [
        ("169.254.169.254", True), ("::ffff:169.254.169.254", True), ("::ffff:a9fe:a9fe", True),
        ("64:ff9b::169.254.169.254", True), ("2002:a9fe:a9fe::1", True), ("fe80::1%eth0", True),
        ("fd00:ec2::254", True), ("100.100.100.200", True), ("168.63.129.16", True),
        ("127.0.0.1", False), ("::1", False), ("0.0.0.0", False), ("10.0.0.1", False), ("2001:db8::1", False),
        ("not-an-address", True),
    ],
)  # fmt: skip
def test_the_default_rule_reads_each_spelling_as_the_address_it_reaches(address: str, denied: bool) -> None:
    guard = AddressGuard("a", [], METADATA_NETWORKS)
    assert (guard.refusal(address) is not None) == denied


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "in upstream_networks.deny"), ("127.0.0.2", "in upstream_networks.deny"),
        ("0.0.0.0", "in upstream_networks.deny"), ("::ffff:127.0.0.1", "in upstream_networks.deny"),
        ("::", "outside upstream_networks.allow"), ("::1", "outside upstream_networks.allow"),
        ("10.1.2.3", None), ("::ffff:10.1.2.3", None), ("64:ff9b::10.1.2.3", None),
        ("10.9.0.1", "in upstream_networks.deny"), ("192.168.1.1", "outside upstream_networks.allow"),
        ("172.16.0.1", "outside upstream_networks.allow"),  # the file allows it, the API does not
    ],
)  # fmt: skip
def test_an_api_s_rule_narrows_the_file_s(address: str, why: str | None) -> None:
    """``0.0.0.0`` and ``::`` are the host's own loopback; allow lists all hold, deny lists all count."""
    guard = AddressGuard("a", [["10.0.0.0/8", "172.16.0.0/12"], ["10.0.0.0/8"]], ["127.0.0.0/8", "10.9.0.0/16"])
    assert guard.refusal(address) == why
