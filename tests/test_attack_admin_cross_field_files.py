"""A file the configuration loads in one field, named by a management change in another, shows nothing of itself.

The management gate admits the paths the configuration file loads, whichever field names them: an
admin-token holder may write the file's ``client_key`` path as a JSON Schema, a ``$ref``, a public key,
a CA bundle or a certificate. Each is refused (422) in words of the gateway's or the parser's that quote
no byte of the key; every internal address of a ``$ref`` or ``$schema`` is refused without a connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.configs import api_entry
from support.management import Managed, managed_gateway
from support.mtls import ClientFiles, make_mutual_ca
from support.upstream import UpstreamServer


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, ClientFiles]:
    pki = make_mutual_ca(tmp_path)
    return pki.ca_file, pki.client("gateway")


@pytest.fixture
def managed(files: tuple[Path, ClientFiles], upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    ca_file, client = files
    mtls = {"url": "wss://127.0.0.1:9/ws", "ca_bundle": str(ca_file), "client_cert": str(client.cert),
            "client_key": str(client.key)}  # fmt: skip
    config = {"apis": [{**api_entry(upstream, name="m", path="/ws/m"), "upstreams": [mtls]}]}
    with managed_gateway(config, tmp_path / "state.json") as gateway:
        yield gateway


def _fields(ca_file: Path, client: ClientFiles) -> dict[str, dict[str, Any]]:
    key, cert = str(client.key), str(client.cert)
    schema = {"message_policies": {"inbound": [{"validate-message": {"schema_file": key}}]}}
    reference = {"message_policies": {"inbound": [{"validate-message": {"schema": {"$ref": f"file://{key}"}}}]}}
    public = {"policies": [{"validate-jwt": {"algorithms": ["ES256"], "public_key_files": [key]}}]}
    bundle = {"upstreams": [{"url": "wss://127.0.0.1:9/ws", "ca_bundle": key}]}
    certificate = {"upstreams": [{"url": "wss://127.0.0.1:9/ws", "ca_bundle": str(ca_file), "client_cert": key,
                                  "client_key": cert}]}  # fmt: skip
    return {"schema_file": schema, "$ref": reference, "public_key_files": public, "ca_bundle": bundle,
            "client_cert and client_key swapped": certificate}  # fmt: skip


@pytest.mark.parametrize("field", ["schema_file", "$ref", "public_key_files", "ca_bundle",
                                   "client_cert and client_key swapped"])  # fmt: skip
async def test_the_files_private_key_named_in_another_field_is_refused_unquoted(
    managed: Managed, files: tuple[Path, ClientFiles], upstream: UpstreamServer, field: str
) -> None:
    ca_file, client = files
    body = {**api_entry(upstream, name="p", path="/ws/p"), **_fields(ca_file, client)[field]}
    async with managed.http() as http:
        response = await http.post("apis", json=body)
    key_lines = [line for line in client.key.read_text().splitlines() if "-----" not in line]
    assert response.status_code == 422
    assert not any(line[:12] in response.text for line in key_lines), response.text


@pytest.mark.parametrize("schema_of", ["$ref", "$schema", "$id then a relative $ref", "$dynamicRef"])
async def test_a_schemas_reference_to_an_internal_service_connects_nowhere(
    managed: Managed, upstream: UpstreamServer, schema_of: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as service:
        service.settimeout(0.2)
        base = f"http://127.0.0.1:{service.getsockname()[1]}"
        schema = {"$ref": {"$ref": f"{base}/x.json"}, "$schema": {"$schema": f"{base}/meta", "type": "object"},
                  "$id then a relative $ref": {"$id": f"{base}/", "$ref": "x.json"},
                  "$dynamicRef": {"$dynamicRef": f"{base}/x#a"}}[schema_of]  # fmt: skip
        body = {**api_entry(upstream, name="p", path="/ws/p"),
                "message_policies": {"inbound": [{"validate-message": {"schema": schema}}]}}  # fmt: skip
        async with managed.http() as http:
            response = await http.post("apis", json=body)
        try:
            service.accept()[0].close()
            connected = True
        except TimeoutError:  # the listener's 0.2 s: nobody came
            connected = False
    assert (response.status_code, connected) == (422, False)
