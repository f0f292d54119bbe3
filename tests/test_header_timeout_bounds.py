"""``ASGI_WS_GATEWAY_HEADER_TIMEOUT`` is bounded as the configuration's timeouts: 0.01 s to 300 s.

Any positive number was taken: at ``1e-300`` a request head sent in two packets 0.3 s apart was dropped
with no answer (the deadline had passed before the second), and at ``1e300`` there was no deadline at
all, the slowloris protection off. Now either is refused at start-up, naming the variable and the bounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_ws_gateway.server.head_deadline import _header_timeout_from_env


@pytest.mark.parametrize("value", ["1e-300", "0.009", "300.5", "1e300"])
def test_a_header_timeout_out_of_bounds_is_refused_naming_the_bounds(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", value)
    with pytest.raises(ValueError) as info:
        _header_timeout_from_env()
    assert str(info.value) == f"ASGI_WS_GATEWAY_HEADER_TIMEOUT: expected seconds from 0.01 to 300, got {value!r}"


@pytest.mark.parametrize("value", ["0.01", "300"])
def test_the_bounds_themselves_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ASGI_WS_GATEWAY_HEADER_TIMEOUT", value)
    assert _header_timeout_from_env() == float(value)


def test_run_refuses_a_header_timeout_too_short_to_read_a_head_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("apis: []\n")
    env = {**os.environ, "ASGI_WS_GATEWAY_HEADER_TIMEOUT": "1e-300"}
    done = subprocess.run([sys.executable, "-m", "asgi_ws_gateway", "run", str(config), "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "ASGI_WS_GATEWAY_HEADER_TIMEOUT: expected seconds from 0.01 to 300, got '1e-300'" in done.stderr
