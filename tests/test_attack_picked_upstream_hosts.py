"""A host (or port) a handshake value picks reaches the gateway's own host only where the operator names it.

``set-backend-service`` refuses a client's values (header, query, cookie, path, client, request) at
start-up, and percent-encodes the values it takes, so a value can add no port, user-info or host. But a
claim (``ws://{jwt.host}:9000/``), a custom policy's variable set from the request (``{var.backend}``),
or a claim in the port of the operator's loopback host (``ws://127.0.0.1:{jwt.port}/``) sent the
gateway's connection to ``127.0.0.1``, ``0.0.0.0``, ``localhost`` or ``::1``: its own admin port, a
Redis, a sidecar, under the default ``upstream_networks`` (which denies link-local and metadata only).
Now such a connect is refused there unless an ``allow`` entry names the address (502, counted,
WARNING), and start-up, ``check`` and the management API warn about every namespace that can pick the
whole host, reading public suffixes (``{jwt.host}.me``).

End to end: real uvicorn on 127.0.0.1, every connector, the real upstream on 127.0.0.1 and counting
listeners on 127.0.0.2 and ::1, ``localhost`` from the system resolver; the CLI's ``check``; then the
guard's and the classifier's pure logic (hypothesis).
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.config.checks import config_warnings, url_problem
from asgi_ws_gateway.config.picked_hosts import picked_authority
from asgi_ws_gateway.config.public_suffixes import parse_rules
from asgi_ws_gateway.config.upstream_networks import METADATA_NETWORKS
from asgi_ws_gateway.policies import register_policy
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.templates import Template
from asgi_ws_gateway.upstream.address_guard import DENIED, PICKED_LOCAL, AddressGuard
from asgi_ws_gateway.upstream.resolver import RESOLVER
from support.clients import echo_status
from support.configs import api_entry, write_config
from support.dns import GUARD_LOG, fake_dns, guard_warnings
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.jwts import HS_SECRET, token
from support.management import api, managed_gateway
from support.servers import CountingListener, UvicornFactory
from support.upstream import UpstreamServer

_JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}


@register_policy("test-backend-from-header")
class BackendFromHeader:
    """A custom policy as docs/policies.md shows one: a request header into ``{var.backend}``."""

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings: Settings, env: Any) -> None:
        pass

    async def apply(self, context: Any) -> None:
        context.variables["backend"] = context.request.header("x-backend") or "backend.invalid"


@register_policy("test-set-base-url")
class SetBaseUrl:
    """A custom policy that sends the connection elsewhere itself (``context.upstream.set_base_url``)."""

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}
        url: str
        picked: bool | None = None  # None: the method's default

    def __init__(self, settings: Settings, env: Any) -> None:
        self.url, self.picked = settings.url, settings.picked

    async def apply(self, context: Any) -> None:
        if self.picked is None:
            context.upstream.set_base_url(self.url)
        else:
            context.upstream.set_base_url(self.url, picked=self.picked)


@pytest.fixture
def dns() -> Iterator[dict[str, list[str]]]:
    with fake_dns() as names:
        yield names


def _gateway(uvicorn_server: UvicornFactory, connector: str, top: dict[str, Any] | None = None, **fields: Any) -> str:
    entry = {**api_entry("ws://backend.invalid:9/echo", name="p", path="/p", connect_timeout=3), **fields}
    entry.update(CONNECTORS[connector])
    app = WebSocketGateway(not_found, config={"apis": [entry], **(top or {})})
    return uvicorn_server(app, ws=PASSTHROUGH, loop="asyncio").url("/p")


def _bearer(**claims: Any) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token(**claims)}"}}


# variant: (base_url with {port} for the listener's port, the value's host, where the listener is, via)
# via: "claim" (the token's host claim), "port" (the token's port claim), "variable" (the X-Backend header)
_OWN_HOST = {
    "claim 127.0.0.1": ("ws://{{jwt.host}}:{port}/echo", "127.0.0.1", "127.0.0.1", "claim"),
    "claim 0.0.0.0 (reaches 127.0.0.1)": ("ws://{{jwt.host}}:{port}/echo", "0.0.0.0", "127.0.0.1", "claim"),
    "claim 127.0.0.2": ("ws://{{jwt.host}}:{port}/echo", "127.0.0.2", "127.0.0.2", "claim"),
    "claim localhost (the system resolver)": ("ws://{{jwt.host}}:{port}/echo", "localhost", "127.0.0.1", "claim"),
    "claim a name to ::1": ("ws://{{jwt.host}}:{port}/echo", "[name]", "::1", "claim"),
    "claim a name to ::ffff:127.0.0.1": ("ws://{{jwt.host}}:{port}/echo", "[name]", "127.0.0.1", "claim"),
    "claim in the port of 127.0.0.1": ("ws://127.0.0.1:{{jwt.port}}/echo", "", "127.0.0.1", "port"),
    "claim in the port of localhost": ("ws://localhost:{{jwt.port}}/echo", "", "127.0.0.1", "port"),
    "variable from a header": ("ws://{{var.backend}}:{port}/echo", "127.0.0.1", "127.0.0.1", "variable"),
    "variable from a header, 0.0.0.0": ("ws://{{var.backend}}:{port}/echo", "0.0.0.0", "127.0.0.1", "variable"),
}


def _target(stack: contextlib.ExitStack, where: str) -> tuple[int, Callable[[], int]]:
    """The real upstream on 127.0.0.1 (its handshakes counted), or a counting listener elsewhere: its port,
    and what reached it."""
    if where == "127.0.0.1":
        upstream = stack.enter_context(UpstreamServer())
        return upstream.port, lambda: len(upstream.handshakes)
    listener = CountingListener(where)
    stack.callback(listener.close)
    return listener.port, lambda: listener.accepted


def _policies_and_client(variant: str, port: int, dns: dict[str, list[str]]) -> tuple[list[Any], dict[str, Any]]:
    template, value, where, via = _OWN_HOST[variant]
    base_url = template.format(port=port)
    if value == "[name]":
        value = f"own-{uuid.uuid4().hex[:8]}.picked-test"
        dns[value] = ["::1" if where == "::1" else "::ffff:127.0.0.1"]
    if via == "variable":
        policies = [{"test-backend-from-header": {}}, {"set-backend-service": {"base_url": base_url}}]
        return policies, {"additional_headers": {"X-Backend": value}}
    claims = {"port": port} if via == "port" else {"host": value}
    return [_JWT, {"set-backend-service": {"base_url": base_url}}], _bearer(**claims)


@pytest.mark.parametrize("variant", list(_OWN_HOST))
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_handshake_value_cannot_send_the_gateway_to_its_own_host_by_default(
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    connector: str,
    variant: str,
) -> None:
    """No rule written: a claim's or a variable's loopback host (or a claim's port on the operator's loopback
    host) is never connected to: 502, nothing reached, counted, one WARNING naming why."""
    caplog.set_level(logging.WARNING, logger=GUARD_LOG)
    with contextlib.ExitStack() as stack:
        port, reached = _target(stack, _OWN_HOST[variant][2])
        policies, client = _policies_and_client(variant, port, dns)
        url = _gateway(uvicorn_server, connector, policies=policies)
        before = RESOLVER.address_failures.copy()
        statuses = [await echo_status(url, **client) for _ in range(2)]
        assert reached() == 0
    assert statuses == [502, 502]
    assert (RESOLVER.address_failures - before)[DENIED] >= 2  # localhost: its ::1 and 127.0.0.1 both
    lines = guard_warnings(caplog)
    assert lines and all(line.startswith("API p: upstream ") and PICKED_LOCAL in line for line in lines)


@pytest.mark.parametrize(
    ("rule", "where", "reached"),
    [
        ({"allow": ["127.0.0.1"]}, "api", True),
        ({"allow": ["127.0.0.0/8", "::1"]}, "file", True),
        ({"allow": ["::ffff:127.0.0.1"]}, "api", True),  # the mapped spelling names it too
        ({"allow": ["0.0.0.0/0", "::/0"]}, "file", False),  # covers loopback, names it not
        ({"allow": ["10.0.0.0/8", "127.0.0.1"]}, "api", True),
        ({"allow": ["127.0.0.2"]}, "api", False),
    ],
)  # fmt: skip
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_allow_entry_that_names_loopback_lets_a_picked_host_reach_it(
    uvicorn_server: UvicornFactory, connector: str, rule: dict[str, Any], where: str, reached: bool
) -> None:
    """The operator who means it (a sidecar per region on loopback) names the address in ``allow``."""
    with UpstreamServer() as upstream:
        policies = [_JWT, {"set-backend-service": {"base_url": f"ws://{{jwt.host}}:{upstream.port}/echo"}}]
        top = {"upstream_networks": rule} if where == "file" else None
        own = rule if where == "api" else {}
        url = _gateway(uvicorn_server, connector, top, policies=policies, upstream_networks=own)
        status = await echo_status(url, **_bearer(host="127.0.0.1"))
        assert len(upstream.handshakes) == (1 if reached else 0)
    assert status == (101 if reached else 502)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_loopback_host_the_operator_wrote_is_reached_as_before(
    uvicorn_server: UvicornFactory, connector: str, host: str
) -> None:
    """A ``set-backend-service`` host with no handshake value in it is the operator's: reached under the
    default rule, as before."""
    with UpstreamServer() as upstream:
        policies = [_JWT, {"set-backend-service": {"base_url": f"ws://{host}:{upstream.port}"}}]
        url = _gateway(uvicorn_server, connector, policies=policies)
        assert await echo_status(url, **_bearer()) == 101
        assert [h.path for h in upstream.handshakes] == ["/echo"]


@pytest.mark.parametrize(("picked", "reached"), [(None, False), (True, False), (False, True)])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_custom_policy_s_base_url_is_picked_unless_it_says_it_fixed_it(
    uvicorn_server: UvicornFactory, connector: str, picked: bool | None, reached: bool
) -> None:
    """``context.upstream.set_base_url(url)``: code may build the URL from the request, so by default it is
    held as a picked host; ``picked=False`` says the code fixed it."""
    with UpstreamServer() as upstream:
        setting = {"url": f"ws://127.0.0.1:{upstream.port}", **({} if picked is None else {"picked": picked})}
        url = _gateway(uvicorn_server, connector, policies=[{"test-set-base-url": setting}])
        status = await echo_status(url)
        assert len(upstream.handshakes) == (1 if reached else 0)
    assert status == (101 if reached else 502)


async def test_the_last_base_url_set_decides_whether_the_host_was_picked(
    uvicorn_server: UvicornFactory,
) -> None:
    """A claim's host replaced by the operator's own (a later ``set-backend-service``) is the operator's."""
    with UpstreamServer() as upstream:
        policies = [
            _JWT,
            {"set-backend-service": {"base_url": f"ws://{{jwt.host}}:{upstream.port}"}},
            {"set-backend-service": {"base_url": f"ws://127.0.0.1:{upstream.port}"}},
        ]
        url = _gateway(uvicorn_server, "splice", policies=policies)
        assert await echo_status(url, **_bearer(host="127.0.0.1")) == 101


@pytest.mark.parametrize(("region", "status"), [("eu", 101), ("eu.x", 400), ("eu.", 400), (".eu", 400)])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_value_fills_only_the_label_the_template_began(
    uvicorn_server: UvicornFactory, dns: dict[str, list[str]], connector: str, region: str, status: int
) -> None:
    """``chat-{jwt.region}.<domain>`` is one label the operator began: a region with a dot would make another
    name (``chat-eu.x.<domain>``, which resolves here): refused 400 before any connect."""
    domain = f"{uuid.uuid4().hex[:8]}.picked-test"
    for name in ("chat-eu", "chat-eu.x", "chat-eu.", "chat-.eu"):
        dns[f"{name}.{domain}"] = ["127.0.0.1"]
    with UpstreamServer() as upstream:
        base_url = f"ws://chat-{{jwt.region}}.{domain}:{upstream.port}/echo"
        policies = [_JWT, {"set-backend-service": {"base_url": base_url}}]
        url = _gateway(uvicorn_server, connector, policies=policies, upstream_networks={"allow": ["127.0.0.1"]})
        assert await echo_status(url, **_bearer(region=region)) == status
        assert len(upstream.handshakes) == (1 if status == 101 else 0)


# -- the warnings: start-up, check, a management change -----------------------------------------------------------


def _warnings(base_url: str, allow: list[str] | None = None, top: list[str] | None = None) -> list[str]:
    policies = [_JWT, {"set-backend-service": {"base_url": base_url}}]
    entry = api_entry("ws://x:1/", name="c", path="/c", policies=policies, upstream_networks={"allow": allow or []})
    config = load_config({"apis": [entry], "upstream_networks": {"allow": top or []}})
    return [w for w in config_warnings(config) if "base_url" in w]


@pytest.mark.parametrize(
    ("base_url", "said"),
    [
        ("ws://{jwt.host}.me:9000/x", "takes the whole upstream host from a token's claim ({jwt.host})"),
        ("ws://{jwt.host}.co.uk/x", "takes the whole upstream host from a token's claim ({jwt.host})"),
        ("ws://{jwt.host}.github.io/x", "takes the whole upstream host from a token's claim ({jwt.host})"),
        ("ws://{var.backend}:9000/x", "takes the whole upstream host from a custom policy's variable ({var.backend})"),
        ("ws://{var.tenant}.internal/x", "takes the whole upstream host from a custom policy's variable"),
        ("ws://{jwt.a}.{var.b}/x", "from a token's claim and a custom policy's variable ({jwt.a}, {var.b})"),
        ("ws://[::{jwt.x}]:9000/x", "takes the whole upstream host from a token's claim ({jwt.x})"),
        ("ws://10.0.0.{jwt.x}:9000/x", "takes the whole upstream host from a token's claim ({jwt.x})"),
        ("ws://127.0.0.1:{jwt.port}/x", "connects to the gateway's own host on a port a token's claim picks"),
        ("ws://[::1]:9{var.p}/x", "connects to the gateway's own host on a port a custom policy's variable picks"),
        ("ws://localhost:{jwt.port}/x", "connects to the gateway's own host on a port a token's claim picks"),
    ],
)  # fmt: skip
def test_a_value_that_picks_the_whole_host_or_a_loopback_port_is_warned_about(base_url: str, said: str) -> None:
    (warning,) = _warnings(base_url)
    assert warning.startswith("API c: apis[0].policies[1].set-backend-service.base_url ")
    assert said in warning


def test_a_variable_s_warning_says_a_client_may_have_set_it() -> None:
    (warning,) = _warnings("ws://{var.backend}:9000/x")
    assert "whatever the custom policy set it from (a client's header or query, perhaps) can send" in warning


@pytest.mark.parametrize(
    ("base_url", "allow", "top"),
    [
        ("ws://chat-{jwt.region}.internal:9000/x", None, None),  # the operator's label and domain
        ("ws://{jwt.tenant}.chat.example.com/x", None, None),  # a registrable domain after the claim
        ("ws://{jwt.tenant}.svc.cluster.local/x", None, None),
        ("ws://{api.name}.internal/x", None, None),  # the operator's values
        ("ws://{subscription.product}/x", None, None),
        ("ws://chat.internal:{jwt.port}/x", None, None),  # a port on the operator's (not local) host
        ("ws://{jwt.host}.me/x", ["10.0.0.0/8"], None),  # allow is set
        ("ws://{jwt.host}/x", None, ["10.0.0.0/8"]),
        ("ws://127.0.0.1:{jwt.port}/x", ["127.0.0.1"], None),  # the operator named its own host
        ("ws://127.0.0.1:{jwt.port}/x", None, ["127.0.0.0/8"]),
        ("ws://127.0.0.1:9000/{jwt.x}", None, None),  # a claim in the path picks no host
    ],
)  # fmt: skip
def test_a_template_that_keeps_the_host_the_operator_s_is_not_warned_about(
    base_url: str, allow: list[str] | None, top: list[str] | None
) -> None:
    assert _warnings(base_url, allow, top) == []


def test_check_warns_about_each_picked_host_by_its_namespace(tmp_path: Path) -> None:
    """``asgi-ws-gateway check --json``, through its real entry point: the warnings by field path."""
    from_header = [_JWT, {"test-backend-from-header": {}}]
    apis = [
        api_entry(
            "ws://x:1/", name=name, path=f"/{name}", policies=[*from_header, {"set-backend-service": {"base_url": url}}]
        )
        for name, url in [
            ("me", "ws://{jwt.host}.me:9000/x"),
            ("var", "ws://{var.backend}:9000/x"),
            ("port", "ws://127.0.0.1:{jwt.port}/x"),
            ("regional", "ws://chat-{jwt.region}.internal:9000/x"),
        ]
    ]
    config = write_config(tmp_path, {"apis": apis})
    (tmp_path / "picked_plugin.py").write_text(_PLUGIN_SOURCE)
    exe = Path(sys.executable).parent / "asgi-ws-gateway"
    result = subprocess.run(
        [str(exe), "check", str(config), "--json", "--plugin", "picked_plugin"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "base_url" in w]
    assert len(warnings) == 3, warnings
    me, var, port = warnings
    assert me.startswith("API me: apis[0].policies[2].set-backend-service.base_url takes the whole upstream host "
                         "from a token's claim ({jwt.host})")  # fmt: skip
    assert var.startswith("API var: apis[1].policies[2].set-backend-service.base_url takes the whole upstream host "
                          "from a custom policy's variable ({var.backend})")  # fmt: skip
    assert port.startswith("API port: apis[2].policies[2].set-backend-service.base_url connects to the gateway's "
                           "own host on a port a token's claim picks")  # fmt: skip


async def test_a_management_change_answers_with_the_picked_host_warning(
    upstream: UpstreamServer, tmp_path: Path
) -> None:
    """``POST /_gateway/apis`` of an API whose claim picks the host under ``.me``: 201, with the warning."""
    base_url = {"set-backend-service": {"base_url": "ws://{jwt.host}.me:9000/x"}}
    with managed_gateway({"apis": [api("echo", "/ws/echo", upstream)]}, tmp_path / "state.json") as running:
        async with running.http() as http:
            created = await http.post("apis", json=api("me", "/ws/me", upstream, policies=[_JWT, base_url]))
    assert created.status_code == 201, created.text
    (warning,) = [w for w in created.json().get("warnings", []) if "base_url" in w]
    assert "takes the whole upstream host from a token's claim ({jwt.host})" in warning


_PLUGIN_SOURCE = """
from pydantic import BaseModel

from asgi_ws_gateway.policies import register_policy


@register_policy("test-backend-from-header")
class BackendFromHeader:
    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings, env):
        pass

    async def apply(self, context):
        context.variables["backend"] = context.request.header("x-backend")
"""


# -- the guard --------------------------------------------------------------------------------------------------

_OWN = ["127.0.0.1", "127.9.9.9", "0.0.0.0", "0.1.2.3", "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:2",
        "64:ff9b::7f00:1", "2002:7f00:1::1", "::1%lo"]  # fmt: skip


@pytest.mark.parametrize("address", _OWN)
def test_a_picked_host_s_own_host_addresses_are_refused_in_every_spelling(address: str) -> None:
    guard = AddressGuard("a", [], METADATA_NETWORKS)
    assert guard.picked.refusal(address) == PICKED_LOCAL
    assert guard.refusal(address) is None  # the operator's host: as before


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.1", "2001:db8::1", "fd00::1", "172.16.0.1"])
def test_a_picked_host_reaches_private_networks_as_before(address: str) -> None:
    guard = AddressGuard("a", [], METADATA_NETWORKS)
    assert guard.picked.refusal(address) is None


@pytest.mark.parametrize(
    ("allow", "address", "admitted"),
    [
        (["127.0.0.1"], "127.0.0.1", True), (["127.0.0.1"], "0.0.0.0", True), (["127.0.0.1"], "::ffff:127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False), (["127.0.0.1"], "::1", False), (["127.0.0.1"], "64:ff9b::7f00:1", True),
        (["::1"], "::", True), (["::1"], "127.0.0.1", False), (["0.0.0.0/0", "::/0"], "127.0.0.1", False),
        (["0.0.0.0/0", "::/0"], "::1", False), (["0.0.0.0/0", "::/0"], "10.0.0.1", True),
        (["127.0.0.0/8"], "127.3.2.1", True), (["0.0.0.0/8"], "0.1.2.3", True),
        (["::ffff:127.0.0.0/104"], "127.0.0.9", True),
    ],
)  # fmt: skip
def test_only_an_allow_entry_inside_the_local_networks_names_them(
    allow: list[str], address: str, admitted: bool
) -> None:
    guard = AddressGuard("a", [allow], METADATA_NETWORKS)
    assert (guard.picked.refusal(address) is None) == admitted


def test_the_picked_guard_keeps_the_operator_s_rules() -> None:
    guard = AddressGuard("a", [["10.0.0.0/8"]], ["10.9.0.0/16", *METADATA_NETWORKS])
    assert guard.picked.refusal("10.9.0.1") == "in upstream_networks.deny"
    assert guard.picked.refusal("192.168.0.1") == "outside upstream_networks.allow"
    assert guard.picked.refusal("169.254.169.254") == "in upstream_networks.deny"
    assert guard.picked.picked is guard.picked


# -- the classifier (hypothesis) ----------------------------------------------------------------------------------

_RULES = parse_rules("me\nco.uk\ngithub.io\ncom\nuk\nio\n*.ck\n!www.ck\n")
_REGISTRABLE = ["example.org", "chat.internal", "svc.cluster.local", "corp.example.co.uk", "www.ck"]
_PUBLIC = ["me", "co.uk", "github.io", "com", "internal", "lan", "x.ck"]
_LABEL = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_VALUE = st.from_regex(r"[A-Za-z0-9._-]{0,20}", fullmatch=True)  # what the escaping leaves a value
_REF = st.sampled_from(["{jwt.host}", "{jwt.sub}", "{var.tenant}"])


@given(
    before=st.lists(_LABEL, max_size=2), ref=_REF, prefix=st.sampled_from(["", "chat-"]),
    suffix=st.sampled_from(["", "-gw"]), domain=st.sampled_from(_REGISTRABLE), root=st.booleans(),
    port=st.sampled_from(["", ":9000", ":{jwt.port}"]), path=st.sampled_from(["", "/x", "/{jwt.sub}"]),
)  # fmt: skip
def test_a_value_followed_by_a_registrable_domain_never_picks_the_whole_host(
    before: list[str], ref: str, prefix: str, suffix: str, domain: str, root: bool, port: str, path: str
) -> None:
    host = ".".join([*before, f"{prefix}{ref}{suffix}", domain]) + ("." if root else "")
    picked = picked_authority(Template(f"wss://{host}{port}{path}"), _RULES)
    assert picked.host and not picked.whole_host


@given(
    before=st.lists(_LABEL, max_size=2), ref=_REF, between=st.sampled_from(["", "{jwt.zone}"]),
    suffix=st.sampled_from(_PUBLIC), root=st.booleans(), port=st.sampled_from(["", ":9000", ":{var.p}"]),
)  # fmt: skip
def test_a_value_that_fills_the_label_above_a_public_suffix_picks_the_whole_host(
    before: list[str], ref: str, between: str, suffix: str, root: bool, port: str
) -> None:
    host = ".".join([*before, ref + between, suffix]) + ("." if root else "")
    assert picked_authority(Template(f"ws://{host}{port}/x"), _RULES).whole_host


@given(before=st.lists(_LABEL, max_size=2), prefix=st.sampled_from(["", "chat-", "x"]), ref=_REF, root=st.booleans())
def test_a_value_at_the_end_of_the_host_picks_all_of_it(before: list[str], prefix: str, ref: str, root: bool) -> None:
    host = ".".join([*before, prefix + ref]) + ("." if root else "")
    assert picked_authority(Template(f"ws://{host}:9000/x"), _RULES).whole_host


@given(
    prefix=st.sampled_from(["chat-", "gw"]), suffix=st.sampled_from(["com", "co.uk", "me", "internal", "lan"]),
    value=_VALUE,
)  # fmt: skip
def test_a_partly_written_label_is_the_operator_s_only_above_a_suffix_the_list_does_not_name(
    prefix: str, suffix: str, value: str
) -> None:
    """``chat-{jwt.region}.com``: anyone registers ``chat-evil.com``; ``chat-{jwt.region}.internal`` is private."""
    picked = picked_authority(Template(f"ws://{prefix}{{jwt.region}}.{suffix}/x"), _RULES)
    assert picked.whole_host == (suffix in ("com", "co.uk", "me"))


@given(
    before=st.lists(_LABEL, max_size=2), ref=_REF, domain=st.sampled_from(_REGISTRABLE), value=_VALUE,
)  # fmt: skip
def test_whatever_the_value_a_host_not_wholly_picked_keeps_the_operator_s_domain(
    before: list[str], ref: str, domain: str, value: str
) -> None:
    """Rendered with any value the escaping lets through: an invalid host (400), or one under the domain."""
    template = Template(f"ws://{'.'.join([*before, 'chat-' + ref, domain])}:9000/x")
    assert not picked_authority(template, _RULES).whole_host
    rendered = template.render(_Values(value), _quote)
    if url_problem(rendered) is None:
        assert rendered.removeprefix("ws://").partition(":")[0].endswith("." + domain)


@given(host=st.sampled_from(["chat.internal", "127.0.0.1", "[::1]", "10.0.0.1", "localhost"]), value=_VALUE)
def test_a_value_in_the_port_picks_no_host_and_cannot_leave_the_port(host: str, value: str) -> None:
    template = Template(f"ws://{host}:{{jwt.port}}/x")
    picked = picked_authority(template, _RULES)
    assert picked.port == ("jwt.port",) and not picked.host and not picked.whole_host
    assert picked.local == (host in ("127.0.0.1", "[::1]", "localhost"))
    rendered = template.render(_Values(value), _quote)
    if url_problem(rendered) is None:  # only digits (or nothing) make a valid port
        assert rendered == f"ws://{host}:{value}/x" and (value.isdigit() or value == "")


class _Values:
    def __init__(self, value: str) -> None:
        self.value = value

    def lookup(self, namespace: str, path: tuple[str, ...]) -> object | None:
        return self.value


def _quote(text: str) -> str:
    """How ``set-backend-service`` writes a value into its URL."""
    return quote(text, safe="")
