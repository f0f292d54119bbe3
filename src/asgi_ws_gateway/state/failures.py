"""The process's count of failed store calls, for ``ws_gateway.store.failures`` (docs/telemetry.md).

A store's failure was only logged (one line as an outage starts, then one per interval), and a lease
whose release failed at its connection's end was counted nowhere: an operator alerting on metrics never
saw limits left unchecked or leases left counted until ``lease_ttl``. Each failed call is counted here
by store, operation and a reason from a fixed set, so the series are bounded whatever fails. Counted
only where a call fails: a call that succeeds pays nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

StoreError = Literal["unavailable", "timeout", "connection", "readonly", "response", "refused", "full", "_OTHER"]
"""Why a store call failed (``error.type``):

* ``unavailable``: not tried: the store failed moments ago and answers so at once for its ``retry_interval``;
* ``timeout``: no answer within the store's ``timeout``, or before a handshake's ``policy_timeout`` cut it short;
* ``connection``: the connection was refused, reset or closed;
* ``readonly``: the server is a replica now (failed over behind the same address);
* ``response``: the server answered with an error of its own (out of memory, loading, busy, no permission);
* ``refused``: the server refused this call for what its key holds (not its own data);
* ``full``: the in-memory store holds as many live keys of the limit as it may (``store.max_keys``);
* ``_OTHER``: anything else (a reply that is not the script's, a cluster client's error).
"""

STORE_FAILURES: Counter[tuple[str, str, StoreError]] = Counter()
"""Failed calls by (``db.system``, ``db.operation``, ``error.type``): every store of the process."""


def store_failed(system: str, operation: str, error: StoreError) -> None:
    """Count one failed call of ``operation`` (``hit``, ``acquire``, ...) on a ``system`` store."""
    STORE_FAILURES[system, operation, error] += 1


__all__ = ["STORE_FAILURES", "StoreError", "store_failed"]
