"""The lock ``run --uds PATH`` holds while it checks, replaces and binds PATH, and while it removes it.

Without it two gateways started at once on a stale socket both took it for stale: one removed the
other's fresh socket and bound its own, and the other served on, unreachable. The lock is ``PATH.lock``,
an ``flock`` on a file of this user's: a symbolic link, a file of another user's or anything but a
regular file there (planted in a directory others can write, such as ``/tmp``) is refused, never
opened through or locked (another user's is named: it is theirs to keep, so their ``flock`` on it is never
waited for). The file is removed by whoever holds the lock, as it releases it; a gateway
that was waiting for it sees that the file it locked is no longer the one at the path and tries again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator

from ..socket_access import SQUATTED, file_kind, user_named

LOCK_SUFFIX = ".lock"


class LockRefused(Exception):
    """The lock file cannot be used; ``problem`` says why (``error: --uds PATH: <problem>``)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@contextlib.contextmanager
def socket_path_lock(path: str) -> Iterator[None]:
    """Hold the lock of the socket path ``path`` (blocking until another ``run --uds`` releases it).

    Raises:
        LockRefused: the lock file is a link, another user's, not a regular file, or cannot be made.
    """
    lock_path = path + LOCK_SUFFIX
    fd = _locked(lock_path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            held, now = os.fstat(fd), os.lstat(lock_path)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):  # a file put in its place is not ours
                os.unlink(lock_path)  # a waiter sees the change and locks a new one
        os.close(fd)


def _locked(lock_path: str) -> int:
    while True:
        fd = _open(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.lstat(lock_path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # its holder removed it as it released it: lock the one at the path now


def _open(lock_path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO never waits
    try:
        fd = os.open(lock_path, flags, 0o600)
    except OSError as exc:
        _refuse_if_another_users(lock_path, os.lstat(lock_path) if os.path.lexists(lock_path) else None)
        if exc.errno == errno.ELOOP:
            raise LockRefused(f"its lock file {lock_path} is a symbolic link (not followed): remove it") from None
        raise LockRefused(f"its lock file {lock_path} cannot be opened ({exc.strerror})") from None
    found = os.fstat(fd)
    try:
        _refuse_if_another_users(lock_path, found)
    except LockRefused:
        os.close(fd)
        raise
    problem = None
    if not stat.S_ISREG(found.st_mode):
        problem = "is not a regular file"
    elif found.st_nlink != 1:
        problem = "has other hard links"
    if problem is not None:
        os.close(fd)
        raise LockRefused(f"its lock file {lock_path} {problem} (not used): remove it, or name a path in a "
                          "directory only this user can write")  # fmt: skip
    return fd


def _refuse_if_another_users(lock_path: str, found: os.stat_result | None) -> None:
    """Another user's file at the lock's path (taken first in ``/tmp``) is never locked: they could hold its
    ``flock`` for ever; nor removed: in a sticky directory the gateway's user cannot, and root must not."""
    if found is not None and found.st_uid != os.geteuid():
        raise LockRefused(f"its lock file {lock_path} ({file_kind(found)}) belongs to {user_named(found.st_uid)} "
                          f"(not used): name a path in {SQUATTED}")  # fmt: skip


__all__ = ["LOCK_SUFFIX", "LockRefused", "socket_path_lock"]
