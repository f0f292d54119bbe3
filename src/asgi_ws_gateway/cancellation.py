"""Whether a ``CancelledError`` is the running task's cancellation or code's own.

User code (a policy, a message policy, an in-process app) may raise ``CancelledError`` without its
task being cancelled: it awaited a future or a task that someone else cancelled. Propagated as it
is, it reads as the connection's own end (the client gone, a deadline, shutdown), and the code that
handles those stops without a word: the handshake unanswered, a relay's other direction left
waiting. Such an error is the code's failure, handled as any other exception.
"""

from __future__ import annotations

import asyncio


def cancel_requested() -> bool:
    """Whether the running task was asked to stop (``Task.cancel``: its deadline, its client leaving,
    shutdown), as opposed to running code that raised a ``CancelledError`` of its own making."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


POLICY_DEADLINE = "handshake policies past policy_timeout"
"""The message of the cancellation a handshake's ``policy_timeout`` makes: what it cut short, a store call
waiting for its answer, can tell it from the client leaving or a shutdown."""


def cut_by_policy_deadline(exc: asyncio.CancelledError) -> bool:
    """Whether ``exc`` is the cancellation of a handshake's ``policy_timeout`` (:data:`POLICY_DEADLINE`)."""
    return bool(exc.args) and exc.args[0] == POLICY_DEADLINE


class OwnCancellation(RuntimeError):
    """``what`` raised ``CancelledError`` while its task was not being cancelled: its failure."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} raised CancelledError, but its task was not cancelled")
        self.what = what


__all__ = ["POLICY_DEADLINE", "OwnCancellation", "cancel_requested", "cut_by_policy_deadline"]
