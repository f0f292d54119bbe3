"""The last refused handshakes of this process, for the management console ("why is my client getting 401").

Bounded: a ring of ``size`` entries; the oldest goes first. Nothing secret is kept: the detail
goes through :func:`~asgi_ws_gateway.redact.redact_text` (query values, credential headers, URL
passwords, JWT-shaped strings) and is cut to 200 characters.

An upstream's failure keeps its status and reason, not its cause (:func:`shown_detail`): the
admin-token holders who read this may point an API at any host, and the cause told them what
answered there (refused, reset, a name that does not resolve, the first bytes of a Redis or SSH
banner). The gateway's log line and the handshake's span, the operator's, keep it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..redact import redact_text

MAX_DETAIL = 200

_UPSTREAM_FAILURES = {
    "upstream_timeout": "the upstream did not complete the handshake in time",
    "upstream_dns_timeout": "the upstream's host name did not resolve in time",
}
_UPSTREAM_FAILURE = "the upstream could not be reached, or did not answer as a WebSocket server"
_WHY_ELSEWHERE = "; why is in the gateway's log (a WARNING naming the API), not here"


def shown_detail(reason: str, detail: str) -> str:
    """What an admin-token holder reads of a refusal's ``detail``: an upstream's failure (a reason
    ``upstream_*`` other than ``upstream_rejected``, whose status the client got anyway) by its kind
    only, whichever connector wrote it and however; any other as it is (redacted by the caller)."""
    if not reason.startswith("upstream_") or reason == "upstream_rejected":
        return detail
    return _UPSTREAM_FAILURES.get(reason, _UPSTREAM_FAILURE) + _WHY_ELSEWHERE


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """One refused handshake. ``at`` is a Unix time in seconds."""

    at: float
    api: str
    status: int
    reason: str
    policy: str | None
    detail: str


class RefusalLog:
    """The last ``size`` refused handshakes (default 100).

    Args:
        size: how many refusals are kept (the oldest is dropped first).
        clock: the wall clock, in Unix seconds (injected by tests).
    """

    def __init__(self, *, size: int = 100, clock: Callable[[], float] = time.time) -> None:
        if size < 1:
            raise ValueError("size: at least 1")
        self._entries: deque[Refusal] = deque(maxlen=size)
        self._clock = clock

    def add(self, *, api: str, status: int, reason: str, policy: str | None, detail: str) -> None:
        self._entries.append(
            Refusal(
                at=self._clock(),
                api=api,
                status=status,
                reason=_cut(redact_text(reason), 80),
                policy=policy,
                detail=_cut(redact_text(shown_detail(reason, detail)), MAX_DETAIL),
            )
        )

    def recent(self, api: str | None = None) -> list[dict[str, Any]]:
        """The refusals kept, newest first (only ``api``'s when given), as JSON-ready dicts."""
        return [asdict(r) for r in reversed(self._entries) if api is None or r.api == api]


def _cut(text: str, limit: int) -> str:
    # Redacted first, then cut: a cut secret would no longer look like one to the redactor.
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["MAX_DETAIL", "Refusal", "RefusalLog", "shown_detail"]
