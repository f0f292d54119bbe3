"""A wss:// upstream's client certificate is checked at start-up: each problem by field path, no secret quoted."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.config.parsing import parse_config
from asgi_ws_gateway.errors import ConfigError
from support.mtls import MutualCA, make_mutual_ca

PASSPHRASE = "config-passphrase-never-quoted-0123"
PASSPHRASE_ENV = "ASGI_WS_GATEWAY_TEST_CONFIG_KEY_PASSWORD"
WHERE = "apis[0].upstreams[0]: "
ENCRYPTED = "the private key is encrypted and its passphrase (client_key_password_env)"

Fields = Callable[[MutualCA, Path], dict[str, Any]]


def _problems(upstream: dict[str, Any]) -> list[str]:
    config = {"apis": [{"name": "a", "path": "/a", "upstreams": [{"url": "wss://127.0.0.1:1/", **upstream}]}]}
    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.problems
    return []


def _pair(pki: MutualCA, _: Path) -> dict[str, Any]:
    client = pki.client("a")
    return {"client_cert": str(client.cert), "client_key": str(client.key)}


def _combined(pki: MutualCA, directory: Path) -> dict[str, Any]:
    client = pki.client("a")
    both = directory / "both.pem"
    both.write_bytes(client.cert.read_bytes() + client.key.read_bytes())
    return {"client_cert": str(both)}


def _encrypted(pki: MutualCA, _: Path) -> dict[str, Any]:
    client = pki.client("e", password=PASSPHRASE)
    return {"client_cert": str(client.cert), "client_key": str(client.key), "client_key_password_env": PASSPHRASE_ENV}


@pytest.mark.parametrize("fields", [_pair, _combined, _encrypted], ids=["cert-and-key", "in-one-file", "encrypted"])
def test_a_usable_client_certificate_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: Fields
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert _problems(fields(make_mutual_ca(tmp_path), tmp_path)) == []


def _missing(pki: MutualCA, directory: Path) -> dict[str, Any]:
    return {**_pair(pki, directory), "client_cert": str(directory / "absent.pem")}


def _directory(pki: MutualCA, directory: Path) -> dict[str, Any]:
    return {**_pair(pki, directory), "client_key": str(directory)}


def _unreadable_fifo(pki: MutualCA, directory: Path) -> dict[str, Any]:
    fifo = directory / "fifo.key"
    os.mkfifo(fifo)
    return {**_pair(pki, directory), "client_key": str(fifo)}


def _mismatch(pki: MutualCA, _: Path) -> dict[str, Any]:
    return {"client_cert": str(pki.client("a").cert), "client_key": str(pki.client("b").key)}


def _no_key(pki: MutualCA, _: Path) -> dict[str, Any]:
    return {"client_cert": str(pki.client("a").cert)}


def _not_a_certificate(pki: MutualCA, _: Path) -> dict[str, Any]:
    client = pki.client("a")
    return {"client_cert": str(client.key), "client_key": str(client.key)}


def _not_a_key(pki: MutualCA, _: Path) -> dict[str, Any]:
    client = pki.client("a")
    return {"client_cert": str(client.cert), "client_key": str(client.cert)}


def _no_passphrase(pki: MutualCA, directory: Path) -> dict[str, Any]:
    fields = _encrypted(pki, directory)
    del fields["client_key_password_env"]
    return fields


def _unset_passphrase(pki: MutualCA, directory: Path) -> dict[str, Any]:
    return {**_encrypted(pki, directory), "client_key_password_env": "ASGI_WS_GATEWAY_TEST_UNSET_VARIABLE"}


def _wrong_passphrase(pki: MutualCA, directory: Path) -> dict[str, Any]:
    return {**_encrypted(pki, directory), "client_key_password_env": PASSPHRASE_ENV + "_WRONG"}


def _key_without_cert(pki: MutualCA, directory: Path) -> dict[str, Any]:
    return {"client_key": _pair(pki, directory)["client_key"]}


BAD: list[tuple[Fields, str]] = [
    (_missing, "client_cert: cannot be read (No such file or directory)"),
    (_directory, "client_key: cannot be read ("),
    (_unreadable_fifo, "client_key: cannot be read (a FIFO, not a regular file)"),
    (_mismatch, "client_key: the private key does not match the certificate in client_cert"),
    (_no_key, "client_cert: holds no PEM private key after the certificate (or give client_key)"),
    (_not_a_certificate, "client_cert: holds no PEM certificate"),
    (_not_a_key, "client_key: holds no PEM private key"),
    (_no_passphrase, f"client_key: {ENCRYPTED} is not given"),
    (_unset_passphrase, f"client_key: {ENCRYPTED} is not set"),
    (_wrong_passphrase, "client_key: the passphrase does not decrypt the private key"),
    (_key_without_cert, "client_key and client_key_password_env need client_cert"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "problem"), BAD, ids=[fields.__name__.strip("_") for fields, _ in BAD])
def test_each_problem_is_named_by_its_field_without_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: Fields, problem: str
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setenv(PASSPHRASE_ENV + "_WRONG", "not-" + PASSPHRASE)
    problems = _problems(fields(make_mutual_ca(tmp_path), tmp_path))
    assert len(problems) == 1 and problems[0].startswith(WHERE + problem), problems
    assert PASSPHRASE not in problems[0] and "BEGIN" not in problems[0] and "PEM lib" not in problems[0]


@pytest.mark.parametrize("field", ["client_cert", "client_key", "client_key_password_env"])
def test_the_fields_apply_to_wss_upstreams_only(tmp_path: Path, field: str) -> None:
    config = {"apis": [{"name": "a", "path": "/a", "upstreams": [{"url": "ws://127.0.0.1:1/", field: "X"}]}]}
    with pytest.raises(ConfigError) as raised:
        parse_config(config)
    assert raised.value.problems == [
        WHERE + "client_cert, client_key and client_key_password_env apply to wss:// upstreams only"
    ]
