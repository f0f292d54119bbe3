"""``python -m bench.opcodes`` counts a real gateway's handshakes by function (no count is asserted but
that the gateway's own handler ran in the counted window)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_opcodes_are_counted_per_function_in_a_real_gateway() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.opcodes", "--handshakes", "10", "--warmup", "5", "--top", "400"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    main_thread = re.search(r"^\s+(\d+)\s+thread MainThread$", result.stdout, re.MULTILINE)
    assert main_thread is not None and int(main_thread[1]) > 1000, result.stdout
    handler = r"^\s+\d+\s+asgi_ws_gateway/middleware\.py:WebSocketGateway\._handle$"
    assert re.search(handler, result.stdout, re.MULTILINE), result.stdout
