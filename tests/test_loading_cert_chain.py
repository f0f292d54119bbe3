"""loading.load_cert_chain, the one way a certificate chain is loaded: never a prompt, the gate first, no text."""

from __future__ import annotations

import fcntl
import os
import ssl
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from asgi_ws_gateway.loading import ChainNotLoaded, Gate, LoadRefused, load_cert_chain, restricted
from support.mtls import make_mutual_ca

PASSPHRASE = "chain-passphrase-0123"


def _context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def test_an_encrypted_key_loads_with_its_passphrase(tmp_path: Path) -> None:
    client = make_mutual_ca(tmp_path).client("e", password=PASSPHRASE)
    load_cert_chain(_context(), str(client.cert), str(client.key), PASSPHRASE)


def test_an_encrypted_key_without_a_passphrase_is_said_so_and_never_prompts(tmp_path: Path) -> None:
    """In a child on a pseudo-terminal OpenSSL's own prompt would wait: the load ends at once, flagged."""
    client = make_mutual_ca(tmp_path).client("e", password=PASSPHRASE)
    code = (
        "import ssl, sys\n"
        "from asgi_ws_gateway.loading import ChainNotLoaded, load_cert_chain\n"
        "try:\n"
        f"    load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), {str(client.cert)!r}, {str(client.key)!r})\n"
        "except ChainNotLoaded as failure:\n"
        "    print(failure.missing_passphrase, failure.error, failure.read_error)\n"
    )
    primary, secondary = os.openpty()  # the child's controlling terminal: where OpenSSL would ask, and wait

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            preexec_fn=own_terminal,  # the pseudo-terminal becomes its controlling one
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert (result.stdout, result.stderr) == ("True None None\n", "")


def test_a_wrong_passphrase_is_flagged_as_tried(tmp_path: Path) -> None:
    client = make_mutual_ca(tmp_path).client("e", password=PASSPHRASE)
    with pytest.raises(ChainNotLoaded) as info:
        load_cert_chain(_context(), str(client.cert), str(client.key), "wrong")
    assert info.value.passphrase_tried and isinstance(info.value.error, ssl.SSLError)
    assert "wrong" not in repr(info.value) and PASSPHRASE not in repr(info.value)


def test_a_fifo_is_not_handed_to_openssl(tmp_path: Path) -> None:
    """Its read would wait for a writer: it is judged by what it is, and named as the file not read."""
    client = make_mutual_ca(tmp_path).client("a")
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ChainNotLoaded) as info:
        load_cert_chain(_context(), str(client.cert), str(fifo))
    assert info.value.path == str(fifo)
    assert info.value.read_error is not None and info.value.read_error.strerror == "a FIFO, not a regular file"


def test_a_restricted_configuration_loads_only_admitted_files(tmp_path: Path) -> None:
    client = make_mutual_ca(tmp_path).client("a")
    with restricted(Gate(files={str(client.cert)})), pytest.raises(LoadRefused, match="reading file"):
        load_cert_chain(_context(), str(client.cert), str(client.key))
    with restricted(Gate(files={str(client.cert), str(client.key)})):
        load_cert_chain(_context(), str(client.cert), str(client.key))
