"""Keepalive settings that are valid but cost more than they protect: start-up warnings.

``ping_interval`` admits 0.1 s and ``ping_timeout`` 0.01 s (the floors keep them from spinning, and
tests run with them), but neither is a keepalive an operator means on a real deployment:

* at ``ping_interval: 0.1`` every idle connection is pinged ten times a second on each leg: 300 idle
  relayed connections kept a third of a core busy in the gateway (and 13% of their upstream's), where
  at the default 20 s they cost nothing measurable;
* at ``ping_timeout`` below a second, a pong that a busy peer, a busy gateway or the network delays
  that long is a dead connection: on a loaded host, 0.2 s dropped 36 of 300 healthy loopback
  connections with 1011, and 0.01 s dropped them all within seconds.

Named ``API <name>: ...`` as the other per-API warnings of :func:`.checks.config_warnings`, so that a
change through the management API answers with them too.
"""

from __future__ import annotations

from collections.abc import Iterator

from .apis import ApiConfig

LEAST_KEEPALIVE = 1.0
"""Seconds below which a ``ping_interval`` or ``ping_timeout`` is warned about."""


def keepalive_warnings(api: ApiConfig) -> Iterator[str]:
    """Why ``api``'s keepalive may cost CPU or drop healthy connections, if it may."""
    interval, timeout = api.ping_interval, api.ping_timeout
    if interval is None:  # no pings: ping_timeout bounds nothing
        return
    if interval < LEAST_KEEPALIVE:
        yield (
            f"API {api.name}: ping_interval: {interval:g} s pings each idle connection {1 / interval:.3g} times a "
            "second on each leg (CPU in the gateway and the upstream for every open connection: at 0.1 s, 300 idle "
            f"relayed connections held a third of a core); a keepalive needs seconds ({LEAST_KEEPALIVE:g} at least, "
            "default 20)"
        )
    if timeout is not None and timeout < LEAST_KEEPALIVE:
        yield (
            f"API {api.name}: ping_timeout: {timeout:g} s drops a connection (1011) whose pong is later than that, "
            "as a busy peer's, a busy gateway's or a slow network's is: on a loaded host healthy connections are "
            f"dropped; allow {LEAST_KEEPALIVE:g} s at least (default 20)"
        )


__all__ = ["LEAST_KEEPALIVE", "keepalive_warnings"]
