"""An address of an upstream name that stalls or presents a wrong certificate costs one try, logged.

A name's addresses were tried one after another within the one ``connect_timeout``, and only an
address that refused was left out: one that accepted TCP and never answered (TLS, or the upgrade)
took the whole timeout, a 504, every other handshake; one that presented a wrong certificate was
skipped without a word. Now an address has half the time left (the last one all of it), one that
fails for any reason is left out and tried after the others for a while, and each failure is
counted by reason and logged (a WARNING for a certificate: it may be an interception).

End to end: real uvicorn, a real upstream on 127.0.0.1 and real listeners on 127.0.0.3 (stalls) and
127.0.0.4 (wrong certificate) at the same port, ``socket.getaddrinfo`` answering the test's names
(the gateway on asyncio's loop, whose executor calls it). Then pure logic: a resolver and a connect
function that stalls for one address.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import logging
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.resolver import RESOLVER, Resolver
from support.clients import connect
from support.configs import api_entry
from support.dns import fake_dns
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.servers import UvicornFactory
from support.telemetry import address_failures
from support.upstream import UpstreamServer


@pytest.fixture
def dns() -> Iterator[dict[str, list[str]]]:
    """Names the test gives addresses to (``dns[name] = [...]``), as ``socket.getaddrinfo`` answers them."""
    with fake_dns() as names:
        yield names


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(directory: Path, *names: str) -> tuple[Path, list[ssl.SSLContext]]:
    """A CA file, and for each name a server context with a certificate for it that the CA signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("dns test CA")).issuer_name(_name("dns test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    contexts = []
    for i, name in enumerate(names):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        cert_file, key_file = directory / f"{i}.pem", directory / f"{i}.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        pkcs8 = serialization.PrivateFormat.PKCS8
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        contexts.append(context)
    return ca_file, contexts


def _gateway(
    uvicorn_server: UvicornFactory, connector: str, url: str, ca_file: Path | None, meter_provider: Any = None
) -> str:
    upstream: dict[str, Any] = {"url": url}
    if ca_file is not None:
        upstream["ca_bundle"] = str(ca_file)
    entry = {**api_entry(name="n", path="/n", connect_timeout=2, **CONNECTORS[connector]), "upstreams": [upstream]}
    app = WebSocketGateway(not_found, config={"apis": [entry]}, meter_provider=meter_provider)
    return uvicorn_server(app, ws=PASSTHROUGH, loop="asyncio").url("/n")


async def _outcome(url: str) -> int:
    try:
        async with await connect(url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("connector", ["splice", "relay"])
async def test_an_address_that_stalls_costs_one_handshake_part_of_its_time_and_is_logged(
    tmp_path: Path,
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    connector: str,
    scheme: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.resolver")
    name = f"stall.{uuid.uuid4().hex[:8]}.dns-test"
    ca_file, (context,) = _certificates(tmp_path, name) if scheme == "wss" else (None, [None])
    held: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # TCP accepted; not a byte of TLS or HTTP in answer
        await reader.read()

    with UpstreamServer(ssl=context) as upstream:
        stalling = await asyncio.start_server(stall, "127.0.0.3", upstream.port)
        try:
            dns[name] = ["127.0.0.3", "127.0.0.1"]
            url = _gateway(uvicorn_server, connector, f"{scheme}://{name}:{upstream.port}/echo", ca_file)
            outcomes = [await _outcome(url) for _ in range(8)]
        finally:
            stalling.close()
            for writer in held:
                writer.close()
    assert outcomes == [101] * 8
    assert len(held) == 1  # tried once, then after the name's other address
    lines = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.upstream.resolver"]
    assert [line for line in lines if "address 127.0.0.3 failed (timeout)" in line and name in line]


@pytest.mark.parametrize("connector", ["splice", "relay"])
async def test_an_address_with_a_wrong_certificate_is_skipped_with_a_warning_and_counted(
    tmp_path: Path,
    uvicorn_server: UvicornFactory,
    dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    reader: tuple[MeterProvider, InMemoryMetricReader],
    connector: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.resolver")
    name = f"cert.{uuid.uuid4().hex[:8]}.dns-test"
    ca_file, (good, wrong) = _certificates(tmp_path, name, "someone-else.dns-test")
    answered: list[int] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.append(1)
        writer.close()

    before = RESOLVER.address_failures["tls_certificate"]
    with UpstreamServer(ssl=good) as upstream:
        other = await asyncio.start_server(impostor, "127.0.0.4", upstream.port, ssl=wrong)
        try:
            dns[name] = ["127.0.0.4", "127.0.0.1"]
            url = _gateway(uvicorn_server, connector, f"wss://{name}:{upstream.port}/echo", ca_file, reader[0])
            outcomes = [await _outcome(url) for _ in range(4)]
        finally:
            other.close()
    assert outcomes == [101] * 4
    assert RESOLVER.address_failures["tls_certificate"] - before == 1  # then tried after the good one
    counted = address_failures(reader[1])
    assert counted["tls_certificate"] == RESOLVER.address_failures["tls_certificate"]  # the metric users query
    records = [r for r in caplog.records if r.name == "asgi_ws_gateway.upstream.resolver"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "address 127.0.0.4 failed (tls_certificate)" in warnings[0] and name in warnings[0]
    assert "Hostname mismatch" in warnings[0] and "CERTIFICATE_VERIFY_FAILED" in warnings[0]


# -- pure logic: a connect function that stalls for one address ---------------------------------------


def _resolver(*addresses: str) -> Resolver:
    return Resolver(lookup=lambda host, port: list(addresses))


async def test_each_address_has_a_share_of_the_time_and_one_that_stalls_is_tried_after_the_others() -> None:
    resolver = _resolver("10.0.0.1", "10.0.0.2")
    tried: list[str] = []

    async def attempt(address: str) -> str:
        tried.append(address)
        if address == "10.0.0.1":
            await asyncio.Event().wait()  # accepts, never answers
        return address

    for _ in range(4):
        async with asyncio.timeout(2):  # as the connectors bound it: connect_timeout
            assert await resolver.connect("svc", 80, attempt, within=2) == "10.0.0.2"
    resolver.forget("svc", 80)  # resolved again: both addresses, the one that stalled still tried last
    for _ in range(4):
        assert await resolver.connect("svc", 80, attempt, within=2) == "10.0.0.2"
    assert tried.count("10.0.0.1") == 1
    assert resolver.address_failures == {"timeout": 1}


async def test_when_every_address_stalls_each_is_left_out_and_the_caller_times_out() -> None:
    resolver = _resolver("10.0.0.1", "10.0.0.2")

    async def attempt(address: str) -> str:
        await asyncio.Event().wait()
        return address

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await resolver.connect("svc", 80, attempt, within=1)
    assert resolver.address_failures == {"timeout": 2}  # the last one's time ran out here, not the caller's
    assert ("svc", 80) not in resolver._known  # none answered: resolved again next time


async def test_a_shortage_of_the_gateway_is_not_blamed_on_the_address() -> None:
    resolver = _resolver("10.0.0.1", "10.0.0.2")

    async def attempt(address: str) -> str:
        raise OSError(errno.EMFILE, "Too many open files")

    with pytest.raises(OSError) as info:
        await resolver.connect("svc", 80, attempt, within=1)
    assert info.value.errno == errno.EMFILE
    assert resolver.address_failures == {}
    assert await resolver.addresses("svc", 80) == ["10.0.0.1", "10.0.0.2"]


async def test_an_address_that_timed_out_is_the_error_reported_over_one_that_refused_after() -> None:
    """A slow upstream beside a dead address is a 504 (it timed out), not a 502 (the dead one refused)."""
    resolver = _resolver("10.0.0.1", "10.0.0.2")

    async def attempt(address: str) -> str:
        if address == "10.0.0.2":
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        await asyncio.Event().wait()
        return address

    for _ in range(2):  # whichever address is tried first
        with pytest.raises(TimeoutError):
            await resolver.connect("svc", 80, attempt, within=1)
        resolver.address_failures.clear()
        resolver._cooling.clear()
