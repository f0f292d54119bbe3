"""``asgi-ws-gateway run --ssl-certfile ... --ssl-keyfile ...``: the gateway ends TLS itself.

Real ``run`` processes, a real certificate (``support.tls``), a real upstream; the bounds a TLS handshake
and close get under ``run`` are in ``test_attack_tls_handshake_bounds.py``. Bad TLS options are refused
before serving (exit 2, the flag and what is wrong), never by a worker's traceback, and an encrypted key
never makes OpenSSL wait for a password on the terminal.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from asgi_ws_gateway.server.head_deadline import TLS_UNBOUNDED
from support import tls as test_tls
from support.configs import build_config, write_config
from support.processes import main_in_process, ready_server
from support.rawws import split_frames, upgrade_blocking
from support.tls import healthz, make_ca
from support.upstream import UpstreamServer

PASSWORD_ENV = "ASGI_WS_GATEWAY_SSL_KEYFILE_PASSWORD"
PASSWORD = "correct horse battery staple"


def _run(config: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``run`` that is expected to exit at once (stdin closed: a password prompt would fail, not wait)."""
    return subprocess.run(
        [sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", "0", *options],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _run_in_process(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """:func:`_run` answered by ``cli.main`` in this process, for options it refuses before serving: a process's
    start and the server's imports were most of a refusal's time."""
    code, out, err = main_in_process("run", str(config), "--port", "0", *options)
    return subprocess.CompletedProcess(["run", str(config), *options], code, out, err)


def _encrypted_key(ca: test_tls.TestCA, directory: Path) -> Path:
    key = serialization.load_pem_private_key(ca.key_file.read_bytes(), password=None)
    path = directory / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return path


@pytest.mark.parametrize("passthrough", [True, False], ids=["spliced", "relayed"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["key", "encrypted-key"])
async def test_run_serves_wss_and_https_with_its_own_certificate(
    tmp_path: Path, passthrough: bool, encrypted: bool
) -> None:
    ca = make_ca(tmp_path)
    key = _encrypted_key(ca, tmp_path) if encrypted else ca.key_file
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with UpstreamServer() as upstream:
        config = write_config(tmp_path, build_config(upstream, api={"passthrough": passthrough}))
        tls = ["--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(key)]

        def command(port: int) -> list[str]:
            return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), *tls]

        with ready_server(command, env={PASSWORD_ENV: PASSWORD} if encrypted else None) as server:
            async with connect(f"wss://127.0.0.1:{server.port}/ws/echo", ssl=context, compression=None) as ws:
                for message in ("hello", b"\x00" * 70_000, "bye"):
                    await ws.send(message)
                    assert await ws.recv() == message
                await ws.close(4001, "done")
            assert ws.close_code == 4001
            assert healthz(server.port, context).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:  # no plain text here
                plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                assert not plain.recv(4096).startswith(b"HTTP/")
            assert server.stop() == 0
            output = server.output()
    assert upstream.closes == [(4001, "done")]
    assert '"WebSocket /ws/echo" 101 echo closed by client with 4001' in output
    assert TLS_UNBOUNDED not in output  # run serves on the loop that bounds a TLS handshake
    assert "Traceback" not in output
    assert "ERROR" not in output
    assert PASSWORD not in output


def test_bad_tls_options_are_refused_before_serving(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_ca(tmp_path / "other")  # a key that is not the certificate's
    config = write_config(tmp_path, build_config())
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    encrypted = _encrypted_key(ca, tmp_path)
    cases = {
        # options: what stderr must say
        ("--ssl-keyfile", str(ca.key_file)): "--ssl-keyfile needs --ssl-certfile",
        ("--ssl-certfile", str(tmp_path / "missing.pem")): f"--ssl-certfile: {tmp_path / 'missing.pem'}: No such file",
        ("--ssl-certfile", str(fifo)): "a FIFO, not a regular file",
        ("--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(tmp_path)): "--ssl-keyfile: ",
        ("--ssl-certfile", str(ca.ca_file), "--ssl-keyfile", str(ca.key_file)): "no usable certificate and key",
        ("--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(other.key_file)): "no usable certificate and key",
        ("--ssl-certfile", str(ca.cert_file)): "no usable certificate and key",  # no key in the chain's file
        ("--ssl-certfile", str(config)): "no usable certificate and key",
        ("--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(encrypted)): PASSWORD_ENV,
    }
    for index, (options, said) in enumerate(cases.items()):
        result = _run(config, *options) if index == 0 else _run_in_process(config, *options)  # one by the command line
        assert result.returncode == 2, (options, result.stderr)
        assert said in result.stderr, (options, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout


def test_a_wrong_password_is_refused_and_never_written(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    config = write_config(tmp_path, build_config())
    wrong = "not-the-password-5f1d"
    result = _run(
        config, "--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(_encrypted_key(ca, tmp_path)),
        env={PASSWORD_ENV: wrong},
    )  # fmt: skip
    assert result.returncode == 2
    assert "no usable certificate and key" in result.stderr
    assert wrong not in result.stderr + result.stdout


def _certificate(directory: Path, *, valid_from: datetime.datetime, valid_until: datetime.datetime) -> Path:
    """A self-signed certificate and its key in one PEM file, valid for the given times."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(valid_from).not_valid_after(valid_until)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = directory / f"{valid_from:%Y%m%d}-{valid_until:%Y%m%d}.pem"
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "said"),
    [
        (-30, -1, "expired at"),
        (2, 30, "not valid before"),
        (-30, 3, "expires at"),
        (-30, 400, None),
    ],
    ids=["expired", "not-yet-valid", "expiring", "valid"],
)
def test_run_warns_of_a_certificate_clients_will_refuse_or_soon(
    tmp_path: Path, valid_from: int, valid_until: int, said: str | None
) -> None:
    """Served all the same (a test, a renewal on its way), with one warning before serving."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    certfile = _certificate(tmp_path, valid_from=now + valid_from * day, valid_until=now + valid_until * day)
    config = write_config(tmp_path, build_config())

    def command(port: int) -> list[str]:
        return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), "--ssl-certfile", str(certfile)]

    with ready_server(command) as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the dates are what is tested
        assert healthz(server.port, context).startswith(b"HTTP/1.1 200")
        assert server.stop() == 0
        stderr = server.stderr()
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: --ssl-certfile:")]
    assert len(warnings) == (0 if said is None else 1), stderr
    if said is not None:
        assert said in warnings[0]


BACKLOG = 8_000_000  # more than the kernel's buffers hold: the rest waits in the transports at the close


def test_a_slow_tls_reader_gets_its_whole_relayed_backlog_and_the_close_frame(tmp_path: Path) -> None:
    """The close of a TLS connection still writing a backlog waits for a client reading it on steadily,
    longer than the lingering close's 2 s: a TLS close's bounds look at the client's progress too.
    (Relayed: the splice aborts such a reader at ``close_timeout`` while the upstream's answer to its close
    waits behind the backlog, over TLS or not.)"""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with UpstreamServer(compression=None) as upstream:
        api = {
            "passthrough": False,
            "max_message_size": 2 * BACKLOG,
            "upstreams": [upstream.url(f"/zeros/{BACKLOG}")],
        }
        config = write_config(tmp_path, build_config(upstream, api=api))
        tls = ["--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(ca.key_file)]

        def command(port: int) -> list[str]:
            return ["-m", "asgi_ws_gateway", "run", str(config), "--port", str(port), *tls]

        with ready_server(command) as server, socket.socket() as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
            raw.settimeout(15)
            raw.connect(("127.0.0.1", server.port))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
                after_head = upgrade_blocking(client, server.port, "/ws/echo")
                client.sendall(b"\x82\x82\x00\x00\x00\x00go")
                received = bytearray(after_head) + client.recv(1 << 16)  # the backlog is on its way
                client.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # its close, answered behind the backlog
                while chunk := client.recv(1 << 16):  # one TLS record (16 KiB) a read: ~4 s, twice the linger's 2 s
                    received += chunk
                    time.sleep(0.0075)
            assert server.stop() == 0
            output = server.output()
    frames, rest = split_frames(bytes(received))
    assert [(opcode, len(payload)) for opcode, payload in frames] == [(0x2, BACKLOG), (0x8, 2)]
    assert frames[1][1] == b"\x03\xe8" and rest == b""
    assert "Traceback" not in output
