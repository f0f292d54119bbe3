"""Stopping a task that calls Redis: cancelled until it has ended, however many cancellations are lost.

On Python 3.11, ``asyncio.wait_for`` returns the result of what it waits for when that completed as the
cancellation came, and drops the cancellation (fixed in 3.12). redis-py sends each command through it when
the client has a socket timeout: a task cancelled while a command's send completes runs on as if it had
not been, and one that loops over Redis calls (a renewal, a subscription) runs for ever. Awaiting it
after one ``cancel()`` waited for ever: the management bus's ``aclose``, so a worker's shutdown never
ended (1 of 30 runs of the bus's flapping test under load; at once when the cancellation lands there).
"""

from __future__ import annotations

import asyncio
from typing import Any

CANCEL_AGAIN_AFTER = 1.0
"""Seconds a cancelled task is given to end before it is cancelled again (its cancellation may be lost);
enough for its ``finally`` to close what it holds, as a second cancellation would cut that short."""


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended, cancelling it again each :data:`CANCEL_AGAIN_AFTER`
    seconds while it runs on.

    Raises what the task raised, other than its cancellation. The caller's own cancellation propagates
    (awaiting the task under ``contextlib.suppress(CancelledError)`` swallowed that one too); the task is
    then cancelled and left to end.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=CANCEL_AGAIN_AFTER)
    if not task.cancelled():
        task.result()


__all__ = ["CANCEL_AGAIN_AFTER", "stop_task"]
