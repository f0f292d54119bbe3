"""Private keys every local user can read are named in a WARNING as they are loaded (real ``run`` and
``check`` processes; keys in a directory under ``/tmp`` that every user may enter, as ``/etc/ssl`` is).

Before: ``run --ssl-keyfile`` served with a key of mode 0644, and ``check`` passed an upstream's
``client_key`` of mode 0644, without a word: any local user could copy the key and pose as the gateway.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.mtls import make_mutual_ca
from support.processes import EXE, ServerProcess, cli_env
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
