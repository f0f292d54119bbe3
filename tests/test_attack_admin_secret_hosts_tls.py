"""The operator's host is the operator's only over the file's TLS: an admin-token holder cannot turn it off.

The secret-host rule compared host and port only. A holder created an API to the file's
``wss://127.0.0.1:P`` with ``verify_tls: false`` (201), or ``ws://`` on that port (201), or changed the
file's own API so (200): whoever held that address then — a server that took the port, a spoofed
name — read the file's ``X-Internal-Auth``. Now an API changed here that inherits a file credential
connects to a host the file sends to at least as strictly as the file does: TLS where the file uses
``wss://``, verified where the file verifies, with the CA bundle the file verifies that host with
(another would let another CA vouch), ``set-backend-service`` URLs included. A ``422`` names the
field, never the secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import tls as test_tls
from support.clients import expect_status
from support.management import managed_gateway
from support.upstream import UpstreamServer

SECRET = "operator-upstream-key-0123456789"
AUTH = {"set-header": {"header": "X-Internal-Auth", "value": SECRET}}
THE_SECRET = "the global set-header X-Internal-Auth (the operator's secret)"


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[UpstreamServer]:
    """A TLS server with a certificate of a CA the file does not trust, on the operator's address."""
    (tmp_path / "impostor").mkdir()
    with UpstreamServer(ssl=test_tls.make_ca(tmp_path / "impostor").server_context()) as server:
        yield server


@pytest.fixture
def cas(tmp_path: Path) -> tuple[test_tls.TestCA, test_tls.TestCA]:
    """The CA the file verifies its chat host with, and the one it verifies another host with."""
    (tmp_path / "chat").mkdir()
    (tmp_path / "other").mkdir()
    return test_tls.make_ca(tmp_path / "chat"), test_tls.make_ca(tmp_path / "other")


def _config(port: int, cas: tuple[test_tls.TestCA, test_tls.TestCA], **top: Any) -> dict[str, Any]:
    """chat on wss://127.0.0.1:port (CA 0), other on wss://127.0.0.1:1 (CA 1), the global credential."""
    chat = {"url": f"wss://127.0.0.1:{port}/echo", "ca_bundle": str(cas[0].ca_file)}
    other = {"url": "wss://127.0.0.1:1/echo", "ca_bundle": str(cas[1].ca_file)}
    apis = [
        {"name": "chat", "path": "/chat", "upstreams": [chat], "connect_timeout": 5},
        {"name": "other", "path": "/other", "upstreams": [other]},
    ]
    return {"apis": apis, "policies": [AUTH], **top}


def _mine(*upstreams: Any, **fields: Any) -> dict[str, Any]:
    return {"name": "mine", "path": "/mine", "upstreams": list(upstreams), **fields}


@pytest.fixture
def weaker(impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA]) -> dict[str, dict[str, Any]]:
    """APIs that would connect to the file's chat host less strictly than the file does, by what they change."""
    url = f"wss://127.0.0.1:{impostor.port}/echo"
    other_ca = str(cas[1].ca_file)
    return {
        "verify_tls: false": _mine({"url": url, "verify_tls": False}),
        "ws:// on the wss:// port": _mine(f"ws://127.0.0.1:{impostor.port}/echo"),
        "the system's store": _mine(url),
        "another file CA": _mine({"url": url, "ca_bundle": other_ca}),
        "a ws:// base URL": _mine(
            {"url": "wss://127.0.0.1:1/echo", "ca_bundle": other_ca},
            policies=[{"set-backend-service": {"base_url": f"ws://127.0.0.1:{impostor.port}"}}],
        ),
        "a wss:// base URL with another CA": _mine(
            {"url": "wss://127.0.0.1:1/echo", "ca_bundle": other_ca},
            policies=[{"set-backend-service": {"base_url": f"wss://127.0.0.1:{impostor.port}"}}],
        ),
    }


EXPECTED = {
    "verify_tls: false": ("upstreams[0]", "without verifying its certificate (upstreams[0].verify_tls: false)"),
    "ws:// on the wss:// port": ("upstreams[0]", "without TLS (ws://)"),
    "the system's store": ("upstreams[0]", "against the system's store (no upstreams[0].ca_bundle), not the CAs"),
    "another file CA": ("upstreams[0]", "against upstreams[0].ca_bundle, not the CAs the configuration file does"),
    "a ws:// base URL": ("policies (set-backend-service)", "without TLS (ws://)"),
    "a wss:// base URL with another CA": ("policies (set-backend-service)", "against upstreams[0].ca_bundle, not"),
}


@pytest.mark.parametrize("change", list(EXPECTED))
async def test_a_new_api_may_not_weaken_the_tls_of_the_operators_host(
    tmp_path: Path,
    impostor: UpstreamServer,
    cas: tuple[test_tls.TestCA, test_tls.TestCA],
    weaker: dict[str, dict[str, Any]],
    change: str,
) -> None:
    """POST /apis to the file's wss:// host with weaker TLS: 422 naming the field, never the secret."""
    with managed_gateway(_config(impostor.port, cas), tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=weaker[change])
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            field, what = EXPECTED[change]
            assert problem.startswith(f"{field}: this API would connect to 127.0.0.1:{impostor.port}, "), problem
            assert what in problem and THE_SECRET in problem, problem
            assert SECRET not in refused.text
        status, _, _ = await expect_status(running.url("/mine"))
        assert status == 404
    assert not impostor.handshakes


async def test_the_files_own_api_may_not_turn_verification_off(
    tmp_path: Path, impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA]
) -> None:
    """PUT of the file's API with verify_tls: false is a 422: the impostor on its address still gets nothing."""
    with managed_gateway(_config(impostor.port, cas), tmp_path / "state.json") as running:
        async with running.http() as http:
            got = await http.get("apis/chat")
            document = got.json()
            document["upstreams"] = [{"url": f"wss://127.0.0.1:{impostor.port}/echo", "verify_tls": False}]
            refused = await http.put("apis/chat", json=document, headers={"If-Match": got.headers["etag"]})
            assert refused.status_code == 422, refused.text
            (problem,) = refused.json()["problems"]
            assert problem.startswith("upstreams[0]: this API would connect to") and SECRET not in refused.text
        status, _, _ = await expect_status(running.url("/chat"))  # still verified: the impostor's CA is not
        assert status == 502
    assert not impostor.handshakes


async def test_the_files_own_tls_settings_are_accepted(
    tmp_path: Path, impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA]
) -> None:
    """The control: the file's CA bundle for that host, and a base URL to it from a ws:// upstream of the file's."""
    url = f"wss://127.0.0.1:{impostor.port}/echo"
    with managed_gateway(_config(impostor.port, cas), tmp_path / "state.json") as running:
        async with running.http() as http:
            same = _mine({"url": url, "ca_bundle": str(cas[0].ca_file)})
            assert (await http.post("apis", json=same)).status_code == 201
            base_url = {"set-backend-service": {"base_url": f"wss://127.0.0.1:{impostor.port}/v2"}}
            moved = {**same, "name": "moved", "path": "/moved", "policies": [base_url]}
            assert (await http.post("apis", json=moved)).status_code == 201


async def test_an_api_that_skips_the_credential_may_use_any_tls(
    tmp_path: Path, impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA]
) -> None:
    """Without the file's credential there is nothing to protect: verify_tls: false is the holder's choice."""
    with managed_gateway(_config(impostor.port, cas), tmp_path / "state.json") as running:
        async with running.http() as http:
            unverified = _mine({"url": f"wss://127.0.0.1:{impostor.port}/echo", "verify_tls": False})
            created = await http.post("apis", json={**unverified, "skip_policies": ["set-header"]})
            assert created.status_code == 201, created.text


async def test_an_operator_who_allows_every_host_sets_no_floor(
    tmp_path: Path, impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA]
) -> None:
    """``allowed_upstream_hosts: ['*']``: the holder may send the credential anywhere, so TLS is theirs too."""
    config = _config(impostor.port, cas, management={"allowed_upstream_hosts": ["*"]})
    with managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            plain = _mine(f"ws://127.0.0.1:{impostor.port}/echo")
            assert (await http.post("apis", json=plain)).status_code == 201


@pytest.mark.parametrize("allowed", ["127.0.0.1", "*.0.0.1"])
async def test_another_port_of_the_files_host_keeps_the_floor(
    tmp_path: Path, impostor: UpstreamServer, cas: tuple[test_tls.TestCA, test_tls.TestCA], allowed: str
) -> None:
    """``allowed_upstream_hosts`` naming the file's host without a port (or by a wildcard) trusts every port of it:
    a ws:// to another port of it passed (201), and a plain listener there read the secret (an attack pass). The
    file's TLS to that name holds on every port; the file's own settings on a new port still pass."""
    config = _config(impostor.port, cas, management={"allowed_upstream_hosts": [allowed]})
    with UpstreamServer() as plain, managed_gateway(config, tmp_path / "state.json") as running:
        async with running.http() as http:
            refused = await http.post("apis", json=_mine(f"ws://127.0.0.1:{plain.port}/echo"))
            assert refused.status_code == 422, refused.text
            assert "without TLS (ws://)" in refused.text and SECRET not in refused.text
            unverified = _mine({"url": f"wss://127.0.0.1:{plain.port}/echo", "verify_tls": False})
            assert (await http.post("apis", json=unverified)).status_code == 422
            same = _mine({"url": f"wss://127.0.0.1:{plain.port}/echo", "ca_bundle": str(cas[0].ca_file)})
            assert (await http.post("apis", json=same)).status_code == 201
        assert not plain.handshakes
