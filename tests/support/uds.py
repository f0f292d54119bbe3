"""``run --uds``'s refusal of a path, read without a ``run`` process."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_ws_gateway.server.unix_socket import DEFAULT_UDS_MODE, SocketPathUnusable, claim_socket

__all__ = ["claim_refusal"]


def claim_refusal(sock: Path) -> str:
    """The line ``run --uds sock`` writes to stderr as it exits 7, refused the path before it serves: the problem
    ``claim_socket`` (which ``run`` calls before its server starts) raises in this process, written as ``run``
    writes it. A ``run`` process's start and the server's imports were ~1.7 CPU-s of each such refusal; the tests
    keep a case or two through ``run`` for its wiring (exit 7, the problem said once, no traceback). Fails the
    test when the path is claimed."""
    with pytest.raises(SocketPathUnusable) as refused:
        listener, _ = claim_socket(str(sock), DEFAULT_UDS_MODE, 2048)
        listener.close()
    return f"error: --uds {sock}: {refused.value.problem}\n"
