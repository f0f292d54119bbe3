"""The process's count of requests its server refused before the gateway's middleware saw them, for
``ws_gateway.server.refusals`` (docs/telemetry.md).

A request head the server's parser refused (400), one too large (414, 431) or too slow (408), and a
WebSocket handshake the server's protocol refused (a header it cannot parse: 400) never reach an API,
so no API's metric counts them: only a log line told of them, and a flood of bad handshakes was
invisible to an operator alerting on metrics. Counted by status (a fixed set: the server's answers).
"""

from __future__ import annotations

from collections import Counter

SERVER_REFUSALS: Counter[int] = Counter()
"""Requests answered by the server itself, by status: every server of the process."""


def server_refused(status: int) -> None:
    SERVER_REFUSALS[status] += 1


__all__ = ["SERVER_REFUSALS", "server_refused"]
