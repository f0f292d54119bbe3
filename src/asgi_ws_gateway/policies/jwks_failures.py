"""The process's count of failed JWKS fetches, for ``ws_gateway.jwks.failures`` (docs/telemetry.md).

An identity provider's JWKS endpoint that failed was only logged, a WARNING for each fetch: one a second
per worker while handshakes came (3,600 lines an hour), and no metric at all while cached keys kept
serving (the refresh failing, the keys growing stale, a rotated key never seen). Each failed fetch is
counted here by a reason from a fixed set; the log says it once as an outage starts, then once per interval.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

JwksError = Literal["timeout", "fetch", "invalid"]
"""Why a fetch failed (``error.type``):

* ``timeout``: no whole answer within ``jwks_timeout``;
* ``fetch``: no answer, or not a 200 with at most 1 MiB (refused, reset, a 5xx, a redirect, too large);
* ``invalid``: an answer that is not a key set the gateway can use (not JSON, no usable key).
"""

JWKS_FAILURES: Counter[JwksError] = Counter()
"""Failed fetches by ``error.type``: every key set of the process."""


def jwks_failed(error: JwksError) -> None:
    JWKS_FAILURES[error] += 1


__all__ = ["JWKS_FAILURES", "JwksError", "jwks_failed"]
