"""Secrets every local user can read are named in a warning: private keys as they are loaded, a
configuration file that holds a secret as ``check`` and ``run`` read it (real processes; files in a
directory under ``/tmp`` that every user may enter, as ``/etc/ssl`` is).

Before: ``run --ssl-keyfile`` served with a key of mode 0644, ``check`` passed an upstream's ``client_key``
of mode 0644, and a configuration of mode 0644 holding an HS256 ``secret`` or a Redis password, without a
word: any local user could copy the key and pose as the gateway, or forge tokens with the secret.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.mtls import make_mutual_ca
from support.processes import EXE, ServerProcess, cli_env, main_in_process
from support.servers import free_port
from support.tls import make_ca

WARNING = "can be read by every user of this host (mode 0644): whoever copies it can pose as this gateway"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter and read (mode 0755), its parents too."""
    directory = Path(tempfile.mkdtemp(prefix="gw-keys-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o600, False), (0o640, False)])
def test_run_names_a_server_key_every_user_can_read(open_dir: Path, mode: int, warned: bool) -> None:
    ca = make_ca(open_dir)
    ca.key_file.chmod(mode)
    (open_dir / "gateway.yaml").write_text("apis: []\n")
    port = free_port()
    args = [str(EXE), "run", str(open_dir / "gateway.yaml"), "--port", str(port),
            "--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(ca.key_file)]  # fmt: skip
    with ServerProcess(args, port=port, cwd=open_dir) as server:
        server.wait_ready()
        assert server.stop() == 0, server.output()
        assert (f"the private key file {ca.key_file} {WARNING}" in server.output()) is warned, server.output()


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o600, False)])
def test_check_names_an_upstream_client_key_every_user_can_read(open_dir: Path, mode: int, warned: bool) -> None:
    pki = make_mutual_ca(open_dir)
    client = pki.client("gateway-a")
    client.key.chmod(mode)
    upstream = {"url": "wss://127.0.0.1:9/x", "ca_bundle": str(pki.ca_file), "client_cert": str(client.cert),
                "client_key": str(client.key)}  # fmt: skip
    config = open_dir / "gateway.yaml"
    config.write_text(yaml.safe_dump({"apis": [{"name": "a", "path": "/a", "upstreams": [upstream]}]}))
    done = subprocess.run([str(EXE), "check", str(config)], env=cli_env(), capture_output=True, text=True,
                          timeout=60, cwd=open_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (f"the private key file {client.key} {WARNING}" in done.stderr) is warned, done.stderr
    assert done.stderr.count("the private key file") == warned  # once, however often the file is loaded


HS_SECRET = "s" * 40
READABLE = "holds secrets and can be read by every user of this host (mode 0644): chmod 600"


def _api(**policy: object) -> dict[str, object]:
    return {"name": "a", "path": "/a", "upstreams": ["ws://127.0.0.1:9/x"], "policies": [policy] if policy else []}


@pytest.mark.parametrize(
    ("document", "mode", "warned", "as_process"),
    [
        ({"apis": [_api(**{"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "a"}})]},
         0o644, True, True),
        ({"store": {"type": "redis", "url": "redis://:hunter2hunter2@127.0.0.1:9/0"}, "apis": [_api()]}, 0o644, True,
         False),
        ({"apis": [_api(**{"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "a"}})]},
         0o600, False, False),
        ({"apis": [_api(**{"validate-jwt": {"algorithms": ["HS256"], "secret_env": "GW_SECRET", "audience": "a"}})]},
         0o644, False, False),
    ],
    ids=["hs-secret", "redis-password", "hs-secret-0600", "secret-env"],
)  # fmt: skip
def test_check_names_a_configuration_with_secrets_every_user_can_read(
    open_dir: Path, document: dict[str, object], mode: int, warned: bool, as_process: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``check`` (text and ``--json``) warns of a file of secrets every user can read: by ``check`` processes
    (``as_process``), else ``cli.main`` in this process (a process's start was most of a case's time)."""
    config = open_dir / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))
    config.chmod(mode)
    if as_process:
        env = cli_env(GW_SECRET=HS_SECRET)
        text, as_json = (subprocess.run([str(EXE), "check", str(config), *json_flag], env=env, capture_output=True,
                                        text=True, timeout=60) for json_flag in ([], ["--json"]))  # fmt: skip
        code, err, json_out = text.returncode, text.stderr, as_json.stdout
    else:
        monkeypatch.setenv("GW_SECRET", HS_SECRET)
        code, _, err = main_in_process("check", str(config))
        _, json_out, _ = main_in_process("check", str(config), "--json")
    assert code == 0, err
    assert (f"warning: {config} {READABLE}" in err) is warned, err
    assert HS_SECRET not in err and "hunter2" not in err
    assert any(READABLE in warning for warning in json.loads(json_out)["warnings"]) is warned, json_out


def test_run_names_a_configuration_with_secrets_every_user_can_read_once(open_dir: Path) -> None:
    config = open_dir / "gateway.yaml"
    policy = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "a"}}
    config.write_text(yaml.safe_dump({"apis": [_api(**policy)]}))
    config.chmod(0o644)
    port = free_port()
    with ServerProcess([str(EXE), "run", str(config), "--port", str(port), "--workers", "2"], port=port) as server:
        server.wait_ready()
        assert server.stop() == 0, server.output()
        assert server.output().count(READABLE) == 1, server.output()


@pytest.mark.parametrize(("link_in_open_dir", "warned"), [(False, True), (True, False)])
def test_a_key_behind_a_symbolic_link_is_judged_where_it_is(
    open_dir: Path, link_in_open_dir: bool, warned: bool
) -> None:
    """The directories every user must enter are the key's own, not the link's (a mounted secret links into
    ``..data/``): a 0644 key in an open directory, named by a link in a private one, is readable by all
    (it was called closed); one in a private directory, named from an open one, is not (it was warned of)."""
    private = Path(tempfile.mkdtemp(prefix="gw-private-", dir="/tmp"))  # mode 0700
    try:
        pki = make_mutual_ca(open_dir)
        client = pki.client("gateway-a")
        key_dir, link_dir = (private, open_dir) if link_in_open_dir else (open_dir, private)
        key = key_dir / "real.key"
        shutil.copyfile(client.key, key)
        key.chmod(0o644)
        link = link_dir / "linked.key"
        link.symlink_to(key)
        upstream = {"url": "wss://127.0.0.1:9/x", "ca_bundle": str(pki.ca_file), "client_cert": str(client.cert),
                    "client_key": str(link)}  # fmt: skip
        config = open_dir / "gateway.yaml"
        config.write_text(yaml.safe_dump({"apis": [{"name": "a", "path": "/a", "upstreams": [upstream]}]}))
        done = subprocess.run([str(EXE), "check", str(config)], env=cli_env(), capture_output=True, text=True,
                              timeout=60, cwd=open_dir)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (f"the private key file {link} {WARNING}" in done.stderr) is warned, done.stderr
    finally:
        shutil.rmtree(private, ignore_errors=True)
