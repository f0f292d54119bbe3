"""The TLS files the OTLP exporters read are loaded before the providers are built: each problem names
its variable (the SDK logged a traceback for a missing CA file and exported on against the system's
store; a client certificate without its key went as none; a FIFO held the start)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.telemetry.providers import environment_config_problems
from support.mtls import MutualCA, make_mutual_ca
from support.processes import EXE

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:9"}
CA = "OTEL_EXPORTER_OTLP_CERTIFICATE"
KEY = "OTEL_EXPORTER_OTLP_CLIENT_KEY"
CHAIN = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"


def _problems(files: dict[str, str | Path]) -> list[str]:
    return environment_config_problems(TelemetryConfig(), {**ENDPOINT, **{k: str(v) for k, v in files.items()}})


def test_a_ca_and_a_client_pair_pass(tmp_path: Path) -> None:
    pki = make_mutual_ca(tmp_path)
    client = pki.client("collector-client")
    assert _problems({CA: pki.ca_file, KEY: client.key, CHAIN: client.cert}) == []


def _fifo(directory: Path) -> Path:
    os.mkfifo(directory / "ca.fifo")
    return directory / "ca.fifo"


def _encrypted_pair(pki: MutualCA) -> dict[str, str | Path]:
    client = pki.client("e", password="never-quoted-pass")
    return {CHAIN: client.cert, KEY: client.key}


Files = Callable[[MutualCA, Path], dict[str, str | Path]]
CASES: dict[str, tuple[Files, str]] = {
    "absent CA": (lambda _, d: {CA: d / "absent.pem"}, f"{CA}: cannot be read (No such file or directory)"),
    "FIFO CA": (lambda _, d: {CA: _fifo(d)}, f"{CA}: cannot be read (a FIFO, not a regular file)"),
    "key as CA": (lambda p, _: {CA: p.client("k").key}, f"{CA}: holds no PEM certificate"),
    "certificate alone": (
        lambda p, _: {CHAIN: p.client("c").cert},
        f"{CHAIN}: set without {KEY} (a client certificate needs its key)",
    ),
    "key alone": (
        lambda p, _: {KEY: p.client("c").key},
        f"{KEY}: set without {CHAIN} (a client certificate needs its key)",
    ),
    "mismatched pair": (
        lambda p, _: {CHAIN: p.client("a").cert, KEY: p.client("b").key},
        f"{CHAIN}: no usable client certificate and private key (PEM, the key matching the certificate)",
    ),
    "encrypted key": (
        lambda p, _: _encrypted_pair(p),
        f"{CHAIN}: its private key is encrypted, and the OTLP exporters take no passphrase",
    ),
    "the signal's own, then the general": (
        lambda p, d: {"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": p.ca_file, CA: d / "absent.pem"},
        f"{CA}: cannot be read (No such file or directory)",  # metrics and logs read the general one
    ),
    "the signal's own, wrong": (
        lambda p, d: {"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": d / "absent.pem", CA: p.ca_file},
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: cannot be read (No such file or directory)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_unusable_file_is_named_by_its_variable_once(tmp_path: Path, case: str) -> None:
    files, problem = CASES[case]
    problems = _problems(files(make_mutual_ca(tmp_path), tmp_path))
    assert problems == [problem]


def test_run_refuses_a_missing_ca_file_before_serving(tmp_path: Path) -> None:
    """The SDK logged a traceback and the gateway served, exporting against the system's CAs."""
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, **ENDPOINT, CA: str(tmp_path / "absent.pem")}
    done = subprocess.run(
        [str(EXE), "run", str(config), "--port", "0"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{CA}: cannot be read (No such file or directory)" in done.stderr
