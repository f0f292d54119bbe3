"""Files the management side reads or writes only when they are this user's: the state file, its ``.lock``
and ``.etag-key``, and what ``asgi-ws-gateway export -o FILE`` writes.

The state file is beside the configuration by default (``gateway.yaml`` keeps ``gateway.state.json``), and
whoever can put a file there first decides the gateway's APIs: in a directory every user can write, such as
``/tmp``, another user's ``gateway.state.json`` was applied at start-up (an API's ``ip-filter`` gone, an API
of theirs added), their ``.lock`` was ``flock``-ed (held by them, start-up waited for ever), a symbolic link
there was followed by a root gateway (the lock's ``O_CREAT`` made the file it named), and their
``.etag-key`` keyed the ETags. ``export -o`` wrote through their link (root overwrote the file it named) or
into their file (theirs to edit before the operator deploys it). Each file is opened without following a
link and judged by the descriptor: this user's (or root's, who can write anything anyway), and a regular one
with one link that no other user may write. ``export -o`` follows a link of the operator's own (this user's
or root's, in a directory no other user can write: ``/dev/stdout``); the state files never do (the gateway's
first change would put a file in the link's place). Anything else is refused with an ``OSError`` naming
what it is, never read, locked or written.
"""

from __future__ import annotations

import errno
import os
import stat

from ..loading import MAX_FILE_BYTES, read_open_file
from ..socket_access import SQUATTED, file_kind, group_of_others, user_named, writable_by_others

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO's open never waits for a writer


def read_own_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, a file of this user's (:func:`own_file_problem`), of at most ``limit`` bytes.

    Raises:
        FileNotFoundError: there is nothing at ``path``.
        OSError: ``path`` may not be read (``strerror`` says why), or as ``open`` raises it.
    """
    fd = _open(path, os.O_RDONLY)
    return read_open_file(fd, path, limit)


def open_own_lock(path: str | os.PathLike[str]) -> int:
    """A descriptor of the lock file ``path`` (made, mode 0600, if missing), refused as :func:`read_own_file`."""
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):  # a FIFO of this user's opens (O_NONBLOCK)
        os.close(fd)
        raise OSError(errno.EINVAL, f"{file_kind(found)}, not a regular file", str(path))
    return fd


def write_own_file(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, made (mode 0666 less the umask) or replaced in place when it is this
    user's (:func:`own_file_problem`; a device such as ``/dev/null`` is written as it is).

    Raises:
        OSError: ``path`` may not be written (``strerror`` says why), or as ``open`` or ``write`` raises it.
    """
    fd = _open(path, os.O_WRONLY | os.O_CREAT, 0o666, follow_own_link=True)
    with os.fdopen(fd, "wb") as file:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            file.truncate(0)  # not O_TRUNC: another user's file is judged before anything of it is lost
        file.write(text.encode())


def own_file_problem(found: os.stat_result) -> str | None:
    """Why the file ``found`` (an ``fstat``) may not hold the gateway's state, or None when it may (a file of
    this user's that is not a regular one is for the reader to name: ``a FIFO, not a regular file``)."""
    if found.st_uid not in (os.geteuid(), 0):
        return f"({file_kind(found)}) belongs to {user_named(found.st_uid)}"
    if not stat.S_ISREG(found.st_mode):
        return None
    if found.st_mode & stat.S_IWOTH:
        return f"may be written by every user (mode {stat.S_IMODE(found.st_mode):04o})"
    if found.st_mode & stat.S_IWGRP and (group := group_of_others(found.st_gid)) is not None:
        return f"may be written by its group {group} (mode {stat.S_IMODE(found.st_mode):04o})"
    if found.st_nlink != 1:
        return "has other hard links"
    return None


def _open(path: str | os.PathLike[str], flags: int, mode: int = 0o600, *, follow_own_link: bool = False) -> int:
    try:
        fd = os.open(path, flags | _FLAGS, mode)
    except OSError:
        found = _lstat(path)  # ELOOP for a link; EACCES for theirs under fs.protected_regular and _symlinks
        if found is not None and stat.S_ISLNK(found.st_mode):
            why = _untrusted_link(path, found) if follow_own_link else None
            if not follow_own_link or why is not None:
                raise _refused(path, "is a symbolic link (not followed)" + (f": {why}" if why else "")) from None
            fd = os.open(path, (flags | _FLAGS) & ~os.O_NOFOLLOW, mode)
        elif found is not None and found.st_uid not in (os.geteuid(), 0):
            raise _refused(path, f"({file_kind(found)}) belongs to {user_named(found.st_uid)}") from None
        else:
            raise
    problem = own_file_problem(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise _refused(path, problem)
    return fd


def _untrusted_link(path: str | os.PathLike[str], found: os.stat_result) -> str | None:
    """Why the symbolic link ``path`` (its ``lstat``) may not be followed, or None. A link of this user's or
    root's, in a directory no other user can write, is the operator's choice, as ``/dev/stdout`` is:
    followed, the file it names judged as any. Another user's link chose the file for them; one in a
    directory they can write may be replaced by theirs between this look and the open."""
    if found.st_uid not in (os.geteuid(), 0):
        return f"it belongs to {user_named(found.st_uid)}"
    writable = writable_by_others(os.path.dirname(os.path.abspath(path)))
    return None if writable is None else f"other users can write its directory ({writable})"


def _lstat(path: str | os.PathLike[str]) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _refused(path: str | os.PathLike[str], problem: str) -> OSError:
    return OSError(errno.EPERM, f"{problem}: not used; name a path in {SQUATTED}", str(path))


__all__ = ["open_own_lock", "own_file_problem", "read_own_file", "write_own_file"]
